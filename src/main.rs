//! tallykv-server: parse the configuration, set up logging, run the server.

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
    if let Err(e) = tallykv::server::run(config) {
        tracing::error!("{e}");
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn init_logging(config: &tallykv::config::Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = config.runtime.loglevel().level_filter();
    // fjall narrates every keyspace it opens at INFO, openraft every vote and append; only
    // their warnings belong in our log (elections are logged by the cluster room itself).
    let quiet = std::cmp::min(filter, tracing::level_filters::LevelFilter::WARN);
    let openraft_level = if filter >= tracing::level_filters::LevelFilter::DEBUG {
        filter
    } else {
        tracing::level_filters::LevelFilter::OFF
    };
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(filter)
        .with_target("fjall", quiet)
        .with_target("lsm_tree", quiet)
        // openraft logs every failed RPC to a down peer at ERROR, several times a second;
        // the bus logs a lost peer once and the cluster room logs elections, so openraft's
        // own narration is only shown at loglevel debug.
        .with_target("openraft", openraft_level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_target(false);
    if config.logfile.is_empty() {
        builder.finish().with(targets).init();
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.logfile)
        {
            Ok(f) => builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .finish()
                .with(targets)
                .init(),
            Err(e) => {
                eprintln!("Can't open the log file: {e}");
                std::process::exit(1);
            }
        }
    }
}
