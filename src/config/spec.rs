//! What a directive's table entry is made of ([`Spec`]), and the parsing, checking and
//! rendering every kind of value gets from it. The reason texts are Valkey's where Valkey
//! has the directive.

use super::enums;
use super::parse;
use super::table::Key;

/// The most addresses `bind` takes (Valkey's `CONFIG_BINDADDR_MAX`).
const MAX_BIND_ADDRS: usize = 16;

pub(super) const INT_MIN: i64 = i32::MIN as i64;
pub(super) const INT_MAX: i64 = i32::MAX as i64;
pub(super) const LONG_MAX: i64 = i64::MAX;
pub(super) const MB: u64 = 1024 * 1024;

/// Whether `CONFIG SET` may change a directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    Mutable,
    /// Valkey's `IMMUTABLE_CONFIG`: startup only.
    Immutable,
    /// Valkey's `PROTECTED_CONFIG` with `enable-protected-configs no` (its default).
    Protected,
}

/// One directive: a row of [`super::table::SPECS`], written with the `directives!` macro.
pub(super) struct Spec {
    pub key: Key,
    pub name: &'static str,
    /// An old name it also answers to (a separate entry for `CONFIG GET *`, as in Valkey).
    pub alias: Option<&'static str>,
    pub access: Access,
    /// Valkey's `SENSITIVE_CONFIG`: the value is never logged nor shown by `Debug`.
    pub sensitive: bool,
    pub kind: Kind,
    /// The default as a config file line writes it (`""` there when this is empty).
    pub default: &'static str,
    /// Its comment in `conf/tallykv.conf`, line by line. Empty: the entry above describes it
    /// too (the two are listed together, and must share their `access`).
    pub doc: &'static [&'static str],
    /// Starts a section of `conf/tallykv.conf` with this title.
    pub section: Option<&'static str>,
}

/// The type of a directive's value, which decides how it is parsed, checked, stored and
/// rendered.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// An integer (see [`int`], [`unsigned`], [`memory`], [`clamped`]).
    Int(Num),
    /// `yes` or `no`.
    Bool,
    /// One of these names (a [`enums::ConfigEnum`]'s `NAMES`), stored as its index.
    Enum(&'static [&'static str]),
    /// Any UTF-8 string.
    Str,
    /// A value with a syntax of its own.
    Special(&'static Special),
}

/// Bounds and syntax of an integer directive (Valkey's `numericConfigData`).
#[derive(Clone, Copy)]
pub(super) struct Num {
    min: i128,
    max: i128,
    /// Valkey's `MEMORY_CONFIG`: accepts units, rejects anything negative.
    memory: bool,
    /// The C type is unsigned: a negative integer wraps to a huge value and
    /// fails the bounds check rather than the syntax check.
    unsigned: bool,
    /// Accepted values are clamped to this range (`hz`).
    clamp: Option<(i64, i64)>,
}

/// A signed integer between `min` and `max`.
pub(super) const fn int(min: i64, max: i64) -> Kind {
    Kind::Int(Num {
        min: min as i128,
        max: max as i128,
        memory: false,
        unsigned: false,
        clamp: None,
    })
}

/// An unsigned integer between `min` and `max` (`-1` is out of range, not malformed).
pub(super) const fn unsigned(min: u64, max: u64) -> Kind {
    Kind::Int(Num {
        min: min as i128,
        max: max as i128,
        memory: false,
        unsigned: true,
        clamp: None,
    })
}

/// A byte count between `min` and `max`, with units (`1k`, `1kb`, `512mb`...).
pub(super) const fn memory(min: u64, max: u64) -> Kind {
    Kind::Int(Num {
        min: min as i128,
        max: max as i128,
        memory: true,
        unsigned: true,
        clamp: None,
    })
}

