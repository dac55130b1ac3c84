//! Small pure helpers that must match Valkey byte for byte.
//!
//! * [`num`]: `string2ll` / `string2d` parsing, integer formatting.
//! * [`float`]: INCRBYFLOAT / HINCRBYFLOAT in C `long double`
//!   (`longdouble.c`, built by `build.rs`) and Valkey 8 double replies.
//! * [`glob`]: `stringmatchlen` glob matching.
//! * [`time`]: wall-clock now in ms / µs.
//! * [`log_format`]: the log's line formats (`log-format`, `log-timestamp-format`).
//! * [`log_limit`]: at most one log line per period for an event strangers can cause.

mod dtoa;
pub mod float;
pub mod glob;
pub mod log_format;
pub mod log_limit;
pub mod num;
pub mod time;

/// Lua scripting prints command arguments that are not integers with it (`luaArgsToServerArgv`).
pub(crate) use dtoa::fpconv_dtoa;
pub use float::{
    FloatError, IncrexFloat, IncrexFloatArgs, IncrexFloatError, check_hincrbyfloat_increment,
    format_double, hincr_by_float, incr_by_float, increx_float, increx_float_check,
    increx_float_declined, is_valid_long_double,
};
pub use glob::glob_match;
pub use num::{format_i64, parse_f64, parse_i64};
pub use time::{now_ms, now_us};
