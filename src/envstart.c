/*
 * hm_registry_new: the registry (registry.c), then what the environment asks of a new
 * registry: HOTMOD_CONTROL=PATH makes the process's first registry serve a control socket
 * at PATH (control.c), with no code in the host. It sits above both, so that the registry
 * knows nothing of the control socket.
 *
 * Layer 10 (docs/architecture.md): calls registry.c, control.c and the leaves.
 */
#include "ctl.h"
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>

/* Whether a registry of this process has been made (and so had the chance to serve). */
static int first_taken;

int hm_registry_new(hm_registry **out, const hm_registry_options *opts) {
  const char *path;
  int rc = hm__registry_new(out, opts);
  if (rc != 0 || __atomic_exchange_n(&first_taken, 1, __ATOMIC_ACQ_REL))
    return rc;
  path = secure_getenv("HOTMOD_CONTROL");
  if (path != NULL && path[0] != '\0' && hm__control_start_env(*out, path) != 0) {
    /* Asked for from outside, so said on stderr; the host's registry works without it,
     * and the failure stays out of the host's own error detail. */
    fprintf(stderr, "hotmod: HOTMOD_CONTROL=%s: no control socket: %s\n", path, hm_errmsg());
  }
  return 0;
}
