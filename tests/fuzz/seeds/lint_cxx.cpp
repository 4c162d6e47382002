// A C++ module built with default visibility, as a user's first try is: an inline function's
// static (STB_GNU_UNIQUE under g++) and a thread_local object with a destructor (an import of
// __cxa_thread_atexit). A seed of the fuzz corpus and the input of the fuzz_seeds test.
#include <string>

struct tracker {
  std::string name{"tracker"};
  ~tracker() { name.clear(); }
};

static thread_local tracker per_thread;

inline int &calls() {
  static int n = 0;
  return n;
}

extern "C" int lint_cxx(int x) { return x + ++calls() + static_cast<int>(per_thread.name.size()); }