/// A signed integer between `min` and `max`, then clamped to `lo..=hi`.
pub(super) const fn clamped(min: i64, max: i64, lo: i64, hi: i64) -> Kind {
    Kind::Int(Num {
        min: min as i128,
        max: max as i128,
        memory: false,
        unsigned: false,
        clamp: Some((lo, hi)),
    })
}

/// A value with a syntax of its own.
pub(super) struct Special {
    /// Valkey's `MULTI_ARG_CONFIG`: takes any number of arguments.
    pub multi: bool,
    pub parse: fn(&[Vec<u8>]) -> Result<Value, String>,
    /// The value as `CONFIG GET` shows it.
    pub render: fn(&Value) -> String,
    /// How a line of the configuration combines with what was set before it: given the
    /// value so far, the line's value and whether this is the first line of the
    /// configuration setting it. None: the line replaces it (`CONFIG SET` always does).
    pub merge: Option<fn(Value, Value, bool) -> Value>,
}

/// A parsed, checked value of a directive. Numbers, booleans (0/1) and enums (the index)
/// are `Num`, kept in an atomic so the data path reads them without a lock.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// Negative integers in two's complement.
    Num(u64),
    Text(String),
    List(Vec<String>),
    /// `save`'s (seconds, changes) pairs.
    Pairs(Vec<(u64, u64)>),
}

impl Spec {
    /// Valkey's `MULTI_ARG_CONFIG`: takes any number of arguments.
    pub fn multi(&self) -> bool {
        matches!(self.kind, Kind::Special(s) if s.multi)
    }

    /// Parse and check the arguments of one setting.
    pub fn parse(&self, args: &[Vec<u8>]) -> Result<Value, String> {
        if let Kind::Special(s) = self.kind {
            return (s.parse)(args);
        }
        let [arg] = args else {
            return Err("wrong number of arguments".to_string());
        };
        Ok(match self.kind {
            Kind::Int(n) => Value::Num(parse_num(arg, n)?),
            Kind::Bool => Value::Num(u64::from(yes_no(arg)?)),
            Kind::Enum(names) => {
                Value::Num(enums::position(names, arg).ok_or_else(|| enums::error(names))? as u64)
            }
            Kind::Str => Value::Text(utf8(arg)?),
            Kind::Special(_) => unreachable!("handled above"),
        })
    }

    /// The value as `CONFIG GET` shows it.
    pub fn render(&self, value: &Value) -> String {
        match (self.kind, value) {
            (Kind::Int(n), &Value::Num(v)) if n.min < 0 => (v as i64).to_string(),
            (Kind::Int(_), Value::Num(v)) => v.to_string(),
            (Kind::Bool, &Value::Num(v)) => yes_no_text(v != 0).to_string(),
            (Kind::Enum(names), &Value::Num(v)) => names[v as usize].to_string(),
            (Kind::Str, Value::Text(s)) => s.clone(),
            (Kind::Special(s), v) => (s.render)(v),
            (_, v) => unreachable!("{} holds {v:?}", self.name),
        }
    }

    /// The default, parsed: what a directive holds until a setting changes it.
    pub fn default_value(&self) -> Value {
        let args = if self.default.is_empty() {
            vec![Vec::new()]
        } else if self.multi() {
            parse::split_args(self.default.as_bytes()).unwrap_or_default()
        } else {
            vec![self.default.as_bytes().to_vec()]
        };
        // The table's defaults are checked by a unit test (`every_default_parses`).
        self.parse(&args)
            .unwrap_or_else(|e| panic!("the default of {} is invalid: {e}", self.name))
    }
}

pub(super) fn utf8(arg: &[u8]) -> Result<String, String> {
    String::from_utf8(arg.to_vec()).map_err(|_| "argument must be valid UTF-8".to_string())
}

fn yes_no(arg: &[u8]) -> Result<bool, String> {
    parse::yesno(arg).ok_or_else(|| "argument must be 'yes' or 'no'".to_string())
}

