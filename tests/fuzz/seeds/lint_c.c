/* A C module with every finding the lint reports for C code: linked with -z nodelete, a
 * RUNPATH with $ORIGIN and a DT_NEEDED on a library of its own (CMake adds those), and here
 * initial-exec TLS it defines and a pthread key. A seed of the fuzz corpus (real linker
 * output with lint facts) and the input of the fuzz_seeds test. */
#include <pthread.h>

#include "hotmod/module.h"

int hm_fuzz_helper(int x);

static __thread int per_thread[64] __attribute__((tls_model("initial-exec")));
static pthread_key_t key;

static int on_load(const hm_load_ctx *ctx) {
  (void)ctx;
  return pthread_key_create(&key, NULL);
}

HM_MODULE_DESCRIBE(0, NULL, on_load, NULL);

int lint_c(int x) {
  per_thread[x & 63] += x;
  return hm_fuzz_helper(per_thread[x & 63]);
}
