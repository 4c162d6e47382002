/* fuzz_elf.c: the libFuzzer target over the ELF check and the lint facts it reports. Built
 * only with clang and HOTMOD_FUZZ=ON; `make fuzz` runs it. See tests/fuzz/README.md. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* libFuzzer hands over an exact-size heap copy: AddressSanitizer flags any read past it. */
  hmf_check(data, size, NULL);
  return 0;
}
