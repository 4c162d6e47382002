/*
 * Python's importlib.reload and hotmod, side by side: three behaviours of a reloaded Python
 * module, each followed by what the same steps do in C.
 *
 *   (a) a name looked up at each call (m.my_function) runs the new code after a reload;
 *       in C, a live handle;
 *   (b) a reference taken before the reload keeps calling the old code until it is taken
 *       again; in C, a stable snapshot;
 *   (c) module-level state starts again from its initial value when a plain module is
 *       reloaded; in C, a plain module's globals do the same, and a module with a descriptor
 *       keeps its state instead, converted to the new version's layout.
 *
 * Each "build" is installed the way a build tool writes its output (a temporary file renamed
 * over the module's path) and then reloaded with hm_module_reload. Every value printed on a
 * "C:" line comes from a call into the module; the program exits with 1 if any of them is
 * not what the Python behaviour predicts.
 */
#include "hotmod.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

typedef double (*math_fn)(double);
typedef void (*assign_fn)(int);
typedef int (*int_fn)(void);

static char dir[] = "/tmp/hotmod-python-reload-XXXXXX";
static int differences;

static void fail(const char *what, int rc) {
  fprintf(stderr, "python_reload: %s: %s (%s)\n", what, hm_strerror(rc), hm_errmsg());
  exit(2);
}

/* A build writes `build` as the module `name`: copy it to a temporary file beside the
 * module's path and rename it into place, so a loaded copy is never written over. */
static void install(const char *build, const char *name, char *path, size_t size) {
  char tmp[512];
  struct stat st;
  int in, out;
  off_t done = 0;
  snprintf(path, size, "%s/%s.so", dir, name);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  in = open(build, O_RDONLY | O_CLOEXEC);
  out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (in < 0 || out < 0 || fstat(in, &st) != 0)
    fail(build, HM_EIO);
  while (done < st.st_size)
    if (sendfile(out, in, &done, (size_t)(st.st_size - done)) <= 0)
      fail(build, HM_EIO);
  close(in);
  if (close(out) != 0 || rename(tmp, path) != 0)
    fail(path, HM_EIO);
}

static hm_module *load(hm_registry *reg, const char *name, const char *build) {
  char path[512];
  hm_module *mod;
  int rc;
  install(build, name, path, sizeof path);
  if ((rc = hm_module_load(reg, name, path, &mod)) != 0)
    fail(name, rc);
  return mod;
}

static void reload(hm_module *mod, const char *build) {
  char path[512];
  int rc;
  install(build, hm_module_name(mod), path, sizeof path);
  if ((rc = hm_module_reload(mod)) != 0)
    fail(hm_module_name(mod), rc);
}

/* The live handle of module:symbol. */
static hm_live *live(hm_registry *reg, const char *module, const char *symbol) {
  char qualified[128];
  hm_live *l;
  int rc;
  snprintf(qualified, sizeof qualified, "%s:%s", module, symbol);
  if ((rc = hm_live_get(reg, qualified, &l)) != 0)
    fail(qualified, rc);
  return l;
}

/* A new snapshot of my_module:my_function: it pins the version that is current now. */
static hm_snapshot *snapshot(hm_registry *reg) {
  hm_snapshot *s;
  int rc = hm_snapshot_acquire(reg, "my_module:my_function", &s);
  if (rc != 0)
    fail("snapshot", rc);
  return s;
}

static int same(double a, double b) { return fabs(a - b) < 1e-9; }

static void verdict(int ok) {
  printf("  => %s\n\n", ok ? "as in Python" : "DIFFERS from Python");
  differences += !ok;
}

