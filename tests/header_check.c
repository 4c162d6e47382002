/* The public headers must compile on their own as C99 and as C++ (this file is built both
 * ways by tests/CMakeLists.txt), with no libuv headers needed for the core ones. */
#include <hotmod.h>
#include <hotmod/module.h>

static int unused_symbol_check(void) { return HM_ENOSYM < 0 && HM_MODULE_ABI > 0; }

int main(void) { return unused_symbol_check() ? 0 : 1; }
