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
#include <float.h>
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

/* ---- INCREX BYFLOAT --------------------------------------------------------
 * Valkey 9.2's INCREX in float mode: the stored value, the increment and the
 * optional LBOUND/UBOUND are long doubles; a result outside the bounds (an
 * infinite sum included) is declined, or with SATURATE clamped to the bound
 * it crossed.  Both the new value and the increment actually applied
 * (new - old, which can differ from the requested one) are rendered with
 * ld2string(LD_STR_HUMAN). */

#define TKV_DECLINED 6
#define TKV_BAD_LBOUND 7
#define TKV_BAD_UBOUND 8
#define TKV_BOUNDS_INVERTED 9
#define TKV_CURRENT_NOT_FINITE 10
#define TKV_APPLIED_NOT_FINITE 11

/* mode: 0 = check the arguments only (what runs before the key lookup);
 *       1 = compute the increment;
 *       2 = parse the stored value and report it declined (NX/XX not met). */
int tallykv_ld_increx(const unsigned char *current,
                      size_t current_len,
                      int has_current,
                      const unsigned char *incr,
                      size_t incr_len,
                      const unsigned char *lbound,
                      size_t lbound_len,
                      int has_lbound,
                      const unsigned char *ubound,
                      size_t ubound_len,
                      int has_ubound,
                      int saturate,
                      int mode,
                      char *value_out,
                      size_t value_cap,
                      size_t *value_len,
                      char *applied_out,
                      size_t applied_cap,
                      size_t *applied_len) {
    long double old = 0, increment = 0, lb = -LDBL_MAX, ub = LDBL_MAX, value, applied;
    int upper;

    if (!tkv_parse_long_double(incr, incr_len, &increment)) return TKV_BAD_INCREMENT;
    if (isinf(increment)) return TKV_INCREMENT_NOT_FINITE;
    if (has_lbound && !tkv_parse_long_double(lbound, lbound_len, &lb)) return TKV_BAD_LBOUND;
    if (has_ubound && !tkv_parse_long_double(ubound, ubound_len, &ub)) return TKV_BAD_UBOUND;
    if (lb > ub) return TKV_BOUNDS_INVERTED;
    if (mode == 0) return TKV_OK;

    if (has_current && !tkv_parse_long_double(current, current_len, &old)) return TKV_BAD_CURRENT;
    if (isinf(old)) return TKV_CURRENT_NOT_FINITE;

    value = old + increment;
    if (mode == 2 || (!(value >= lb && value <= ub && !isinf(value)) && !saturate)) {
        *value_len = tkv_format_human(old, value_out, value_cap);
        *applied_len = tkv_format_human(0, applied_out, applied_cap);
        if (*value_len == 0 || *applied_len == 0) return TKV_NO_ROOM;
        return TKV_DECLINED;
    }
    if (isinf(value) || value < lb || value > ub) {
        upper = isinf(value) ? value > 0 : value > ub;
        value = upper ? ub : lb;
    }
    applied = value - old;
    if (isinf(applied) || isnan(applied)) return TKV_APPLIED_NOT_FINITE;
    *value_len = tkv_format_human(value, value_out, value_cap);
    *applied_len = tkv_format_human(applied, applied_out, applied_cap);
    if (*value_len == 0 || *applied_len == 0) return TKV_NO_ROOM;
    return TKV_OK;
}
