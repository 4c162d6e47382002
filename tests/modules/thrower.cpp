// A C++ module whose function throws when asked to: the exception crosses the host's live
// call. -DVERSION=n.
#include <stdexcept>

extern "C" __attribute__((visibility("default"))) int version(void) { return VERSION; }

extern "C" __attribute__((visibility("default"))) int maybe_throw(int x) {
  if (x < 0)
    throw std::runtime_error("negative");
  return x * VERSION;
}
