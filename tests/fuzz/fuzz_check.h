/* fuzz_check.h: one input through the ELF check and the lint, held to what src/internal.h promises.
 * Shared by the libFuzzer target (fuzz_elf.c) and the regression replay (replay.c). */
#ifndef HM_FUZZ_CHECK_H
#define HM_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* hm__elf_check's own bound on its work: steps per byte of input, plus a fixed part. */
#define HMF_STEPS_PER_BYTE 24u
#define HMF_STEPS_FIXED 1024u

/* Run hm__elf_check on data[0..size) twice, as the loader calls it (with an info struct and
 * room for a reason) and as the watcher does (no info, a short reason), and abort with a
 * message on stderr if anything it promises does not hold: the result is 0, HM_EBADELF or
 * HM_ENOTELF and the same both times; a failure says why and leaves info cleared; a success
 * reports lint facts that agree with each other, with strings that lie inside data and end
 * there; and the work stays within HMF_STEPS_PER_BYTE * size + HMF_STEPS_FIXED steps.
 * Returns the result; *steps (may be NULL) gets the work of the first call. */
int hmf_check(const uint8_t *data, size_t size, uint64_t *steps);

#endif /* HM_FUZZ_CHECK_H */
