/* fixed.h — exact decimal quantities: int64 micro-units (6 fractional digits). Thread-safe, no allocation. */
#ifndef TOLLGATE_FIXED_H
#define TOLLGATE_FIXED_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

/*
 * Usage, limits, balances and prices are decimals with at most 6 fractional digits and an absolute
 * value below 9e12. Floating point cannot hold them exactly (0.1 + 0.2 != 0.3), so every one of them
 * is an integer count of millionths. 9e12 * 1e6 = 9e18 still fits in int64 (max ~9.22e18), leaving
 * headroom so that a sum of two in-range values never overflows int64 before the range check.
 */
typedef int64_t tg_fixed;
/* For products of two quantities (or a quantity and a duration) before they are divided back. */
__extension__ typedef __int128 tg_i128;

#define TG_FIXED_SCALE  INT64_C(1000000)
#define TG_FIXED_MAX    (INT64_C(9000000000000) * TG_FIXED_SCALE - 1)  /* largest magnitude accepted */
#define TG_FIXED_BUFSZ  32

enum tg_fixed_status { TG_FIXED_OK = 0, TG_FIXED_ESYNTAX = -1, TG_FIXED_EPRECISION = -2, TG_FIXED_ERANGE = -3 };

/*
 * Parse s[0..len) exactly. Returns TG_FIXED_OK and sets *ret only on success (ret may be NULL to
 * validate only). The accepted text is exactly a JSON number:
 *     -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 * which also covers PostgreSQL numeric text ("12.500000", "-3", "0.000000").
 *
 * ESYNTAX:    not a JSON number (leading '+', "01", ".5", "5.", "1e", "", spaces, "NaN", "0x1"...).
 * ERANGE:     |value| >= 9e12, i.e. the value is not representable at any precision
 *             ("9000000000000", "1e300", "-12345678901234567890", "1e99999999999999999999").
 * EPRECISION: |value| < 9e12 but a non-zero digit sits beyond the 6th fractional place after the
 *             exponent is applied ("0.0000001", "2.5e-6", "1e-300"). Trailing zeros are fine.
 *
 * When both would apply, ERANGE wins: a magnitude that is too large cannot be fixed by dropping
 * digits, so that is the more useful diagnosis ("12345678901234567890.0000001" -> ERANGE). The
 * boundary is the magnitude 9e12 itself: "8999999999999.9999995" is below it and so fails with
 * EPRECISION, while "9000000000000.0000001" -> ERANGE. For values with <= 6 fractional digits this
 * is the same as |value| > TG_FIXED_MAX.
 *
 * Zero in any spelling ("-0", "-0.0", "0e999999999", "0.0e-99999999999999999999") is 0.
 * Exponents of any length are accepted without overflow.
 */
int tg_fixed_parse(const char *s, size_t len, tg_fixed *ret);

/* Convenience for NUL-terminated strings. NULL s -> ESYNTAX. */
int tg_fixed_parse_cstr(const char *s, tg_fixed *ret);

/*
 * Shortest exact decimal text: 3 -> "3", 12.5 -> "12.5", -0.000001 -> "-0.000001", 0 -> "0".
 * Writes a NUL-terminated string into buf (at least TG_FIXED_BUFSZ bytes) and returns its length.
 * Never "-0", never an exponent; the output always parses back to v. Any int64 is formatted, even one
 * outside +-TG_FIXED_MAX (such a text would then be rejected by the parser with ERANGE).
 */
size_t tg_fixed_format(tg_fixed v, char *buf);

/* Arithmetic with range checks: result must stay within +-TG_FIXED_MAX, else TG_FIXED_ERANGE and *ret untouched. */
int tg_fixed_add(tg_fixed a, tg_fixed b, tg_fixed *ret);
int tg_fixed_sub(tg_fixed a, tg_fixed b, tg_fixed *ret);

/* a x b with the exact 12-digit product rounded to 6 digits, half away from zero (so mul(-a, b) == -mul(a, b)). */
int tg_fixed_mul(tg_fixed a, tg_fixed b, tg_fixed *ret);

/* Whole number i as a quantity: ERANGE when |i| >= 9e12. */
int tg_fixed_from_int(int64_t i, tg_fixed *ret);

static inline bool tg_fixed_is_whole(tg_fixed v) { return v % TG_FIXED_SCALE == 0; }

/* For ratios/metrics only: never feed the result back into a quantity. */
double tg_fixed_to_double(tg_fixed v);

/*
 * Division helpers for rate maths: the quotient a / b as a quantity, rounded to the micro-unit
 * towards +infinity (ceil) or -infinity (floor). b must be > 0; b <= 0 -> TG_FIXED_ERANGE (there is
 * no separate domain status, and a zero divisor's quotient is unbounded). A quotient beyond
 * +-TG_FIXED_MAX -> TG_FIXED_ERANGE.
 */
int tg_fixed_div_ceil(tg_fixed a, tg_fixed b, tg_fixed *ret);
int tg_fixed_div_floor(tg_fixed a, tg_fixed b, tg_fixed *ret);

#endif /* TOLLGATE_FIXED_H */
