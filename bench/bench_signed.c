/*
 * hm_bench_signed: what a build signature costs a reload (signed builds, issue 23).
 *
 * Two registries side by side, one without trusted keys and one trusting a key made here by
 * minisign (`minisign -G -W`); each reloads the benchmark module, alternating between its two
 * builds installed at the module's path (the signed one with the build's .minisig beside it,
 * made once by `minisign -Sm`), sample by sample in turn, so both see the same machine:
 *   reload.signed_us_p50/_p99  hm_module_reload with the signature checked (read the
 *                              .minisig, BLAKE2b-512 of the build, two Ed25519 checks)
 *   reload.signed_vs_api       its p50 over the unsigned reload's in the same run
 * Then the same with the builds grown to HM_BENCH_SIGNED_MB MiB (16 by default; random bytes
 * after the ELF file, which the loader copies but never maps), for what the check costs per
 * MiB of build:
 *   signed.verify_us_per_mb    (signed p50 - unsigned p50) / MiB
 * Without minisign (or in a hotmod built without libsodium) it says so and prints nothing.
 * --quick: a tenth of the samples.
 * Outside the timed region: the install and waiting for the previous version's unload. The
 * signed registry allows replays (HM_SIGNED_ALLOW_REPLAY), since its two builds take turns;
 * that check is a comparison under a lock.
 */
#include "hotmod.h"

#include "benchutil.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[4096];

/* One build: the module's bytes and its signature, made at dir/b<i>/benchmod.so. */
typedef struct build {
  unsigned char *so, *sig;
  size_t so_len, sig_len;
} build;

static void make_build(build *b, int i, const char *src, size_t pad) {
  char d[4200], so[4300], cmd[9000];
  unsigned char *m;
  size_t len, k;
  snprintf(d, sizeof d, "%s/b%d", dir, i);
  snprintf(so, sizeof so, "%s/benchmod.so", d);
  mkdir(d, 0700);
  m = hmb_slurp(src, &len);
  b->so = malloc(len + pad);
  if (b->so == NULL)
    hmb_die("out of memory");
  memcpy(b->so, m, len);
  for (k = 0; k < pad; k++)
    b->so[len + k] = (unsigned char)(k * 2654435761u >> 13);
  b->so_len = len + pad;
  free(m);
  hmb_put(b->so, b->so_len, so);
  snprintf(cmd, sizeof cmd, "minisign -S -s '%s/k.sec' -m '%s' >/dev/null 2>&1", dir, so);
  if (system(cmd) != 0)
    hmb_die("minisign -S failed");
  snprintf(so, sizeof so, "%s/benchmod.so.minisig", d);
  b->sig = hmb_slurp(so, &b->sig_len);
}

typedef struct side {
  hm_registry *reg;
  hm_module *mod;
  char path[4300], sig[4400];
} side;

static void side_open(side *s, const char *name, const char *pub, const build *first) {
  hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
  const char *keys[] = {pub, NULL};
  char d[4200];
  int rc;
  o.flags = HM_FLAG_QUIET;
  o.trusted_keys = pub != NULL ? keys : NULL;
  /* The two builds take turns, and the second may be signed a second later than the first:
   * going back to the first would be a replay. */
  o.signed_flags = HM_SIGNED_ALLOW_REPLAY;
  snprintf(d, sizeof d, "%s/%s", dir, name);
  mkdir(d, 0700);
  snprintf(s->path, sizeof s->path, "%s/benchmod.so", d);
  snprintf(s->sig, sizeof s->sig, "%s.minisig", s->path);
  if ((rc = hm_registry_new(&s->reg, &o)) != 0)
    hmb_die("hm_registry_new: %s", hm_errmsg());
  hmb_put(first->so, first->so_len, s->path);
  hmb_put(first->sig, first->sig_len, s->sig);
  if ((rc = hm_module_load(s->reg, "m", s->path, &s->mod)) != 0)
    hmb_die("hm_module_load: %s", hm_errmsg());
}

/* Install `b` and time one reload, after the previous version's unload. */
static double timed(side *s, const build *b) {
  hm_stats st;
  long long t0, t1, until = hmb_now_ns() + 1000000000ll;
  hmb_put(b->so, b->so_len, s->path);
  hmb_put(b->sig, b->sig_len, s->sig);
  while (hm_registry_stats(s->reg, &st) == 0 && st.retired != 0 && hmb_now_ns() < until)
    hmb_sleep_ms(1);
  t0 = hmb_now_ns();
  if (hm_module_reload(s->mod) != 0)
    hmb_die("hm_module_reload: %s", hm_errmsg());
  t1 = hmb_now_ns();
  return (double)(t1 - t0) / 1e3;
}

