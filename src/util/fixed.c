/* Exact decimal quantities as int64 micro-units: hand-written JSON-number parser, formatter and checked arithmetic. */
#include "tollgate/fixed.h"

#include <string.h>

/* GCC/Clang extension; __extension__ keeps -Wpedantic quiet about it in this one place. */

/*
 * Exponents and digit positions are tracked as int64 but clamped to this magnitude, so their sum
 * can never overflow. Classification stays exact for any text shorter than 4e18 bytes (more than
 * any address space holds), because only whether a position lands inside [-6, 12] matters.
 */
#define POS_LIMIT INT64_C(4000000000000000000)

/* Decimal position (power of ten) of the most significant digit a value below 9e12 can have. */
#define MAX_INT_POS 12
/* Decimal position of the micro-unit. */
#define MIN_FRAC_POS (-6)

static const uint64_t pow10_u64[] = {
    UINT64_C(1),
    UINT64_C(10),
    UINT64_C(100),
    UINT64_C(1000),
    UINT64_C(10000),
    UINT64_C(100000),
    UINT64_C(1000000),
    UINT64_C(10000000),
    UINT64_C(100000000),
    UINT64_C(1000000000),
    UINT64_C(10000000000),
    UINT64_C(100000000000),
    UINT64_C(1000000000000),
    UINT64_C(10000000000000),
    UINT64_C(100000000000000),
    UINT64_C(1000000000000000),
    UINT64_C(10000000000000000),
    UINT64_C(100000000000000000),
    UINT64_C(1000000000000000000),
};

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int64_t clamp_count(size_t n)
{
    return n > (size_t)POS_LIMIT ? POS_LIMIT : (int64_t)n;
}

static bool in_range(tg_i128 v)
{
    return v >= -(tg_i128)TG_FIXED_MAX && v <= (tg_i128)TG_FIXED_MAX;
}

int tg_fixed_parse(const char *s, size_t len, tg_fixed *ret)
{
    if (s == NULL || len == 0)
        return TG_FIXED_ESYNTAX;

    size_t i = 0;
    bool neg = false;
    if (s[i] == '-') {
        neg = true;
        i++;
    }

    /* Integer part: "0" or a non-zero digit followed by digits (JSON forbids leading zeros). */
    size_t int_start = i;
    if (i >= len || !is_digit(s[i]))
        return TG_FIXED_ESYNTAX;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < len && is_digit(s[i]))
            i++;
    }
    size_t int_end = i;

    /* Fraction: '.' must be followed by at least one digit. */
    size_t frac_start = i, frac_end = i;
    if (i < len && s[i] == '.') {
        i++;
        frac_start = i;
        while (i < len && is_digit(s[i]))
            i++;
        frac_end = i;
        if (frac_end == frac_start)
            return TG_FIXED_ESYNTAX;
    }

    /* Exponent: saturate instead of overflowing; anything past POS_LIMIT classifies the same way. */
    int64_t exp = 0;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool exp_neg = false;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            exp_neg = s[i] == '-';
            i++;
        }
        if (i >= len || !is_digit(s[i]))
            return TG_FIXED_ESYNTAX;
        while (i < len && is_digit(s[i])) {
            int64_t d = s[i] - '0';
            exp = exp > (POS_LIMIT - d) / 10 ? POS_LIMIT : exp * 10 + d;
            i++;
        }
        if (exp_neg)
            exp = -exp;
    }

    if (i != len)
        return TG_FIXED_ESYNTAX;

    /*
     * Find the most and least significant non-zero digits. Integer digit k has position
     * (int_len - 1 - k), fraction digit k has position -(k + 1); the exponent shifts both.
     */
    size_t first_nz = len, last_nz = len; /* char indices; len = none */
    for (size_t k = int_start; k < int_end; k++) {
        if (s[k] != '0') {
            if (first_nz == len)
                first_nz = k;
            last_nz = k;
        }
    }
    for (size_t k = frac_start; k < frac_end; k++) {
        if (s[k] != '0') {
            if (first_nz == len)
                first_nz = k;
            last_nz = k;
        }
    }

    if (first_nz == len) {
        /* All digits zero: the exponent is irrelevant and "-0" is plain 0. */
        if (ret)
            *ret = 0;
        return TG_FIXED_OK;
    }

    int64_t int_len = clamp_count(int_end - int_start);
    int64_t hi = first_nz < int_end ? int_len - 1 - clamp_count(first_nz - int_start)
                                    : -1 - clamp_count(first_nz - frac_start);
    int64_t lo = last_nz < int_end ? int_len - 1 - clamp_count(last_nz - int_start)
                                   : -1 - clamp_count(last_nz - frac_start);
    hi += exp;
    lo += exp;

    /* Range is checked before precision: a too-large magnitude is the more useful diagnosis. */
    if (hi > MAX_INT_POS)
        return TG_FIXED_ERANGE;

    /*
     * Accumulate the digits at positions hi..cut, i.e. the value truncated to micro-units. At most
     * 12 - (-6) + 1 = 19 digits, so the result is below 1e19 and fits in uint64.
     */
    int64_t cut = lo < MIN_FRAC_POS ? MIN_FRAC_POS : lo;
    uint64_t acc = 0;
    if (hi >= cut) {
        int64_t pos = hi;
        for (size_t k = first_nz; pos >= cut; k++) {
            if (s[k] == '.')
                continue;
            acc = acc * 10 + (uint64_t)(s[k] - '0');
            pos--;
        }
        acc *= pow10_u64[cut - MIN_FRAC_POS];
    }

    /* Truncated micro-units above MAX means |value| >= 9e12, however many digits follow. */
    if (acc > (uint64_t)TG_FIXED_MAX)
        return TG_FIXED_ERANGE;
    if (lo < MIN_FRAC_POS)
        return TG_FIXED_EPRECISION;

    if (ret)
        *ret = neg ? -(tg_fixed)acc : (tg_fixed)acc;
    return TG_FIXED_OK;
}

