//! tallykv-server: parse the configuration, set up logging, run the server.

use std::time::{Duration, Instant};

use tikv_jemallocator::Jemalloc;

// jemalloc gives INFO used_memory and maxmemory exact allocation figures.
#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("Usage: tallykv-server [/path/to/tallykv.conf] [--directive value ...]");
        println!("       tallykv-server --version");
        println!();
        println!("Examples:");
        println!("       tallykv-server (run with the defaults: port 6379, data under ./data)");
        println!("       tallykv-server conf/tallykv.conf --port 7777 --maxmemory 1gb");
        return;
    }
    if args.iter().any(|a| a == "--version" || a == "-v") {
        println!(
            "tallykv-server v={} (redis compatible {})",
            env!("CARGO_PKG_VERSION"),
            tallykv::REDIS_COMPAT_VERSION
        );
        return;
    }
    let config = match tallykv::config::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("\n{e}");
            std::process::exit(1);
        }
    };
    init_logging(&config);
    for w in config.startup_warnings() {
        tracing::warn!("{w}");
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("panic: {info}");
    }));
    // The plain port, or the TLS port of a TLS-only server.
    watch_start(match config.port {
        0 => config.runtime.tls_port(),
        port => port,
    });
    if let Err(e) = tallykv::server::run(config) {
        tracing::error!("{e}");
        eprintln!("{e}");
        std::process::exit(1);
    }
}

/// How long a start may take until the client port listens. The cores listen before the
/// data is loaded (clients get -LOADING meanwhile), so a healthy start listens within a
/// second or two even on a busy machine; this is many times that.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Exits (status 1, saying why) if nothing listens on the client `port` within
/// [`START_LIMIT`], so that a supervisor (compose's restart policy, systemd) starts the
/// server again instead of leaving it up and deaf.
///
/// The case it catches: glommio cannot create one of the executors (io_uring refused, e.g.
/// locked memory used up: RLIMIT_MEMLOCK is counted per uid, so containers running as the
/// same uid share it). That executor's thread ends with the error, the others wait for it
/// in the core mesh's join forever, and the error would only be reported once all of them
/// had ended. Port 0 (chosen later) is not watched, nor is a system without /proc/net/tcp.
fn watch_start(port: u16) {
    if port == 0 {
        return;
    }
    let watch = move || {
        let started = Instant::now();
        loop {
            match listening(port) {
                None | Some(true) => return,
                Some(false) if started.elapsed() < START_LIMIT => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Some(false) => {
                    let e = format!(
                        "start-up stuck: nothing listens on port {port} {} s after start; most \
                         likely a core's executor could not start (io_uring refused: locked \
                         memory used up? RLIMIT_MEMLOCK is shared by every process of this uid) \
                         and the other cores wait for it; exiting",
                        START_LIMIT.as_secs()
                    );
                    tracing::error!("{e}");
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
    };
    // Without the thread the server starts unwatched, as it would anyway.
    let _ = std::thread::Builder::new()
        .name("tallykv-start".into())
        .spawn(watch);
}

/// Whether a socket of this network namespace listens on TCP `port` (state 0A in
/// /proc/net/tcp or tcp6); None if neither table can be read. Read rather than connected
/// to, so the check is no client of the server.
fn listening(port: u16) -> Option<bool> {
    let local_port = format!(":{port:04X}");
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        // "sl local_address rem_address st ...", addresses as HEXIP:HEXPORT.
        let listens = text.lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            local.is_some_and(|a| a.ends_with(&local_port)) && state == Some("0A")
        });
        if listens {
            return Some(true);
        }
    }
    readable.then_some(false)
}

fn init_logging(config: &tallykv::config::Config) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The filter sits in a reload layer so that CONFIG SET loglevel takes effect at once.
    let (filter, reload) =
        tracing_subscriber::reload::Layer::new(log_filter(config.runtime.loglevel()));
    let writer = if config.logfile.is_empty() {
        BoxMakeWriter::new(std::io::stdout)
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.logfile)
        {
            Ok(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
            Err(e) => {
                eprintln!("Can't open the log file: {e}");
                std::process::exit(1);
            }
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(tallykv::util::log_format::ValkeyFormat {
                    runtime: config.runtime.clone(),
                })
                .with_writer(writer),
        )
        .init();
    // Weak: the hook is stored in the Runtime it reads.
    let runtime = std::sync::Arc::downgrade(&config.runtime);
    config.runtime.on_change(move |directive| {
        if directive == "loglevel"
            && let Some(rt) = runtime.upgrade()
            && let Err(e) = reload.reload(log_filter(rt.loglevel()))
        {
            tracing::warn!("cannot change the log level: {e}");
        }
    });
}

/// What is logged at `level`: our own events at that level, our dependencies' quieter.
fn log_filter(level: tallykv::config::LogLevel) -> tracing_subscriber::filter::Targets {
    use tracing::level_filters::LevelFilter;
    let filter = level.level_filter();
    // fjall narrates every keyspace it opens at INFO, openraft every vote and append; only
    // their warnings belong in our log (elections are logged by the cluster room itself).
    let quiet = std::cmp::min(filter, LevelFilter::WARN);
    let openraft_level = if filter >= LevelFilter::DEBUG {
        filter
    } else {
        LevelFilter::OFF
    };
    tracing_subscriber::filter::Targets::new()
        .with_default(filter)
        .with_target("fjall", quiet)
        .with_target("lsm_tree", quiet)
        // openraft logs every failed RPC to a down peer at ERROR, several times a second;
        // the bus logs a lost peer once and the cluster room logs elections, so openraft's
        // own narration is only shown at loglevel debug.
        .with_target("openraft", openraft_level)
}
