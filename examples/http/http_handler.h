/*
 * The contract between the HTTP server (server.c) and its request handler (handler.c), a
 * hotmod module: one exported function, http_handle, whose C type both sides spell as
 * HTTP_HANDLE_SIGNATURE (the server takes a typed live handle, so a build with another
 * signature is refused and the running one serves on).
 *
 * Everything the handler returns is copied into the response: it must not hand the server
 * pointers into its own memory (a string literal, a static buffer), because the version that
 * owns that memory may be unloaded as soon as the call returns.
 */
#ifndef HTTP_HANDLER_H
#define HTTP_HANDLER_H

#include <stddef.h>

/* A parsed request, borrowed for the duration of the call. method and target are
 * NUL-terminated; body is not (it may be empty). */
struct http_request {
  const char *method;
  const char *target; /* as sent: "/path?query" */
  const char *body;
  size_t body_len;
  unsigned long long seq; /* the server's request counter, from 1 */
};

/* The response, in the server's memory. The server sets status 200 and content_type
 * "text/plain; charset=utf-8" before the call; the handler writes at most `cap` bytes of
 * body into `body` and sets `len`. */
struct http_response {
  int status;
  char content_type[64];
  char *body;
  size_t cap;
  size_t len;
};

/* 0 on success; anything else makes the server answer 500. */
typedef int (*http_handle_fn)(const struct http_request *req, struct http_response *res);
#define HTTP_HANDLE_SIGNATURE "int(const struct http_request *, struct http_response *)"

#endif /* HTTP_HANDLER_H */
