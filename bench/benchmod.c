/* The benchmarks' module, built twice (-DVERSION=1 and -DVERSION=2): one tiny function to
 * call, so call benchmarks measure the calling mechanism and not the work, and one that does
 * about 50 ns of work, to see what the calling mechanism costs beside a callee that does
 * something. Both versions compute the same add1() and work50(); they differ in version() so
 * each reload loads a different file. */
#include "hotmod/module.h"

HM_MODULE_EXPORT int add1(int x) { return x + 1; }

/* About 50 ns on the benchmarks' machine (a 2-vCPU AMD EPYC guest): a chain of rounds each of
 * which needs the previous round's result (shift, xor, multiply), so the compiler can neither
 * shorten it nor run rounds side by side, and the result depends on every round. */
#define WORK50_ROUNDS 52
HM_MODULE_EXPORT unsigned work50(unsigned x) {
  for (int i = 0; i < WORK50_ROUNDS; i++) {
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
  }
  return x;
}

HM_MODULE_EXPORT int version(void) { return VERSION; }

#ifdef RELAY
/* Built as relay_v1: a module whose load hook takes live handles on module b's add1() and
 * work50() through ctx->api, so they are this version's own (cells): what a module-owned
 * handle costs. The host gets the handles (relay_add1, relay_work50) to call them inline,
 * and the loops here call them as module code does, through ctx->api (out of line). */
static const hm_module_api *api;
static hm_live *h_add1, *h_work50;

HM_MODULE_EXPORT hm_live *relay_add1(void) { return h_add1; }
HM_MODULE_EXPORT hm_live *relay_work50(void) { return h_work50; }

HM_MODULE_EXPORT unsigned relay_loop(long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++) {
    acc += (unsigned)((int (*)(int))api->live_enter(h_add1))((int)(i & 0xffff));
    api->live_leave(h_add1);
  }
  return acc;
}

HM_MODULE_EXPORT unsigned relay_loop50(long n) {
  unsigned acc = 0;
  for (long i = 0; i < n; i++) {
    acc += ((unsigned (*)(unsigned))api->live_enter(h_work50))((unsigned)i);
    api->live_leave(h_work50);
  }
  return acc;
}

static int load(const hm_load_ctx *ctx) {
  api = ctx->api;
  return api->live_get(ctx->reg, "b:add1", &h_add1) == 0 &&
                 api->live_get(ctx->reg, "b:work50", &h_work50) == 0
             ? HM_LOAD_CONVERTED
             : -1;
}

HM_MODULE_DESCRIBE(0, NULL, load, NULL);
#endif
