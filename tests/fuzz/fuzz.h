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

/* Inputs bigger than this are cut: the parsers' limits are far below. */
#define FUZZ_MAX_INPUT (1u << 20)

#endif