/* (a) and (b): my_function squares in build 1 and takes the square root in build 2. */
static void functions(hm_registry *reg) {
  hm_module *mod = load(reg, "my_module", MATHMOD_V1);
  hm_live *fn = live(reg, "my_module", "my_function");
  hm_snapshot *saved = snapshot(reg);
  double live1 = HM_LIVE_CALL(fn, math_fn, 2.0), live2, live9, old2, new2;
  unsigned old_version, new_version;

  reload(mod, MATHMOD_V2);
  live2 = HM_LIVE_CALL(fn, math_fn, 2.0);
  live9 = HM_LIVE_CALL(fn, math_fn, 9.0);
  printf("(a) a function looked up at each call follows the reload\n");
  printf("  python: m.my_function(2) is 4; importlib.reload(m); m.my_function(2) is 1.41421 "
         "and m.my_function(9) is 3\n");
  printf("  C:      live handle my_function(2) = %g; new build installed, hm_module_reload "
         "-> version %u; live my_function(2) = %g, my_function(9) = %g\n",
         live1, hm_module_version(mod), live2, live9);
  verdict(same(live1, 4) && same(live2, sqrt(2)) && same(live9, 3) &&
          hm_module_version(mod) == 2);

  old2 = ((math_fn)hm_snapshot_fn(saved))(2.0);
  old_version = hm_snapshot_version(saved);
  hm_snapshot_release(saved);
  saved = snapshot(reg);
  new2 = ((math_fn)hm_snapshot_fn(saved))(2.0);
  new_version = hm_snapshot_version(saved);
  hm_snapshot_release(saved);
  printf("(b) a reference kept from before the reload calls the old code until re-taken\n");
  printf("  python: saved = m.my_function; importlib.reload(m); saved(2) is still 4; "
         "saved = m.my_function again: saved(2) is 1.41421\n");
  printf("  C:      snapshot taken before the reload: my_function(2) = %g (pins version %u); "
         "released and re-taken: %g (version %u)\n",
         old2, old_version, new2, new_version);
  verdict(same(old2, 4) && old_version == 1 && same(new2, sqrt(2)) && new_version == 2);
}

/* (c): my_function(x) = x * variable, the variable set to 3 in build 1, then a reload. */
static void state(hm_registry *reg, const char *name, const char *v1, const char *v2,
                  int keep) {
  hm_module *mod = load(reg, name, v1);
  hm_live *fn = live(reg, name, "my_function"), *assign = live(reg, name, "assign"),
          *assigns = live(reg, name, "assign_count"), *layout = live(reg, name, "layout"),
          *from = live(reg, name, "converted_from");
  double before, after;
  int count, lay, conv;

  HM_LIVE_CALL(assign, assign_fn, 3);
  before = HM_LIVE_CALL(fn, math_fn, 2.0);
  reload(mod, v2);
  after = HM_LIVE_CALL(fn, math_fn, 2.0);
  count = HM_LIVE_CALL(assigns, int_fn);
  lay = HM_LIVE_CALL(layout, int_fn);
  conv = HM_LIVE_CALL(from, int_fn);
  if (!keep) {
    printf("(c) module state starts again from its initial value on a reload\n");
    printf("  python: m.variable = 3; m.my_function(2) is 6; importlib.reload(m) runs "
           "\"variable = 10\" again: m.my_function(2) is 20\n");
    printf("  C:      plain module: assign(3); my_function(2) = %g; reload: my_function(2) = "
           "%g, assignments seen %d (version %u starts with fresh globals)\n",
           before, after, count, hm_module_version(mod));
    verdict(same(before, 6) && same(after, 20) && count == 0 && lay == 2 && conv == 0);
  } else {
    printf("(c') ... unless the module keeps it: state carried over and converted\n");
    printf("  python: with \"if 'variable' not in globals(): variable = 10\" the value "
           "outlives the reload (my_function(2) stays 6); changing its form is the "
           "module's own code\n");
    printf("  C:      descriptor: assign(3); my_function(2) = %g; reload: my_function(2) = "
           "%g, assignments seen %d, state layout %d converted from layout %d\n",
           before, after, count, lay, conv);
    verdict(same(before, 6) && same(after, 6) && count == 1 && lay == 2 && conv == 1);
  }
}

int main(void) {
  hm_registry_options opts = HM_REGISTRY_OPTIONS_INIT;
  hm_registry *reg;
  int rc;

  if (mkdtemp(dir) == NULL)
    return perror("mkdtemp"), 2;
  opts.flags = HM_FLAG_QUIET;
  if ((rc = hm_registry_new(&reg, &opts)) != 0)
    fail("registry", rc);
  printf("Python's importlib.reload and hotmod %s, side by side\n\n", hm_version_string());
  functions(reg);
  state(reg, "plain", PYVAR_V1, PYVAR_V2, 0);
  state(reg, "kept", PYVAR_KEEP_V1, PYVAR_KEEP_V2, 1);
  hm_registry_free(reg);

  {
    static const char *names[] = {"my_module", "plain", "kept"};
    char path[512];
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
      snprintf(path, sizeof path, "%s/%s.so", dir, names[i]);
      unlink(path);
    }
    rmdir(dir);
  }
  printf("%d of 4 behaviours differ from Python\n", differences);
  return differences ? 1 : 0;
}
