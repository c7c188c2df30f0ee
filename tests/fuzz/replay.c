/*
 * replay.c — a main() for the fuzz targets where libFuzzer is not available (gcc, scripts/test): runs
 * every file of the corpus directories given, then a fixed number of deterministic mutations of them.
 *
 *   fuzz_json tests/fuzz/corpus/json [more dirs or files...] [-runs=N] [-seed=S]
 *
 * Same seed, same inputs: a failure reproduces. A broken invariant aborts (non-zero exit); the input
 * that broke it is written to ./replay-crash-<target>.bin (or $FUZZ_REPLAY_CRASH_DIR) to keep as a seed.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#define REPLAY_MAX 4096

struct input {
	uint8_t *data;
	size_t size;
};

static struct input *inputs;
static size_t ninputs, cap;
static const char *target = "fuzz";
static const uint8_t *current;
static size_t current_size;

static void add_input(uint8_t *data, size_t size)
{
	if (ninputs == cap) {
		cap = cap ? cap * 2 : 64;
		inputs = realloc(inputs, cap * sizeof(*inputs));
		if (!inputs)
			abort();
	}
	inputs[ninputs].data = data;
	inputs[ninputs].size = size;
	ninputs++;
}

static int read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	size_t n;

	if (!f) {
		fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	buf = malloc(REPLAY_MAX);
	if (!buf)
		abort();
	n = fread(buf, 1, REPLAY_MAX, f);
	fclose(f);
	add_input(buf, n);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order (readdir order differs between file systems). */
static int read_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, ncap = 0;
	int rc = 0;

	if (!d) {
		fprintf(stderr, "replay: cannot open '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == ncap) {
			ncap = ncap ? ncap * 2 : 32;
			names = realloc(names, ncap * sizeof(*names));
			if (!names)
				abort();
		}
		if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0)
			abort();
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
			rc = read_file(names[i]);
		free(names[i]);
	}
	free(names);
	return rc;
}

/* xorshift64*: the same sequence on every machine */
static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static size_t below(size_t n)
{
	return n ? (size_t)(rng() % n) : 0;
}

/* Bytes that matter to our parsers: JSON structure and escapes, numbers, URL escapes, ids, times. */
static const char *const tokens[] = {
	"\"", "\\", "{", "}", "[", "]", ":", ",", " ", "\t", "\n", "-", "+", ".", "e", "E", "0", "1", "9",
	"true", "false", "null", "\\u0000", "\\u00e9", "\\ud800", "\xc3\xa9", "\xff", "1e400", "1e-20000",
	"12345678901234567890123456789012345678901", "0.0000001", "9000000000000", "%", "%00", "%2F", "%zz",
	"&", "=", "/", "{id}", "T", "Z", "+01:00", "2026-02-29", "23:59:60", ".123456", "Bearer ", "sk_",
	"eyJ", "..", "\x00",
};

static size_t mutate(uint8_t *buf, size_t size)
{
	int rounds = 1 + (int)below(8);

	for (int r = 0; r < rounds; r++) {
		switch (below(7)) {
		case 0: /* flip one bit */
			if (size)
				buf[below(size)] ^= (uint8_t)(1u << below(8));
			break;
		case 1: /* set a random byte */
			if (size)
				buf[below(size)] = (uint8_t)rng();
			break;
		case 2: /* delete a range */
			if (size) {
				size_t at = below(size), n = 1 + below(size - at < 8 ? size - at : 8);
				memmove(buf + at, buf + at + n, size - at - n);
				size -= n;
			}
			break;
		case 3: /* insert a token */
		case 4: {
			const char *t = tokens[below(sizeof(tokens) / sizeof(tokens[0]))];
			size_t n = t[0] ? strlen(t) : 1, at = below(size + 1);
			if (size + n <= REPLAY_MAX) {
				memmove(buf + at + n, buf + at, size - at);
				memcpy(buf + at, t, n);
				size += n;
			}
			break;
		}
		case 5: /* duplicate a range */
			if (size) {
				size_t at = below(size), n = 1 + below(size - at), to = below(size + 1);
				if (size + n <= REPLAY_MAX) {
					uint8_t tmp[REPLAY_MAX];
					memcpy(tmp, buf + at, n);
					memmove(buf + to + n, buf + to, size - to);
					memcpy(buf + to, tmp, n);
					size += n;
				}
			}
			break;
		default: { /* splice in a piece of another input */
			const struct input *o = &inputs[below(ninputs)];
			if (o->size) {
				size_t at = below(o->size), n = 1 + below(o->size - at), to = below(size + 1);
				if (to + n > REPLAY_MAX)
					n = REPLAY_MAX - to;
				memcpy(buf + to, o->data + at, n);
				if (to + n > size)
					size = to + n;
			}
			break;
		}
		}
	}
	return size;
}

static void on_abort(int sig)
{
	const char *dir = getenv("FUZZ_REPLAY_CRASH_DIR");
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/replay-crash-%s.bin", dir && dir[0] ? dir : ".", target);
	if (current && (f = fopen(path, "wb"))) {
		fwrite(current, 1, current_size, f);
		fclose(f);
		fprintf(stderr, "replay: the failing input (%zu bytes) is in %s\n", current_size, path);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void run(const uint8_t *data, size_t size)
{
	/* an exact-size copy, so that the sanitizers see a read past the end */
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	current = copy;
	current_size = size;
	LLVMFuzzerTestOneInput(copy, size);
	current = NULL;
	free(copy);
}

int main(int argc, char **argv)
{
	long runs = 5000;
	uint64_t seed = UINT64_C(0x70119a7e);
	size_t nseeds;

	target = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (getenv("FUZZ_REPLAY_RUNS"))
		runs = strtol(getenv("FUZZ_REPLAY_RUNS"), NULL, 10);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (strncmp(argv[i], "-runs=", 6) == 0)
			runs = strtol(argv[i] + 6, NULL, 10);
		else if (strncmp(argv[i], "-seed=", 6) == 0)
			seed = strtoull(argv[i] + 6, NULL, 0);
		else if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode) ? read_dir(argv[i]) < 0 : read_file(argv[i]) < 0)
			return 2;
	}
	if (!ninputs)
		add_input(calloc(1, 1), 0);
	signal(SIGABRT, on_abort);
	signal(SIGSEGV, on_abort);
	nseeds = ninputs;
	for (size_t i = 0; i < nseeds; i++)
		run(inputs[i].data, inputs[i].size);
	rng_state = seed ? seed : 1;
	uint8_t *buf = malloc(REPLAY_MAX);
	if (!buf)
		abort();
	for (long r = 0; r < runs; r++) {
		const struct input *in = &inputs[below(nseeds)];
		memcpy(buf, in->data, in->size);
		size_t size = mutate(buf, in->size);
		run(buf, size);
	}
	printf("%s: %zu corpus inputs and %ld mutations (seed %#llx): every invariant held\n", target, nseeds, runs,
	       (unsigned long long)seed);
	free(buf);
	for (size_t i = 0; i < ninputs; i++)
		free(inputs[i].data);
	free(inputs);
	return 0;
}
