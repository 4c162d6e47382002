// Test module for the reloadability lint, in C++: clean unless a finding is compiled in.
// -DUNIQUE: an inline function's static and a template's static; built with the compiler's
// defaults (default visibility), these are STB_GNU_UNIQUE under GCC. -DTLS_DTOR: a
// thread_local object with a destructor. Clean (-D neither), the same inline and template
// statics are there too: hotmod_add_module's settings keep them out of the unique table.
// -DVERSION=n.
#include <string>

#define EXPORT extern "C" __attribute__((visibility("default")))

EXPORT int version(void) { return VERSION; }

#ifndef TLS_DTOR
inline int &inline_counter() {
  static int n;
  return n;
}

template <typename T> struct tally {
  static T n;
};
template <typename T> T tally<T>::n;

EXPORT int bump(void) { return ++inline_counter() + ++tally<int>::n; }
#endif

#ifdef TLS_DTOR
struct trace {
  std::string name{"thread"};
  ~trace() { name.clear(); }
};
static thread_local trace per_thread;
EXPORT int touch(void) { return (int)per_thread.name.size(); }
#endif
