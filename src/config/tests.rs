use super::enums::ConfigEnum;
use super::parse::{memtoull, repr, split_args, string2ll};
use super::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tallykv-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn from_args(list: &[&str]) -> Result<Config, ConfigError> {
    Config::from_args(&args(list))
}

fn from_file(text: &str) -> Result<Config, ConfigError> {
    let dir = TempDir::new();
    let path = dir.file("test.conf", text);
    Config::from_args(&[path])
}

fn get1(cfg: &Config, name: &str) -> String {
    let got = cfg.get(&[name.as_bytes()]);
    assert_eq!(got.len(), 1, "CONFIG GET {name} gave {got:?}");
    got[0].1.clone()
}

fn set(cfg: &Config, pairs: &[(&str, &str)]) -> Result<(), String> {
    let pairs: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    cfg.set(&pairs)
}

fn reason(r: Result<Config, ConfigError>) -> String {
    r.expect_err("expected a config error").reason().to_string()
}

// --- low-level parsers ------------------------------------------------------

#[test]
fn split_args_follows_sdssplitargs() {
    let s = |line: &str| {
        split_args(line.as_bytes()).map(|v| {
            v.into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        s("  port   6379 "),
        Some(vec!["port".into(), "6379".into()])
    );
    assert_eq!(
        s(r#"requirepass "a b\"c\n""#),
        Some(vec!["requirepass".into(), "a b\"c\n".into()])
    );
    assert_eq!(s(r#"x "\x41\x62""#), Some(vec!["x".into(), "Ab".into()]));
    assert_eq!(
        s(r"x 'it\'s \n'"),
        Some(vec!["x".into(), "it's \\n".into()])
    );
    assert_eq!(
        s(r#"x a"b c"d"#),
        None,
        "closing quote must be followed by a blank"
    );
    assert_eq!(s(r#"x a"b c""#), Some(vec!["x".into(), "ab c".into()]));
    assert_eq!(s(r#"x """#), Some(vec!["x".into(), "".into()]));
    assert_eq!(s(r#"x "unterminated"#), None);
    assert_eq!(s("x 'unterminated"), None);
    assert_eq!(s("   "), Some(vec![]));
}

#[test]
fn repr_round_trips_through_split_args() {
    for arg in [
        "plain",
        "with space",
        "quote\"back\\slash",
        "tab\tnl\ncr\r",
        "",
        "ünïcode",
        "\x07\x08\x01",
    ] {
        let line = format!("x {}", repr(arg.as_bytes()));
        assert_eq!(
            split_args(line.as_bytes()).unwrap()[1],
            arg.as_bytes(),
            "{line}"
        );
    }
    assert_eq!(repr(b"1gb"), "\"1gb\"");
}

#[test]
fn string2ll_is_strict() {
    assert_eq!(string2ll(b"0"), Some(0));
    assert_eq!(string2ll(b"-12"), Some(-12));
    assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        "",
        "-",
        "+1",
        "01",
        "-0",
        " 1",
        "1 ",
        "1.5",
        "9223372036854775808",
        "12a",
    ] {
        assert_eq!(string2ll(bad.as_bytes()), None, "{bad:?}");
    }
}

#[test]
fn memory_units_match_valkey() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("100", 100),
        ("100b", 100),
        ("1k", 1000),
        ("1kb", 1024),
        ("1K", 1000),
        ("1KB", 1024),
        ("1m", 1_000_000),
        ("1mb", 1_048_576),
        ("1Mb", 1_048_576),
        ("1g", 1_000_000_000),
        ("1gb", 1_073_741_824),
        ("512mb", 536_870_912),
        ("18446744073709551615", u64::MAX),
    ];
    for &(text, bytes) in cases {
        assert_eq!(memtoull(text.as_bytes()), Some(bytes), "{text}");
    }
    for bad in [
        "",
        "-1",
        "-1gb",
        "1tb",
        "1.5gb",
        "gb",
        " 1",
        "1 gb",
        "18446744073709551616",
        "17179869184gb",
    ] {
        assert_eq!(memtoull(bad.as_bytes()), None, "{bad:?}");
    }
}

// --- config files -------------------------------------------------------------

#[test]
fn file_sets_values_with_comments_quotes_and_any_case() {
    let cfg = from_file(
        "# a comment\n\
         \n\
         PORT 7000\r\n\
         \tmaxmemory 100mb   \n\
         Maxmemory-Policy ALLKEYS-LRU\n\
         requirepass \"p a ss\"\n\
         logfile ''\n\
         bind 127.0.0.1 -::1\n\
         protected-mode NO\n\
         hash-max-ziplist-entries 256\n\
         hz 100\n\
         threads 4\n\
         dir /var/lib/tallykv\n",
    )
    .unwrap();
    let rt = &cfg.runtime;
    assert_eq!(cfg.port, 7000);
    assert_eq!(rt.maxmemory(), 100 * 1024 * 1024);
    assert_eq!(rt.maxmemory_policy(), MaxmemoryPolicy::AllKeysLru);
    assert_eq!(rt.requirepass().as_deref(), Some("p a ss"));
    assert_eq!(cfg.logfile, "");
    assert_eq!(cfg.bind, vec!["127.0.0.1", "-::1"]);
    assert_eq!(
        cfg.bind_addrs(),
        vec![
            BindAddr {
                host: "127.0.0.1".into(),
                optional: false
            },
            BindAddr {
                host: "::1".into(),
                optional: true
            }
        ]
    );
    assert!(!rt.protected_mode());
    assert_eq!(rt.hash_max_listpack_entries(), 256);
    assert_eq!(rt.hz(), 100);
    assert_eq!(cfg.threads, 4);
    assert_eq!(cfg.dir, PathBuf::from("/var/lib/tallykv"));
    assert!(cfg.config_file.as_ref().unwrap().is_absolute());
}

#[test]
fn unknown_directive_reports_file_line_and_text() {
    let dir = TempDir::new();
    let path = dir.file(
        "bad.conf",
        "port 7000\n# comment\nmaxmemroy 1gb\nport 7001\n",
    );
    let err = Config::from_args(std::slice::from_ref(&path)).unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert_eq!(err.directive(), Some("maxmemroy"));
    assert_eq!(
        err.to_string(),
        format!(
            "*** FATAL CONFIG FILE ERROR (Version {VERSION}) ***\n\
             Reading the configuration file '{path}', at line 3\n\
             >>> 'maxmemroy 1gb'\n\
             Bad directive or wrong number of arguments"
        )
    );
}

#[test]
fn bad_values_use_valkey_reasons() {
    let cases: &[(&str, &str)] = &[
        ("maxmemory 1tb", "argument must be a memory value"),
        ("maxmemory -1", "argument must be a memory value"),
        ("protected-mode maybe", "argument must be 'yes' or 'no'"),
        ("port 70a", "argument couldn't be parsed into an integer"),
        (
            "port 65536",
            "argument must be between 0 and 65535 inclusive",
        ),
        (
            "maxmemory-samples 0",
            "argument must be between 1 and 64 inclusive",
        ),
        (
            "maxclients 0",
            "argument must be between 1 and 4294967295 inclusive",
        ),
        (
            "maxclients -1",
            "argument must be between 1 and 4294967295 inclusive",
        ),
        (
            "timeout -1",
            "argument must be between 0 and 2147483647 inclusive",
        ),
        (
            "proto-max-bulk-len 1000",
            "argument must be between 1048576 and 4293918720 inclusive",
        ),
        (
            "proto-max-bulk-len 4gb",
            "argument must be between 1048576 and 4293918720 inclusive",
        ),
        (
            "client-query-buffer-limit 1k",
            "argument must be between 1048576 and 9223372036854775807 inclusive",
        ),
        (
            "hash-max-listpack-entries -1",
            "argument must be between 0 and 9223372036854775807 inclusive",
        ),
        (
            "databases 0",
            "argument must be between 1 and 2147483647 inclusive",
        ),
        (
            "maxmemory-policy lru",
            "argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, \
             volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction",
        ),
        (
            "loglevel loud",
            "argument(s) must be one of the following: debug, verbose, notice, warning, nothing",
        ),
        (
            "appendfsync sometimes",
            "argument(s) must be one of the following: everysec, always, no",
        ),
        ("save 900", "Invalid save parameters"),
        ("save 0 1", "Invalid save parameters"),
        ("save 900 x", "Invalid save parameters"),
        ("dir \"\"", "dir can't be empty"),
        ("port 1 2", "wrong number of arguments"),
        ("maxmemory", "wrong number of arguments"),
        ("port \"7000", "Unbalanced quotes in configuration line"),
        ("include", "Bad directive or wrong number of arguments"),
        (
            "bind 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
            "Too many bind addresses specified.",
        ),
    ];
    for &(line, want) in cases {
        let err = from_file(&format!("\n{line}\n")).unwrap_err();
        assert_eq!(err.reason(), want, "{line}");
        assert_eq!(err.line(), Some(2), "{line}");
    }
    assert!(reason(from_file("daemonize yes")).contains("must be 'no'"));
    assert!(from_file("daemonize no").is_ok());
}

#[test]
fn save_lines_accumulate_and_empty_clears() {
    let cfg = from_file("save 3600 1\nsave 300 100 60 10000\n").unwrap();
    assert_eq!(
        cfg.runtime.save_params(),
        vec![(3600, 1), (300, 100), (60, 10000)]
    );
    assert_eq!(get1(&cfg, "save"), "3600 1 300 100 60 10000");
    let cfg = from_file("save 3600 1\nsave \"\"\nsave 60 5\n").unwrap();
    assert_eq!(get1(&cfg, "save"), "60 5");
    // One argument holding the pairs, as `--save "900 1"` produces.
    let cfg = from_file("save \"900 1 60 2\"\n").unwrap();
    assert_eq!(get1(&cfg, "save"), "900 1 60 2");
}

#[test]
fn hz_is_clamped_like_valkey() {
    assert_eq!(from_file("hz 0").unwrap().runtime.hz(), 1);
    assert_eq!(from_file("hz 100000").unwrap().runtime.hz(), 500);
    assert_eq!(
        reason(from_file("hz -1")),
        "argument must be between 0 and 2147483647 inclusive"
    );
}

#[test]
fn empty_bind_means_default() {
    let cfg = from_file("bind \"\"").unwrap();
    assert_eq!(cfg.bind, vec!["*", "-::*"]);
    assert_eq!(
        cfg.bind_addrs(),
        vec![
            BindAddr {
                host: "0.0.0.0".into(),
                optional: false
            },
            BindAddr {
                host: "::".into(),
                optional: true
            }
        ]
    );
}

#[test]
fn missing_file_is_an_open_error() {
    let err = from_args(&["/nonexistent/tallykv.conf"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Fatal error, can't open config file '/nonexistent/tallykv.conf': No such file or directory"
    );
}

#[test]
fn unwritable_logfile_is_reported_like_valkey() {
    let err = from_args(&["--logfile", "/nonexistent/dir/tallykv.log"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "*** FATAL CONFIG FILE ERROR (Version {VERSION}) ***\nCan't open the log file: No such file or directory"
        )
    );
}

#[test]
fn include_loads_in_place_and_reports_its_own_lines() {
    let dir = TempDir::new();
    let inc = dir.file("inc.conf", "maxmemory 2mb\nport 7001\n");
    let main = dir.file(
        "main.conf",
        &format!("port 7000\ninclude {inc}\nmaxmemory 3mb\n"),
    );
    let cfg = Config::from_args(&[main]).unwrap();
    assert_eq!(cfg.port, 7001, "include applies where it stands");
    assert_eq!(
        cfg.runtime.maxmemory(),
        3 * MB,
        "later lines override the include"
    );

    let bad = dir.file("bad.conf", "\n\nmaxmemory lots\n");
    let main = dir.file("main2.conf", &format!("include {bad}\n"));
    let err = Config::from_args(&[main]).unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(
        err.to_string().contains(&format!(
            "Reading the configuration file '{bad}', at line 3"
        )),
        "{err}"
    );

    let main = dir.file("main3.conf", "include /nonexistent/x.conf\n");
    assert!(matches!(
        Config::from_args(&[main]),
        Err(ConfigError::Open { .. })
    ));

    let main = dir.file("loop.conf", "");
    std::fs::write(&main, format!("include {main}\n")).unwrap();
    assert!(reason(Config::from_args(&[main])).contains("too deep"));
}

#[test]
fn include_wildcards_load_matching_files_sorted() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.0.join("conf.d")).unwrap();
    dir.file("conf.d/10-a.conf", "port 7000\nmaxmemory 1mb\n");
    dir.file("conf.d/20-b.conf", "port 7002\n");
    dir.file("conf.d/ignored.txt", "port 1\n");
    let pattern = dir.0.join("conf.d/*.conf");
    let main = dir.file(
        "main.conf",
        &format!(
            "include {}\ninclude {}/none-*.conf\n",
            pattern.display(),
            dir.0.display()
        ),
    );
    let cfg = Config::from_args(&[main]).unwrap();
    assert_eq!(cfg.port, 7002);
    assert_eq!(cfg.runtime.maxmemory(), MB);
}

// --- command line -----------------------------------------------------------

#[test]
fn arguments_override_the_file() {
    let dir = TempDir::new();
    let path = dir.file("t.conf", "port 7000\nmaxmemory 1mb\nloglevel debug\n");
    let cfg = from_args(&[&path, "--port", "7001", "--maxmemory", "2gb"]).unwrap();
    assert_eq!(cfg.port, 7001);
    assert_eq!(cfg.runtime.maxmemory(), 2 * 1024 * MB);
    assert_eq!(cfg.runtime.loglevel(), LogLevel::Debug);
}

#[test]
fn arguments_without_a_file() {
    let cfg = from_args(&[
        "--port",
        "7000",
        "--bind",
        "127.0.0.1",
        "::1",
        "--requirepass",
        "with space",
    ])
    .unwrap();
    assert_eq!(cfg.port, 7000);
    assert_eq!(cfg.bind, vec!["127.0.0.1", "::1"]);
    assert_eq!(cfg.runtime.requirepass().as_deref(), Some("with space"));
    assert_eq!(cfg.config_file, None);
    // Name and value in one argument, and several values in one argument.
    let cfg = from_args(&["--port 7002", "--bind", "127.0.0.1 ::1"]).unwrap();
    assert_eq!(cfg.port, 7002);
    assert_eq!(cfg.bind, vec!["127.0.0.1", "::1"]);
    // A directive with no value yet takes the next argument even if it starts with "--".
    let cfg = from_args(&["--requirepass", "--weird", "--port", "7003"]).unwrap();
    assert_eq!(cfg.runtime.requirepass().as_deref(), Some("--weird"));
    assert_eq!(cfg.port, 7003);
    // No arguments at all: the defaults.
    assert_eq!(from_args(&[]).unwrap().port, 6379);
}

#[test]
fn empty_save_on_the_command_line() {
    let cfg = from_args(&["--save", "--port", "7000"]).unwrap();
    assert_eq!(get1(&cfg, "save"), "");
    assert_eq!(cfg.port, 7000);
    let cfg = from_args(&["--port", "7000", "--save"]).unwrap();
    assert_eq!(get1(&cfg, "save"), "");
    let cfg = from_args(&["--save", "900", "1", "--save", "60", "100"]).unwrap();
    assert_eq!(get1(&cfg, "save"), "900 1 60 100");
}

#[test]
fn argument_errors_read_like_valkey() {
    let err = from_args(&["--port", "7000", "--maxmemroy", "1gb"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "*** FATAL CONFIG FILE ERROR (Version {VERSION}) ***\n\
             Reading the configuration file, at line 3\n\
             >>> 'maxmemroy \"1gb\"'\n\
             Bad directive or wrong number of arguments"
        )
    );
    assert_eq!(err.directive(), Some("maxmemroy"));
    assert_eq!(
        reason(from_args(&["--maxmemory", "lots"])),
        "argument must be a memory value"
    );
    assert_eq!(reason(from_args(&["--port"])), "wrong number of arguments");

    // After a file, argument lines are numbered after the file's lines.
    let dir = TempDir::new();
    let path = dir.file("t.conf", "port 7000\nhz 10\n");
    let err = from_args(&[&path, "--hz", "x"]).unwrap_err();
    assert_eq!(err.line(), Some(4));
    assert!(matches!(
        &err,
        ConfigError::Line {
            source: ConfigSource::CommandLine,
            ..
        }
    ));
}

// --- CONFIG GET -------------------------------------------------------------

#[test]
fn config_get_globs_and_renders_like_valkey() {
    let cfg = Config::default();
    let all = cfg.get(&[b"*"]);
    assert_eq!(
        all.len(),
        SPECS.len() + 6,
        "every directive plus the six aliases"
    );

    let mut mm: Vec<String> = cfg
        .get(&[b"maxmemory*"])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    mm.sort();
    assert_eq!(
        mm,
        vec!["maxmemory", "maxmemory-policy", "maxmemory-samples"]
    );

    // Case-insensitive patterns, each directive once even when matched twice.
    let got = cfg.get(&[b"MAXMEMORY-P*", b"*-policy", b"maxmemory-policy"]);
    assert_eq!(
        got,
        vec![("maxmemory-policy".to_string(), "noeviction".to_string())]
    );

    // Exact names answer under the client's spelling, as Valkey does.
    assert_eq!(
        cfg.get(&[b"PORT"]),
        vec![("PORT".to_string(), "6379".to_string())]
    );
    assert_eq!(cfg.get(&[b"hash-max-ziplist-entries"])[0].1, "128");
    assert_eq!(cfg.get(&[b"no-such-thing", b"nope*"]), vec![]);
    assert_eq!(cfg.get(&[b"hash-max-*-value"]).len(), 2);
    assert_eq!(
        cfg.get(&[b"appendfsyn?"]),
        vec![("appendfsync".into(), "everysec".into())]
    );

    assert_eq!(get1(&cfg, "bind"), "* -::*");
    assert_eq!(get1(&cfg, "proto-max-bulk-len"), "536870912");
    assert_eq!(get1(&cfg, "client-query-buffer-limit"), "1073741824");
    assert_eq!(get1(&cfg, "protected-mode"), "yes");
    assert_eq!(get1(&cfg, "daemonize"), "no");
    assert_eq!(get1(&cfg, "save"), "");
    assert_eq!(get1(&cfg, "appendonly"), "yes");
    assert_eq!(get1(&cfg, "databases"), "16");
    assert!(Path::new(&get1(&cfg, "dir")).is_absolute());
}

// --- CONFIG SET -------------------------------------------------------------

#[test]
fn config_set_changes_runtime_values() {
    let cfg = Config::default();
    let rt = Arc::clone(&cfg.runtime);
    set(
        &cfg,
        &[
            ("maxmemory", "10mb"),
            ("MAXMEMORY-POLICY", "allkeys-lfu"),
            ("hz", "1000"),
        ],
    )
    .unwrap();
    assert_eq!(rt.maxmemory(), 10 * MB);
    assert_eq!(rt.maxmemory_policy(), MaxmemoryPolicy::AllKeysLfu);
    assert_eq!(rt.hz(), 500);
    assert_eq!(get1(&cfg, "maxmemory"), "10485760");

    set(
        &cfg,
        &[
            ("timeout", "30"),
            ("tcp-keepalive", "0"),
            ("loglevel", "WARNING"),
        ],
    )
    .unwrap();
    assert_eq!(rt.idle_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(rt.tcp_keepalive(), None);
    assert_eq!(rt.loglevel(), LogLevel::Warning);

    set(
        &cfg,
        &[
            ("save", "900 1 300 10"),
            ("appendfsync", "always"),
            ("hash-max-ziplist-value", "1kb"),
        ],
    )
    .unwrap();
    assert_eq!(rt.save_params(), vec![(900, 1), (300, 10)]);
    assert_eq!(rt.appendfsync(), AppendFsync::Always);
    assert_eq!(rt.hash_max_listpack_value(), 1024);
    set(&cfg, &[("save", "")]).unwrap();
    assert_eq!(get1(&cfg, "save"), "");
}

#[test]
fn config_set_is_all_or_nothing() {
    let cfg = Config::default();
    let err = set(
        &cfg,
        &[
            ("maxmemory", "10mb"),
            ("maxmemory-samples", "100"),
            ("hz", "20"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err,
        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-samples') - \
         argument must be between 1 and 64 inclusive"
    );
    assert_eq!(cfg.runtime.maxmemory(), 0, "nothing applied");
    assert_eq!(cfg.runtime.hz(), 10);
}

#[test]
fn config_set_error_texts() {
    let cfg = Config::default();
    assert_eq!(
        set(&cfg, &[("maxmemory", "1mb"), ("no-such", "1")]).unwrap_err(),
        "ERR Unknown option or number of arguments for CONFIG SET - 'no-such'"
    );
    assert_eq!(
        set(&cfg, &[("Port", "7000")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'Port') - can't set immutable config"
    );
    assert_eq!(
        set(&cfg, &[("dir", "/tmp")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'dir') - can't set protected config"
    );
    for name in [
        "bind",
        "logfile",
        "threads",
        "databases",
        "daemonize",
        "pidfile",
    ] {
        assert!(
            set(&cfg, &[(name, "x")])
                .unwrap_err()
                .ends_with("can't set immutable config"),
            "{name}"
        );
    }
    assert_eq!(
        set(&cfg, &[("maxmemory", "1mb"), ("MaxMemory", "2mb")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'MaxMemory') - duplicate parameter"
    );
    assert_eq!(
        set(
            &cfg,
            &[
                ("hash-max-listpack-entries", "1"),
                ("hash-max-ziplist-entries", "2")
            ]
        )
        .unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'hash-max-ziplist-entries') - duplicate parameter"
    );
    assert_eq!(
        set(&cfg, &[("MAXMEMORY", "lots")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
    );
    assert_eq!(
        set(&cfg, &[("hash-max-ziplist-value", "-1")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'hash-max-ziplist-value') - \
         argument must be a memory value"
    );
    assert_eq!(
        set(&cfg, &[("protected-mode", "on")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'protected-mode') - argument must be 'yes' or 'no'"
    );
    assert_eq!(
        set(&cfg, &[("save", "900")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'save') - Invalid save parameters"
    );
    // The first problem in argument order wins; name problems before value problems.
    assert_eq!(
        set(&cfg, &[("port", "1"), ("no-such", "1")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert_eq!(
        set(&cfg, &[("maxmemory", "bad"), ("no-such", "1")]).unwrap_err(),
        "ERR Unknown option or number of arguments for CONFIG SET - 'no-such'"
    );
    assert_eq!(cfg.runtime.maxmemory(), 0);
}

#[test]
fn config_set_runs_change_hooks() {
    let cfg = Config::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let rt = Arc::clone(&cfg.runtime);
    cfg.runtime
        .on_change(move |name| sink.lock().unwrap().push((name, rt.loglevel())));
    set(
        &cfg,
        &[("loglevel", "debug"), ("hash-max-ziplist-entries", "5")],
    )
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("loglevel", LogLevel::Debug),
            ("hash-max-listpack-entries", LogLevel::Debug)
        ]
    );
    let _ = set(&cfg, &[("loglevel", "loud")]);
    assert_eq!(seen.lock().unwrap().len(), 2, "no hook for a failed set");
}

#[test]
fn runtime_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Runtime>();
    assert_send_sync::<Config>();
    let cfg = Config::default();
    let rt = Arc::clone(&cfg.runtime);
    let reader = std::thread::spawn(move || {
        while rt.maxmemory_policy() != MaxmemoryPolicy::VolatileTtl {
            std::hint::spin_loop();
        }
    });
    set(&cfg, &[("maxmemory-policy", "volatile-ttl")]).unwrap();
    reader.join().unwrap();
}

#[test]
fn enums_round_trip() {
    for &p in MaxmemoryPolicy::ALL {
        assert_eq!(p.as_str().parse::<MaxmemoryPolicy>(), Ok(p));
        assert_eq!(
            MaxmemoryPolicy::parse(p.as_str().to_uppercase().as_bytes()),
            Some(p)
        );
    }
    assert_eq!(MaxmemoryPolicy::default(), MaxmemoryPolicy::NoEviction);
    for &l in LogLevel::ALL {
        assert_eq!(l.to_string().parse::<LogLevel>(), Ok(l));
    }
    assert_eq!(
        LogLevel::Notice.level_filter(),
        tracing::level_filters::LevelFilter::INFO
    );
    assert_eq!("no".parse::<AppendFsync>(), Ok(AppendFsync::No));
}

#[test]
fn startup_warnings_flag_inert_directives() {
    assert!(Config::default().startup_warnings().is_empty());
    let cfg = from_args(&[
        "--requirepass",
        "x",
        "--databases",
        "16",
        "--maxmemory",
        "100",
    ])
    .unwrap();
    let w = cfg.startup_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("maxmemory value that is less than 1MB"),
        "{w:?}"
    );
}

// --- the shipped example ----------------------------------------------------

#[test]
fn shipped_conf_parses_to_exactly_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tallykv.conf");
    let cfg = Config::from_args(&[path.to_string()]).unwrap();
    let default = Config::default();
    assert_eq!(cfg.get(&[b"*"]), default.get(&[b"*"]));
    assert_eq!(
        (
            &cfg.bind,
            &cfg.dir,
            &cfg.logfile,
            &cfg.pidfile,
            cfg.port,
            cfg.threads,
            cfg.databases
        ),
        (
            &default.bind,
            &default.dir,
            &default.logfile,
            &default.pidfile,
            default.port,
            default.threads,
            default.databases
        )
    );
    assert_eq!(
        format!("{:?}", cfg.runtime),
        format!("{:?}", default.runtime)
    );

    // ...and it mentions every directive, uncommented, with its default value.
    let text = std::fs::read_to_string(path).unwrap();
    for (name, value) in default.get(&[b"*"]) {
        // Old names (aliases) are accepted, not shipped.
        if SPECS.iter().any(|s| s.alias == Some(name.as_str())) {
            continue;
        }
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&name))
            .unwrap_or_else(|| panic!("{name} missing from tallykv.conf"));
        assert!(!value.is_empty() || line.ends_with("\"\""), "{line}");
    }
}

/// `conf/tallykv.conf` is the table rendered: its comments and defaults cannot drift from
/// what the server does. `TALLYKV_WRITE_CONF=1 cargo test -p tallykv --lib config` rewrites it.
#[test]
fn shipped_conf_is_rendered_from_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tallykv.conf");
    let rendered = Config::documented_file();
    if std::env::var_os("TALLYKV_WRITE_CONF").is_some() {
        std::fs::write(path, &rendered).unwrap();
    }
    let shipped = std::fs::read_to_string(path).unwrap();
    assert!(
        shipped == rendered,
        "conf/tallykv.conf differs from the directive table (src/config/table.rs); \
         rewrite it with `TALLYKV_WRITE_CONF=1 cargo test -p tallykv --lib config`"
    );
}

#[test]
fn the_table_is_consistent() {
    assert!(SPECS[0].section.is_some(), "the file starts with a section");
    for (i, spec) in SPECS.iter().enumerate() {
        assert_eq!(
            spec.key as usize, i,
            "{}: Key order is table order",
            spec.name
        );
        // Every default parses (Runtime::default would panic otherwise) and renders back
        // the way CONFIG GET shows it.
        let value = spec.default_value();
        assert_eq!(Runtime::default().value(spec.key), value, "{}", spec.name);
        assert_eq!(spec.name, spec.name.to_ascii_lowercase());
        assert_eq!(
            lookup(spec.name.as_bytes()).map(|(s, _)| s.key),
            Some(spec.key),
            "{} is listed once",
            spec.name
        );
        if spec.doc.is_empty() {
            // Listed under the entry above, whose "CONFIG SET: yes/no" line covers it too.
            assert!(spec.section.is_none(), "{} starts a section", spec.name);
            assert_eq!(
                spec.access,
                SPECS[i - 1].access,
                "{} shares its comment with {}",
                spec.name,
                SPECS[i - 1].name
            );
        }
    }
}

#[test]
fn defaults_are_unchanged_by_the_table() {
    let cfg = Config::default();
    assert_eq!(
        (
            cfg.port,
            cfg.bind.clone(),
            cfg.dir.clone(),
            cfg.threads,
            cfg.databases,
            cfg.cluster_databases
        ),
        (
            6379,
            vec!["*".to_string(), "-::*".to_string()],
            PathBuf::from("./data"),
            0,
            16,
            1
        )
    );
    assert_eq!((cfg.logfile.as_str(), cfg.pidfile.as_str()), ("", ""));
    assert_eq!(
        ClusterConfig::default(),
        ClusterConfig {
            enabled: false,
            port: 0,
            secret: Secret::default(),
            peers: vec![],
            announce_hostname: String::new(),
            announce_ip: String::new(),
            announce_port: 0,
            announce_bus_port: 0,
            replication_factor: 3,
            slot_groups: 0,
            node_timeout_ms: 1000,
            snapshot_after: 100_000,
            leader_balance_delay_ms: 60_000,
        }
    );
    let rt = &cfg.runtime;
    assert_eq!(
        (
            rt.maxclients(),
            rt.maxmemory(),
            rt.maxmemory_samples(),
            rt.timeout_secs(),
            rt.tcp_keepalive_secs(),
            rt.hz(),
            rt.lfu_log_factor(),
            rt.lfu_decay_time(),
            rt.key_load_delay(),
            rt.busy_reply_threshold(),
        ),
        (10_000, 0, 5, 0, 300, 10, 10, 1, 0, 5000)
    );
    assert_eq!(rt.proto_max_bulk_len(), 512 * MB as usize);
    assert_eq!(rt.client_query_buffer_limit(), 1024 * MB as usize);
    assert_eq!(rt.maxmemory_policy(), MaxmemoryPolicy::NoEviction);
    assert_eq!(rt.loglevel(), LogLevel::Notice);
    assert_eq!(rt.appendfsync(), AppendFsync::EverySec);
    assert!(rt.appendonly() && rt.protected_mode());
    assert_eq!(rt.requirepass(), None);
    assert_eq!(rt.save_params(), vec![]);
    let e = rt.encodings();
    assert_eq!(
        (
            e.hash.max_listpack_entries,
            e.hash.max_listpack_value,
            e.list.max_listpack_size,
            e.set.max_intset_entries,
            e.set.max_listpack_entries,
            e.set.max_listpack_value,
            e.zset.max_listpack_entries,
            e.zset.max_listpack_value
        ),
        (128, 64, -2, 512, 128, 64, 128, 64)
    );
    let l = rt.lazyfree();
    assert!(l.eviction && l.expire && l.server_del && l.user_del && l.user_flush);
}

#[test]
fn signed_directives_round_trip() {
    let cfg = Config::default();
    set(&cfg, &[("list-max-ziplist-size", "-5")]).unwrap();
    assert_eq!(cfg.runtime.list_max_listpack_size(), -5);
    assert_eq!(get1(&cfg, "list-max-listpack-size"), "-5");
    assert_eq!(
        set(&cfg, &[("list-max-listpack-size", "-2147483649")]).unwrap_err(),
        "ERR CONFIG SET failed (possibly related to argument 'list-max-listpack-size') - \
         argument must be between -2147483648 and 2147483647 inclusive"
    );
}

#[test]
fn sensitive_values_stay_out_of_debug_output() {
    let cfg = from_args(&["--requirepass", "s3cret"]).unwrap();
    let shown = format!("{:?}", cfg.runtime);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("\"requirepass\": \"<set>\""), "{shown}");
    assert_eq!(get1(&cfg, "requirepass"), "s3cret");
}

#[test]
fn cluster_secret_is_required_hidden_and_long_enough() {
    let secret = "0123456789abcdef0123456789abcdef";
    let cfg = from_args(&["--cluster-enabled", "yes", "--cluster-secret", secret]).unwrap();
    assert_eq!(cfg.cluster.secret.expose(), secret.as_bytes());
    // Neither CONFIG GET nor a printed config shows it.
    assert_eq!(get1(&cfg, "cluster-secret"), "<set>");
    for shown in [format!("{:?}", cfg.runtime), format!("{cfg:?}")] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(get1(&Config::default(), "cluster-secret"), "");

    // The bus never opens unauthenticated.
    let err = from_args(&["--cluster-enabled", "yes"]).unwrap_err();
    assert!(
        err.reason()
            .starts_with("cluster-enabled yes needs a cluster-secret"),
        "{err}"
    );
    let short = "tooshort-secret";
    let err = from_args(&["--cluster-enabled", "yes", "--cluster-secret", short]).unwrap_err();
    assert_eq!(
        err.reason(),
        "cluster-secret must be at least 16 bytes (generate one with `openssl rand -hex 32`)"
    );
    assert!(!err.to_string().contains(short), "{err}");
    // Startup only.
    let refused = set(
        &cfg,
        &[("cluster-secret", "another-secret-32-bytes-long....")],
    );
    assert!(refused.unwrap_err().ends_with("can't set immutable config"));
}

#[test]
fn shipped_tls_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tls.conf");
    let cfg = Config::from_args(&[path.to_string()]).unwrap();
    assert_eq!(cfg.port, 0);
    assert_eq!(cfg.runtime.tls_port(), 6379);
    let tls = cfg.runtime.tls();
    assert_eq!(tls.cert_file, "/etc/tallykv/tls/server.crt");
    assert_eq!(tls.auth_clients, TlsAuthClients::Yes);
    assert_eq!(tls.protocols, "TLSv1.3");
}

#[test]
fn user_lines_add_users_with_their_passwords_hashed() {
    let cfg = from_args(&[
        "--user",
        "admin on >s3cret ~* &* +@all",
        "--user",
        "default",
        "off",
    ])
    .unwrap();
    let users = cfg.runtime.user_declarations();
    assert_eq!(users.len(), 2);
    assert!(
        users[0].starts_with("admin on sanitize-payload #") && users[0].ends_with(" ~* &* +@all"),
        "{users:?}"
    );
    assert_eq!(users[1], "default off sanitize-payload resetchannels -@all");
    let shown = format!("{:?} {}", cfg.runtime, get1(&cfg, "user"));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        set(&cfg, &[("user", "x on")])
            .unwrap_err()
            .ends_with("can't set immutable config")
    );
    // The documented default adds nobody.
    let cfg = from_file("user \"\"\naclfile \"\"\n").unwrap();
    assert!(cfg.runtime.user_declarations().is_empty() && cfg.runtime.aclfile().is_none());
}

#[test]
fn bad_user_lines_stop_the_server_naming_the_line() {
    let err = from_file("port 7000\nuser alice on bogus\n").unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert_eq!(
        err.reason(),
        "Error in user declaration 'bogus': Syntax error"
    );
    let err = from_args(&["--user", "alice +nosuch"]).unwrap_err();
    assert_eq!(
        err.reason(),
        "Error in user declaration '+nosuch': Unknown command or category name in ACL"
    );
    let err = from_file("user alice on\nuser bob on\nuser alice off\n").unwrap_err();
    assert_eq!(
        err.reason(),
        "Error in user declaration 'alice': Duplicate user found. A user can only be defined \
         once in config files"
    );
    let err = from_args(&["--user", "alice on", "--aclfile", "/etc/users.acl"]).unwrap_err();
    assert!(
        err.reason().starts_with(
            "Configuring Valkey with users defined in valkey.conf and at the same setting an ACL \
             file path is invalid."
        ),
        "{err}"
    );
    let cfg = from_args(&["--aclfile", "users.acl"]).unwrap();
    assert_eq!(cfg.runtime.aclfile().as_deref(), Some("users.acl"));
}
