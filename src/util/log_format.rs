//! The server log's line formats (`log-format`, `log-timestamp-format`), as Valkey 8 writes
//! them, plus `json` for log shippers:
//!
//! ```text
//! legacy   12345:M 08 Dec 2026 01:20:00.123 * DB saved on disk keys=3 ms=400
//! logfmt   pid=12345 role=master timestamp="08 Dec 2026 01:20:00.123" level=notice message="DB saved on disk" keys=3 ms=400
//! json     {"pid":12345,"role":"master","timestamp":"08 Dec 2026 01:20:00.123","level":"notice","message":"DB saved on disk","keys":3,"ms":400}
//! ```
//!
//! Levels as Valkey names them (`.` debug, `-` verbose, `*` notice, `#` warning); an error is
//! `#` in the legacy format and `level=error` in the others. Timestamps are UTC: `legacy`
//! (`08 Dec 2026 01:20:00.123`), `iso8601` (`2026-12-08T01:20:00.123+00:00`) or `milliseconds`
//! (Unix ms). The role is `M`/`master` (a node is a primary of its own data, standalone or
//! in a cluster). Both directives follow CONFIG SET at once. No colour codes: a log is read
//! from files and pipes.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogTimestampFormat, Runtime};

/// The formatter; reads both directives from `runtime` on every line.
pub struct ValkeyFormat {
    pub runtime: Arc<Runtime>,
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    /// (name, value, whether the value is a number or boolean: unquoted in JSON).
    others: Vec<(&'static str, String, bool)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .push((field.name(), format!("{value:?}"), false));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.push((field.name(), value.to_owned(), false));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others.push((field.name(), value.to_string(), true));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others.push((field.name(), value.to_string(), true));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.push((field.name(), value.to_string(), true));
    }
}

/// The timestamp of `ms` (Unix ms) in `format`.
pub fn timestamp(ms: u64, format: LogTimestampFormat) -> String {
    if format == LogTimestampFormat::Milliseconds {
        return ms.to_string();
    }
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let month = &format!("{:?}", t.month())[..3];
    match format {
        LogTimestampFormat::Iso8601 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        _ => format!(
            "{:02} {month} {} {:02}:{:02}:{:02}.{:03}",
            t.day(),
            t.year(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
    }
}

fn level_names(level: &Level) -> (char, &'static str) {
    match *level {
        Level::TRACE => ('.', "debug"),
        Level::DEBUG => ('-', "verbose"),
        Level::INFO => ('*', "notice"),
        Level::WARN => ('#', "warning"),
        Level::ERROR => ('#', "error"),
    }
}

/// logfmt's value: bare when it is a plain word, else quoted with `"` and `\` escaped.
fn logfmt_value(out: &mut String, v: &str) {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if bare {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One line (without its newline).
pub fn line(
    format: LogFormat,
    ts: LogTimestampFormat,
    ms: u64,
    level: &Level,
    message: &str,
    others: &[(&str, String, bool)],
) -> String {
    let (mark, name) = level_names(level);
    // Read once: getpid is a system call, and the pid never changes (tallykv never forks).
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let stamp = timestamp(ms, ts);
    let mut out = String::with_capacity(96 + message.len());
    match format {
        LogFormat::Legacy => {
            let _ = write!(out, "{pid}:M {stamp} {mark} {message}");
            for (k, v, _) in others {
                let _ = write!(out, " {k}=");
                logfmt_value(&mut out, v);
            }
        }
        LogFormat::Logfmt => {
            let _ = write!(out, "pid={pid} role=master timestamp=");
            logfmt_value(&mut out, &stamp);
            let _ = write!(out, " level={name} message=");
            logfmt_value(&mut out, message);
            for (k, v, _) in others {
                let _ = write!(out, " {k}=");
                logfmt_value(&mut out, v);
            }
        }
        LogFormat::Json => {
            // Written by hand so the keys keep this order (serde_json's maps sort them).
            let json = |v: &str| serde_json::Value::from(v).to_string();
            let stamp = match ts {
                LogTimestampFormat::Milliseconds => stamp,
                _ => json(&stamp),
            };
            let _ = write!(
                out,
                "{{\"pid\":{pid},\"role\":\"master\",\"timestamp\":{stamp},\"level\":\"{name}\",\"message\":{}",
                json(message)
            );
            for (k, v, number) in others {
                let value = match number {
                    true => v.clone(),
                    false => json(v),
                };
                let _ = write!(out, ",{}:{value}", json(k));
            }
            out.push('}');
        }
    }
    out
}

impl<S, N> FormatEvent<S, N> for ValkeyFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let text = line(
            self.runtime.log_format(),
            self.runtime.log_timestamp_format(),
            crate::util::now_ms(),
            event.metadata().level(),
            &fields.message,
            &fields.others,
        );
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-08T01:20:00.123Z
    const MS: u64 = 1_796_692_800_123;

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp(MS, LogTimestampFormat::Legacy),
            "08 Dec 2026 01:20:00.123"
        );
        assert_eq!(
            timestamp(MS, LogTimestampFormat::Iso8601),
            "2026-12-08T01:20:00.123+00:00"
        );
        assert_eq!(
            timestamp(MS, LogTimestampFormat::Milliseconds),
            MS.to_string()
        );
    }

    #[test]
    fn the_three_formats() {
        let pid = std::process::id();
        let others = [
            ("keys", "3".to_string(), true),
            ("dir", "/a b".to_string(), false),
        ];
        let l = line(
            LogFormat::Legacy,
            LogTimestampFormat::Legacy,
            MS,
            &Level::INFO,
            "DB saved",
            &others,
        );
        assert_eq!(
            l,
            format!("{pid}:M 08 Dec 2026 01:20:00.123 * DB saved keys=3 dir=\"/a b\"")
        );
        let l = line(
            LogFormat::Legacy,
            LogTimestampFormat::Legacy,
            MS,
            &Level::WARN,
            "w",
            &[],
        );
        assert_eq!(l, format!("{pid}:M 08 Dec 2026 01:20:00.123 # w"));
        let l = line(
            LogFormat::Logfmt,
            LogTimestampFormat::Iso8601,
            MS,
            &Level::ERROR,
            "say \"x\"",
            &others,
        );
        assert_eq!(
            l,
            format!(
                "pid={pid} role=master timestamp=2026-12-08T01:20:00.123+00:00 level=error \
                 message=\"say \\\"x\\\"\" keys=3 dir=\"/a b\""
            )
        );
        let l = line(
            LogFormat::Json,
            LogTimestampFormat::Milliseconds,
            MS,
            &Level::DEBUG,
            "m\n2",
            &others,
        );
        assert!(
            l.starts_with(&format!(
                "{{\"pid\":{pid},\"role\":\"master\",\"timestamp\":{MS},"
            )),
            "{l}"
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["pid"], pid);
        assert_eq!(v["timestamp"], MS);
        assert_eq!(v["level"], "verbose");
        assert_eq!(v["message"], "m\n2");
        assert_eq!(v["keys"], 3);
        assert_eq!(v["dir"], "/a b");
        assert!(!l.contains('\n'));
    }
}
