/*
 * Shared declarations of the fuzz targets.  Every target defines
 * LLVMFuzzerTestOneInput(); fuzz-main.c supplies a main() that replays
 * files and directories (a committed corpus) for builds without libFuzzer.
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Optional: write a target's valid seed inputs into dir (--seed DIR). */
void fuzz_write_seeds(const char *dir) __attribute__((weak));

/*
 * Guest RAM is mmap'ed, out of the sanitizers' sight: move the block
 * between two inaccessible pages, so that a write outside it faults
 * (before anything used its host address).  fuzz-ram.c.
 */
typedef struct RAMBlock RAMBlock;
void fuzz_guard_ram(RAMBlock *rb);
/*
 * The destination of `-M none -m SIZE`: machine "none", the core
 * sections, one guarded RAMBlock "ram", the RAM section (fuzz-ram.c).
 */
RAMBlock *fuzz_ram_setup(const char *target, size_t size);
/* qemu_loadvm_state over data; asserts that a failure says why. */
int fuzz_load_stream(const uint8_t *data, size_t size);

/* Inputs bigger than this are cut: the parsers' limits are far below. */
#define FUZZ_MAX_INPUT (1u << 20)

#endif
