/*
 * long double helpers for tallykv's INCRBYFLOAT / HINCRBYFLOAT.
 *
 * Valkey does these increments in C `long double` (x87 80-bit extended
 * precision on x86_64 Linux) and renders the result with "%.17Lf" followed by
 * trimming of trailing zeros.  Rust has no long double, so the whole
 * parse -> add -> format pipeline lives here and only bytes cross the FFI
 * boundary.  See src/util/float.rs for the Rust side and for which Valkey
 * error reply each return code corresponds to.
 *
 * Semantics reproduced (Valkey util.c string2ld / ld2string(LD_STR_HUMAN)):
 *   - input length must be 1 .. MAX_LONG_DOUBLE_CHARS-1 (5119) bytes;
 *   - strtold() must consume every byte (no trailing garbage, no embedded NUL);
 *   - a leading isspace() byte is rejected (strtold would skip it);
 *   - overflow to +-HUGE_VAL and underflow to zero (ERANGE) are rejected,
 *     subnormal results are accepted;
 *   - NaN is rejected, "inf"/"infinity" are accepted by the parser.
 *
 * The process must keep the "C" LC_NUMERIC locale (Valkey never changes it
 * either), otherwise strtold/snprintf would use another decimal separator.
 */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Valkey's MAX_LONG_DOUBLE_CHARS. */
#define TKV_LD_MAX_CHARS (5 * 1024)

/* Return codes shared with src/util/float.rs (keep in sync). */
#define TKV_OK 0
#define TKV_BAD_CURRENT 1
#define TKV_BAD_INCREMENT 2
#define TKV_RESULT_NOT_FINITE 3
#define TKV_INCREMENT_NOT_FINITE 4
#define TKV_NO_ROOM 5

/* Parse `len` bytes at `s` the way Valkey's string2ld() does.
 * Returns 1 and stores the value on success, 0 otherwise. */
static int tkv_parse_long_double(const unsigned char *s, size_t len, long double *out) {
    char buf[TKV_LD_MAX_CHARS];
    char *end = NULL;
    long double v;

    if (s == NULL || len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';

    /* strtold() silently skips leading white space; Valkey refuses it. */
    if (isspace((unsigned char)buf[0])) return 0;

    errno = 0;
    v = strtold(buf, &end);
    /* Every byte consumed: this also rejects embedded NUL bytes. */
    if (end != buf + len) return 0;
    if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO)) return 0;
    if (errno == EINVAL) return 0;
    if (isnan(v)) return 0;

    *out = v;
    return 1;
}

/* ld2string(..., LD_STR_HUMAN): "%.17Lf", then trailing zeros (and a dangling
 * dot) are removed and "-0" becomes "0".  Returns the length written (no NUL
 * counted) or 0 when `cap` is too small, like Valkey. */
static size_t tkv_format_human(long double v, char *buf, size_t cap) {
    size_t l;
    int n;

    if (isinf(v)) {
        if (cap < 5) return 0;
        if (v > 0) {
            memcpy(buf, "inf", 3);
            return 3;
        }
        memcpy(buf, "-inf", 4);
        return 4;
    }
    if (isnan(v)) {
        if (cap < 4) return 0;
        memcpy(buf, "nan", 3);
        return 3;
    }

    n = snprintf(buf, cap, "%.17Lf", v);
    if (n < 0 || (size_t)n + 1 > cap) return 0;
    l = (size_t)n;
    if (memchr(buf, '.', l) != NULL) {
        while (l > 0 && buf[l - 1] == '0') l--;
        if (l > 0 && buf[l - 1] == '.') l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    return l;
}

/* 1 if `s` parses as a long double the way Valkey's string2ld() accepts. */
int tallykv_ld_is_valid(const unsigned char *s, size_t len) {
    long double v;
    return tkv_parse_long_double(s, len, &v);
}

/* HINCRBYFLOAT validates its increment before looking the key up:
 * TKV_BAD_INCREMENT, TKV_INCREMENT_NOT_FINITE or TKV_OK. */
int tallykv_ld_check_hash_increment(const unsigned char *incr, size_t incr_len) {
    long double v;
    if (!tkv_parse_long_double(incr, incr_len, &v)) return TKV_BAD_INCREMENT;
    if (isnan(v) || isinf(v)) return TKV_INCREMENT_NOT_FINITE;
    return TKV_OK;
}

/* current (has_current == 0 means "absent", i.e. 0) + incr, formatted into
 * out[0..*out_len].  hash_mode selects HINCRBYFLOAT's order of checks
 * (increment first, and an infinite increment is refused up front);
 * otherwise INCRBYFLOAT's (stored value first). */
int tallykv_ld_incr(const unsigned char *current,
                    size_t current_len,
                    int has_current,
                    const unsigned char *incr,
                    size_t incr_len,
                    int hash_mode,
                    char *out,
                    size_t out_cap,
                    size_t *out_len) {
    long double value = 0;
    long double increment = 0;
    size_t l;

    if (hash_mode) {
        if (!tkv_parse_long_double(incr, incr_len, &increment)) return TKV_BAD_INCREMENT;
        if (isnan(increment) || isinf(increment)) return TKV_INCREMENT_NOT_FINITE;
        if (has_current && !tkv_parse_long_double(current, current_len, &value)) return TKV_BAD_CURRENT;
    } else {
        if (has_current && !tkv_parse_long_double(current, current_len, &value)) return TKV_BAD_CURRENT;
        if (!tkv_parse_long_double(incr, incr_len, &increment)) return TKV_BAD_INCREMENT;
    }

    value += increment;
    if (isnan(value) || isinf(value)) return TKV_RESULT_NOT_FINITE;

    l = tkv_format_human(value, out, out_cap);
    if (l == 0) return TKV_NO_ROOM;
    *out_len = l;
    return TKV_OK;
}
