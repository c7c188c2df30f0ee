/* fuzz.h — what every fuzz target shares: the libFuzzer entry point and invariant checks that abort. */
#ifndef TOLLGATE_FUZZ_H
#define TOLLGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Called by libFuzzer (clang, -Dfuzz=true) or by replay.c (any compiler) once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant: say which, then abort so that libFuzzer keeps the input and replay exits non-zero. */
__attribute__((noreturn)) static inline void fuzz_fail(const char *cond, const char *file, int line)
{
	fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, cond);
	abort();
}
/* Unlike assert(), never compiled out. */
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : fuzz_fail(#cond, __FILE__, __LINE__))

/* The input as a NUL-terminated string (cut at its first NUL, as C strings from the wire are). Free it. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
