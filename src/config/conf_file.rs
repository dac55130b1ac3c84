//! `conf/tallykv.conf`, written from the directive table: the file operators read is the
//! table's defaults and comments, so the two cannot drift apart (a unit test compares them;
//! `TALLYKV_WRITE_CONF=1 cargo test -p tallykv --lib config` rewrites the file).

use super::spec::Access;
use super::table::SPECS;

/// How wide a section banner is.
const BANNER_WIDTH: usize = 78;

/// What the file says before the directives: how to use it and its syntax.
const HEADER: &str = r##"# tallykv configuration file
#
# Every directive tallykv understands is listed below with its default value,
# so running with this file unchanged is the same as running with no file.
#
# Start the server with a file and, optionally, overrides on the command line:
#
#   tallykv-server /path/to/tallykv.conf
#   tallykv-server /path/to/tallykv.conf --port 7000 --maxmemory 1gb
#   tallykv-server --port 7000 --bind 127.0.0.1 ::1
#
# Each "--directive" starts a new directive; the arguments after it are its
# values. Command-line arguments are applied after the file, so they win.
# A "-" as the first or last argument also reads configuration from stdin.
#
# Syntax is Valkey's: one directive per line, directive names are
# case-insensitive, "#" starts a comment line, and values may be quoted with
# "double quotes" (which understand \n, \t, \xHH, \" ...) or 'single quotes'.
# When a directive appears twice, the last one wins (except "save", see below).
#
# Sizes are written as Valkey writes them, case-insensitively:
#
#   1k => 1000 bytes         1kb => 1024 bytes
#   1m => 1000000 bytes      1mb => 1024*1024 bytes
#   1g => 1000000000 bytes   1gb => 1024*1024*1024 bytes
#
# or as a plain number of bytes. Negative sizes are rejected.
#
# Other files can be included; their directives apply at the point of the
# include. A relative path is relative to the directory tallykv is started
# from, and wildcards in the file name include every matching file:
#
# include /etc/tallykv/local.conf
# include /etc/tallykv/conf.d/*.conf
#
# Directives marked "CONFIG SET: yes" can be changed while the server runs
# with CONFIG SET; the others are read once at startup. CONFIG GET works for
# all of them (for cluster-secret it says only whether it is set). Unknown
# directives are a startup error: tallykv does not silently ignore settings it
# would not honour.
"##;

/// The documented config file: [`HEADER`], then every directive in table order with its
/// comment, whether `CONFIG SET` can change it, and its default. Running with it unchanged is
/// running with no file.
pub(super) fn render() -> String {
    let mut out = String::from(HEADER);
    for spec in SPECS {
        if let Some(title) = spec.section {
            out.push('\n');
            out.push_str(&banner(title));
            out.push('\n');
        }
        if !spec.doc.is_empty() {
            out.push('\n');
            for line in spec.doc {
                // A doc comment's text starts after `///` and one space.
                let line = line.strip_prefix(' ').unwrap_or(line);
                out.push_str(format!("# {line}").trim_end());
                out.push('\n');
            }
            out.push_str(match spec.access {
                Access::Mutable => "# CONFIG SET: yes.\n",
                Access::Immutable | Access::Protected => "# CONFIG SET: no.\n",
            });
        }
        let default = if spec.default.is_empty() {
            "\"\""
        } else {
            spec.default
        };
        out.push_str(&format!("{} {default}\n", spec.name));
    }
    out
}

/// `###### TITLE ######`, centred.
fn banner(title: &str) -> String {
    let hashes = BANNER_WIDTH.saturating_sub(title.len() + 2);
    let left = hashes / 2;
    format!("{} {title} {}", "#".repeat(left), "#".repeat(hashes - left))
}