fn yes_no_text(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Valkey's `numericParseString` + `numericBoundaryCheck`.
fn parse_num(arg: &[u8], n: Num) -> Result<u64, String> {
    let v: i128 = if n.memory {
        i128::from(parse::memtoull(arg).ok_or("argument must be a memory value")?)
    } else {
        let v = parse::string2ll(arg).ok_or("argument couldn't be parsed into an integer")?;
        if n.unsigned {
            i128::from(v as u64)
        } else {
            i128::from(v)
        }
    };
    if v < n.min || v > n.max {
        return Err(format!(
            "argument must be between {} and {} inclusive",
            n.min, n.max
        ));
    }
    let v = match n.clamp {
        Some((lo, hi)) => v.clamp(i128::from(lo), i128::from(hi)),
        None => v,
    };
    // Two's complement for the negative ones (`list-max-listpack-size`).
    Ok(if v < 0 { v as i64 as u64 } else { v as u64 })
}

fn one(args: &[Vec<u8>]) -> Result<&[u8], String> {
    match args {
        [a] => Ok(a),
        _ => Err("wrong number of arguments".to_string()),
    }
}

// ---------------------------------------------------------------------------
// The special kinds
// ---------------------------------------------------------------------------

fn render_list(v: &Value, sep: &str) -> String {
    match v {
        Value::List(items) => items.join(sep),
        other => unreachable!("a list directive holds {other:?}"),
    }
}

/// `bind addr ...`: at most 16 addresses; `bind ""` means the default (`* -::*`), which is
/// also what Valkey listens on then.
pub(super) const BIND: Special = Special {
    multi: true,
    parse: |args| {
        if args.len() > MAX_BIND_ADDRS {
            return Err("Too many bind addresses specified.".to_string());
        }
        match args {
            [a] if a.is_empty() => Ok(Value::List(vec!["*".into(), "-::*".into()])),
            _ => Ok(Value::List(
                args.iter().map(|a| utf8(a)).collect::<Result<_, _>>()?,
            )),
        }
    },
    render: |v| render_list(v, " "),
    merge: None,
};

/// `save <seconds> <changes> ...`. In a file, as in Valkey, the first `save` line replaces
/// the default, later lines add to it, and `save ""` empties the list.
pub(super) const SAVE: Special = Special {
    multi: true,
    parse: |args| {
        let args = match args {
            [a] if a.is_empty() => &args[..0],
            _ => args,
        };
        if args.len() % 2 == 1 {
            return Err("Invalid save parameters".to_string());
        }
        let mut pairs = Vec::with_capacity(args.len() / 2);
        for pair in args.chunks(2) {
            let num = |a: &[u8]| {
                std::str::from_utf8(a)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
            };
            match (num(&pair[0]), num(&pair[1])) {
                (Some(secs), Some(changes)) if secs >= 1 && changes >= 0 => {
                    pairs.push((secs as u64, changes as u64))
                }
                _ => return Err("Invalid save parameters".to_string()),
            }
        }
        Ok(Value::Pairs(pairs))
    },
    render: |v| match v {
        Value::Pairs(pairs) => {
            let pairs: Vec<String> = pairs.iter().map(|(s, c)| format!("{s} {c}")).collect();
            pairs.join(" ")
        }
        other => unreachable!("save holds {other:?}"),
    },
    merge: Some(|before, line, first| match (before, line) {
        (Value::Pairs(mut before), Value::Pairs(line)) if !first && !line.is_empty() => {
            before.extend(line);
            Value::Pairs(before)
        }
        (_, line) => line,
    }),
};

/// `user <name> <rule> ...`: a user created at startup, one line each (Valkey's `user`
/// directive; `--user "name rules..."` on the command line). The rules are checked as the line
/// is read, so a bad one stops the server naming its line, and kept as ACL LIST shows the
/// user, a `>password` as its digest. Every line adds a user (naming one twice is refused once
/// the whole configuration is read, as `Loader::finish` checks). `user ""` (the documented
/// default) adds none.
pub(super) const USER: Special = Special {
    multi: true,
    parse: |args| match args {
        [a] if a.is_empty() => Ok(Value::List(Vec::new())),
        _ => crate::security::acl::declaration(args).map(|user| Value::List(vec![user])),
    },
    render: |v| render_list(v, ", "),
    merge: Some(|before, line, _| match (before, line) {
        (Value::List(mut users), Value::List(line)) => {
            users.extend(line);
            Value::List(users)
        }
        (_, line) => line,
    }),
};

/// `cluster-peers host:port,host:port,...`.
pub(super) const PEERS: Special = Special {
    multi: false,
    parse: |args| {
        let list = utf8(one(args)?)?;
        let peers: Vec<String> = list
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        for p in &peers {
            super::parse_host_port(p)?;
        }
        Ok(Value::List(peers))
    },
    render: |v| render_list(v, ","),
    merge: None,
};

/// A secret only the config file should hold (`cluster-secret`): any string, which
/// `CONFIG GET` never shows — it says `<set>`, or nothing when empty — since a client allowed
/// CONFIG GET is not thereby allowed onto the bus. Its length is checked once the whole
/// configuration is loaded (`Loader::finish`), where the error cannot quote the line.
pub(super) const SECRET: Special = Special {
    multi: false,
    parse: |args| Ok(Value::Text(utf8(one(args)?)?)),
    render: |v| match v {
        Value::Text(secret) if secret.is_empty() => String::new(),
        Value::Text(_) => "<set>".to_string(),
        other => unreachable!("a secret holds {other:?}"),
    },
    merge: None,
};

/// `dir`: never empty; `CONFIG GET dir` answers with the absolute path, as Valkey (which
/// answers with its working directory).
pub(super) const DIR: Special = Special {
    multi: false,
    parse: |args| {
        let dir = utf8(one(args)?)?;
        if dir.is_empty() {
            return Err("dir can't be empty".to_string());
        }
        Ok(Value::Text(dir))
    },
    render: |v| match v {
        Value::Text(dir) => std::path::absolute(dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dir.clone()),
        other => unreachable!("dir holds {other:?}"),
    },
    merge: None,
};

/// `daemonize`: only `no`; tallykv runs in the foreground.
pub(super) const DAEMONIZE: Special = Special {
    multi: false,
    parse: |args| {
        if yes_no(one(args)?)? {
            return Err(
                "tallykv cannot daemonize: the argument must be 'no' (run it in the foreground \
                 under a supervisor such as systemd)"
                    .to_string(),
            );
        }
        Ok(Value::Num(0))
    },
    render: |_| "no".to_string(),
    merge: None,
};

/// `rename-command <command> <new-name>`, or `""` as the new name to hide it; each line
/// adds one, in order. Held as a flat list of (from, to) pairs. The command table applies
/// them at startup (`command::table::rename_commands`), which also checks that a new name
/// is free.
pub(super) const RENAME: Special = Special {
    multi: true,
    parse: |args| match args {
        [a] if a.is_empty() => Ok(Value::List(Vec::new())),
        [from, to] => {
            let from = utf8(from)?;
            if crate::command::table::lookup(from.as_bytes()).is_none() {
                return Err("No such command in rename-command".to_string());
            }
            Ok(Value::List(vec![from, utf8(to)?]))
        }
        _ => Err("wrong number of arguments".to_string()),
    },
    render: |v| match v {
        Value::List(pairs) => {
            let pairs: Vec<String> = pairs
                .chunks(2)
                .map(|p| match p[1].as_str() {
                    "" => format!("{} \"\"", p[0]),
                    to => format!("{} {to}", p[0]),
                })
                .collect();
            pairs.join(" ")
        }
        other => unreachable!("rename-command holds {other:?}"),
    },
    merge: Some(|before, line, _first| match (before, line) {
        (Value::List(mut before), Value::List(line)) => {
            before.extend(line);
            Value::List(before)
        }
        (_, line) => line,
    }),
};
