// A C++ module whose function throws when asked to: the exception crosses the host's live
// call. It describes itself with the module header's macros (a descriptor whose load hook
// counts the versions that held its state, and a signature), as a C++ module would.
// -DVERSION=n.
#include "hotmod/module.h"

#include <stdexcept>

namespace {
int generations;

void *save() { return &generations; }

int load(const hm_load_ctx *ctx) {
  generations = (ctx->prev != nullptr ? *static_cast<const int *>(ctx->prev) : 0) + 1;
  return HM_LOAD_CONVERTED;
}
} // namespace

HM_MODULE_DESCRIBE(1, save, load, nullptr);
HM_MODULE_SIGNATURE(maybe_throw, "int(int)");

extern "C" HM_MODULE_EXPORT int version(void) { return VERSION; }

extern "C" HM_MODULE_EXPORT int held_by(void) { return generations; }

extern "C" HM_MODULE_EXPORT int maybe_throw(int x) {
  if (x < 0)
    throw std::runtime_error("negative");
  return x * VERSION;
}