/* Reload both sides `n` times in turn; their p50s (and the signed side's p99). */
static void compare(const char *src[2], size_t pad, int warm, int n, double *api50,
                    double *signed50, double *signed99) {
  build b[2];
  side plain, sig;
  double *u = calloc((size_t)n, sizeof *u), *v = calloc((size_t)n, sizeof *v);
  char pub[4200];
  int i;
  for (i = 0; i < 2; i++)
    make_build(&b[i], i + (pad != 0) * 2, src[i], pad);
  snprintf(pub, sizeof pub, "%s/k.pub", dir);
  side_open(&plain, pad ? "plain-big" : "plain", NULL, &b[0]);
  side_open(&sig, pad ? "signed-big" : "signed", pub, &b[0]);
  for (i = 0; i < warm + n; i++) {
    const build *next = &b[(i + 1) % 2];
    double a, c;
    if (i % 2 == 0) {
      a = timed(&plain, next);
      c = timed(&sig, next);
    } else {
      c = timed(&sig, next);
      a = timed(&plain, next);
    }
    if (i >= warm) {
      u[i - warm] = a;
      v[i - warm] = c;
    }
  }
  *api50 = hmb_percentile(u, (size_t)n, 50);
  *signed50 = hmb_percentile(v, (size_t)n, 50);
  *signed99 = hmb_percentile(v, (size_t)n, 99);
  hm_registry_free(plain.reg);
  hm_registry_free(sig.reg);
  for (i = 0; i < 2; i++) {
    free(b[i].so);
    free(b[i].sig);
  }
  free(u);
  free(v);
}

int main(int argc, char **argv) {
  const char *tmp = getenv("TMPDIR"), *env;
  const char *src[2] = {HM_BENCH_MODDIR "/benchmod_v1.so", HM_BENCH_MODDIR "/benchmod_v2.so"};
  double api, sig50, sig99, bapi, bsig, b99;
  long mb = (env = getenv("HM_BENCH_SIGNED_MB")) != NULL ? atol(env) : 16;
  int quick = argc > 1 && strcmp(argv[1], "--quick") == 0, n = quick ? 100 : 1000;
  char cmd[9000];
  if (system("minisign -v >/dev/null 2>&1") != 0) {
    fprintf(stderr, "# signed: minisign not found (apt-get install minisign): skipped\n");
    return 0;
  }
  snprintf(dir, sizeof dir, "%s/hm_bench_signed-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL)
    hmb_die("mkdtemp: %s", strerror(errno));
  snprintf(cmd, sizeof cmd, "minisign -G -W -p '%s/k.pub' -s '%s/k.sec' >/dev/null 2>&1", dir,
           dir);
  if (system(cmd) != 0)
    hmb_die("minisign -G failed");
  {
    hm_registry_options o = HM_REGISTRY_OPTIONS_INIT;
    const char *keys[] = {"RWQ5lqUnYspuHXSZpE/PYPxjmIcZmq4cPv+TLNasVZ2y4ll5X8MA5uuo", NULL};
    hm_registry *reg;
    o.trusted_keys = keys;
    if (hm_registry_new(&reg, &o) != 0) {
      fprintf(stderr, "# signed: %s: skipped\n", hm_errmsg());
      goto out;
    }
    hm_registry_free(reg);
  }
  compare(src, 0, n / 10, n, &api, &sig50, &sig99);
  printf("reload.signed_us_p50 %.1f\n", sig50);
  printf("reload.signed_us_p99 %.1f\n", sig99);
  printf("reload.signed_vs_api %.2f\n", sig50 / api);
  compare(src, (size_t)mb << 20, 3, quick ? 10 : 40, &bapi, &bsig, &b99);
  printf("signed.verify_us_per_mb %.1f\n", (bsig - bapi) / (double)mb);
  fprintf(stderr, "# signed: %d reloads of each side, unsigned p50 %.1f us beside; builds grown "
          "to +%ld MiB: unsigned p50 %.1f us, signed %.1f us\n", n, api, mb, bapi, bsig);
out:
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : 1;
}