int tg_fixed_parse_cstr(const char *s, tg_fixed *ret)
{
    if (s == NULL)
        return TG_FIXED_ESYNTAX;
    return tg_fixed_parse(s, strlen(s), ret);
}

size_t tg_fixed_format(tg_fixed v, char *buf)
{
    /* Unsigned magnitude so that even INT64_MIN formats without overflow. */
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t ip = mag / (uint64_t)TG_FIXED_SCALE;
    uint64_t fp = mag % (uint64_t)TG_FIXED_SCALE;

    char tmp[24];
    size_t n = 0;
    /* Integer digits, least significant first. */
    do {
        tmp[n++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip != 0);

    size_t out = 0;
    if (v < 0)
        buf[out++] = '-';
    while (n > 0)
        buf[out++] = tmp[--n];

    if (fp != 0) {
        /* Six fractional digits, then drop trailing zeros for the shortest exact text. */
        int digits = 6;
        while (fp % 10 == 0) {
            fp /= 10;
            digits--;
        }
        buf[out++] = '.';
        for (int k = digits - 1; k >= 0; k--) {
            buf[out + (size_t)k] = (char)('0' + fp % 10);
            fp /= 10;
        }
        out += (size_t)digits;
    }
    buf[out] = '\0';
    return out;
}

int tg_fixed_add(tg_fixed a, tg_fixed b, tg_fixed *ret)
{
    /* 128-bit so that out-of-range inputs cannot overflow before the check. */
    tg_i128 r = (tg_i128)a + b;
    if (!in_range(r))
        return TG_FIXED_ERANGE;
    *ret = (tg_fixed)r;
    return TG_FIXED_OK;
}

int tg_fixed_sub(tg_fixed a, tg_fixed b, tg_fixed *ret)
{
    tg_i128 r = (tg_i128)a - b;
    if (!in_range(r))
        return TG_FIXED_ERANGE;
    *ret = (tg_fixed)r;
    return TG_FIXED_OK;
}

int tg_fixed_mul(tg_fixed a, tg_fixed b, tg_fixed *ret)
{
    /* |a*b| <= 2^126: the exact 12-fractional-digit product always fits in 128 bits. */
    tg_i128 p = (tg_i128)a * b;
    tg_i128 q = p / TG_FIXED_SCALE;
    tg_i128 r = p % TG_FIXED_SCALE; /* same sign as p: C truncates towards zero */
    /* Half away from zero, so the rounding is symmetric in sign. */
    if (r >= TG_FIXED_SCALE / 2)
        q++;
    else if (r <= -(TG_FIXED_SCALE / 2))
        q--;
    if (!in_range(q))
        return TG_FIXED_ERANGE;
    *ret = (tg_fixed)q;
    return TG_FIXED_OK;
}

int tg_fixed_from_int(int64_t i, tg_fixed *ret)
{
    if (i >= INT64_C(9000000000000) || i <= -INT64_C(9000000000000))
        return TG_FIXED_ERANGE;
    *ret = i * TG_FIXED_SCALE;
    return TG_FIXED_OK;
}

double tg_fixed_to_double(tg_fixed v)
{
    /* Split so the integer part converts exactly (< 2^53) and only the fraction is rounded. */
    return (double)(v / TG_FIXED_SCALE) + (double)(v % TG_FIXED_SCALE) / (double)TG_FIXED_SCALE;
}

/* a / b in micro-units, i.e. a * 1e6 / b, rounded up (ceil) or down (floor). */
static int div_rounded(tg_fixed a, tg_fixed b, bool ceil, tg_fixed *ret)
{
    if (b <= 0)
        return TG_FIXED_ERANGE;
    /* |a| * 1e6 <= 2^83: no overflow in 128 bits. */
    tg_i128 n = (tg_i128)a * TG_FIXED_SCALE;
    tg_i128 q = n / b; /* truncates towards zero */
    tg_i128 r = n % b;
    if (r > 0 && ceil)
        q++;
    else if (r < 0 && !ceil)
        q--;
    if (!in_range(q))
        return TG_FIXED_ERANGE;
    *ret = (tg_fixed)q;
    return TG_FIXED_OK;
}

int tg_fixed_div_ceil(tg_fixed a, tg_fixed b, tg_fixed *ret)
{
    return div_rounded(a, b, true, ret);
}

int tg_fixed_div_floor(tg_fixed a, tg_fixed b, tg_fixed *ret)
{
    return div_rounded(a, b, false, ret);
}
