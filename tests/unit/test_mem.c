/* Unit tests for src/util/mem.c's arenas: what they hand out is zeroed and aligned, also when it comes
 * from a chunk an earlier arena released (the per-thread chunk cache) or from a chunk of its own. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/util.h"
#include "unit.h"

static void expect_zero(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] == 0)
		i++;
	ck_assert_msg(i == n, "byte %zu of %zu is %#x, not 0", i, n, i < n ? p[i] : 0);
}

/* Fill an arena the way a request does (small blocks, a ~2.7 KB one, a big one), scribble over all of
 * it, release it; the next arenas of this thread reuse its chunks and must see zeros only. */
START_TEST(test_reused_chunks_are_zeroed)
{
	static const size_t sizes[] = {24, 2720, 100, 1, 900, 3500, 2720, 7, 4000, 64};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };

	for (int round = 0; round < 200; round++) {
		struct tg_arena a;
		tg_arena_init(&a);
		for (int i = 0; i < N; i++) {
			unsigned char *p = tg_arena_alloc(&a, sizes[i]);
			ck_assert_msg(((uintptr_t)p & 15) == 0, "block of %zu not 16-aligned", sizes[i]);
			expect_zero(p, sizes[i]);
			memset(p, 0xAB, sizes[i]);
		}
		tg_arena_release(&a);
	}
}
END_TEST

/* Many arenas alive at once (requests in flight), released in another order than made. */
/* tg_arena_grow: the same array while it has room, else a bigger copy holding every element so far. */
START_TEST(test_arena_grow_keeps_elements)
{
	struct tg_arena a;
	int *v = NULL, n = 0, cap = 0;

	tg_arena_init(&a);
	for (int i = 0; i < 1000; i++) {
		int *before = v;
		int had = cap;
		v = tg_arena_grow(&a, v, n, n + 1, &cap, sizeof(*v));
		ck_assert(cap >= n + 1);
		if (had >= n + 1)
			ck_assert_ptr_eq(v, before);
		v[n++] = i;
	}
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(v[i], i);
	ck_assert_int_eq(cap, 1024);
	v = tg_arena_grow(&a, v, n, 5000, &cap, sizeof(*v));
	ck_assert_int_eq(cap, 8192);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(v[i], i);
	tg_arena_release(&a);
}
END_TEST

START_TEST(test_many_arenas_interleaved)
{
	enum { K = 300 };
	struct tg_arena *as = calloc(K, sizeof(*as));

	for (int round = 0; round < 3; round++) {
		for (int k = 0; k < K; k++) {
			tg_arena_init(&as[k]);
			for (int j = 0; j < 3; j++) {
				unsigned char *p = tg_arena_alloc(&as[k], 2000);
				expect_zero(p, 2000);
				memset(p, k & 0xff, 2000);
			}
		}
		for (int k = K - 1; k >= 0; k -= 2)
			tg_arena_release(&as[k]);
		for (int k = 0; k < K; k += 2)
			tg_arena_release(&as[k]);
	}
	free(as);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mem");
	TCase *tc = tcase_create("arena");

	tcase_add_test(tc, test_reused_chunks_are_zeroed);
	tcase_add_test(tc, test_arena_grow_keeps_elements);
	tcase_add_test(tc, test_many_arenas_interleaved);
	suite_add_tcase(s, tc);
	return unit_run(s);
}
