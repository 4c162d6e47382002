// The small C++ module of bench/builds, built with g++ and the default linker in one
// command per build. It uses the standard library (strings, containers, streams) so the
// link reads libstdc++ as a real C++ module's does. Hidden visibility, inline functions
// included, so no STB_GNU_UNIQUE symbol pins the first version (see FACTS.md).
#include "build_version.h"

#include <map>
#include <sstream>
#include <string>
#include <vector>

#define HM_BB_STR2(x) #x
#define HM_BB_STR(x) HM_BB_STR2(x)

namespace {

const char version_text[] = HM_BB_STR(BUILD_VERSION);
int version_rw = BUILD_VERSION;

std::map<std::string, std::vector<int>> table() {
  std::map<std::string, std::vector<int>> t;
  for (int i = 0; i < 16; i++)
    t["k" + std::to_string(i)].assign(static_cast<size_t>(i + 1), i);
  return t;
}

} // namespace

extern "C" __attribute__((visibility("default"))) int bench_version(void) {
  return *static_cast<const volatile int *>(&version_rw);
}

// The version number if its text, its data copy and a little standard-library work all
// agree; -1 otherwise.
extern "C" __attribute__((visibility("default"))) int bench_verify(void) {
  std::ostringstream os;
  size_t n = 0;
  os << BUILD_VERSION;
  for (const auto &kv : table())
    n += kv.second.size();
  return os.str() == version_text && version_rw == BUILD_VERSION && n == 136 ? BUILD_VERSION
                                                                             : -1;
}
