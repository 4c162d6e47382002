/*
 * The HTTP example's request handler: a plain hotmod module (fresh globals in each version).
 * Edit it while the server runs and rebuild it (cmake --build build --target http_handler):
 * the server's next request runs the new build.
 *
 * Every body names the build that wrote it with one marker, "v<HANDLER_VERSION>"; the
 * example's test builds it with a new HANDLER_VERSION for each reload and checks that each
 * response carries exactly one marker.
 */
#include "hotmod/module.h"
#include "http_handler.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef HANDLER_VERSION
#define HANDLER_VERSION 1
#endif

HM_MODULE_SIGNATURE(http_handle, HTTP_HANDLE_SIGNATURE);

/* Calls served by this version: a plain global, so each new version counts from zero. */
static unsigned long long served;

static void put(struct http_response *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(struct http_response *res, const char *fmt, ...) {
  va_list ap;
  int n;
  if (res->len >= res->cap)
    return;
  va_start(ap, fmt);
  n = vsnprintf(res->body + res->len, res->cap - res->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    res->len += (size_t)n < res->cap - res->len ? (size_t)n : res->cap - res->len - 1;
}

HM_MODULE_EXPORT int http_handle(const struct http_request *req, struct http_response *res) {
  served++;
  if (strcmp(req->target, "/") == 0 || strncmp(req->target, "/?", 2) == 0) {
    put(res, "Hello from handler v%d: request %llu, %llu served by this build\n", HANDLER_VERSION,
        req->seq, served);
    return 0;
  }
  res->status = 404;
  put(res, "Not found (handler v%d). Try GET /\n", HANDLER_VERSION);
  return 0;
}
