//! What the clients counted, and the one output line.

use crate::COMMANDS_PER_AUTH;
use crate::preload::Preloaded;
use crate::replies::json_string;

/// Error replies and connection errors kept as examples.
const MAX_SAMPLES: usize = 3;

/// What one client counted; summed over all clients at the end.
#[derive(Default)]
pub struct Stats {
    /// Authorizations in the measured window that got no error.
    pub auths: u64,
    /// Authorizations in the measured window with an error reply or a short WAIT.
    pub failed_auths: u64,
    /// Node pipelines of the counted authorizations.
    pub pipelines: u64,
    /// Authorization latencies in nanoseconds (only those inside the measured window).
    pub latencies: Vec<u64>,
    pub errors: u64,
    pub samples: Vec<String>,
    pub wait_short: u64,
    pub misses: u64,
    pub conn_errors: u64,
}

impl Stats {
    pub fn sample(&mut self, s: String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(s);
        }
    }

    pub fn error(&mut self, s: String) {
        self.errors += 1;
        self.sample(s);
    }

    pub fn add(&mut self, other: Stats) {
        self.auths += other.auths;
        self.failed_auths += other.failed_auths;
        self.pipelines += other.pipelines;
        self.latencies.extend_from_slice(&other.latencies);
        self.errors += other.errors;
        self.wait_short += other.wait_short;
        self.misses += other.misses;
        self.conn_errors += other.conn_errors;
        for s in other.samples {
            self.sample(s);
        }
    }

    /// The run's fields of the output line (no braces); percentiles nearest-rank, as waitload
    /// and benches/cluster.py.
    pub fn json_fields(mut self, seconds: f64) -> String {
        self.latencies.sort_unstable();
        let pct = |per_mille: usize| {
            let n = self.latencies.len();
            if n == 0 {
                return "null".to_string();
            }
            format!(
                "{:.3}",
                self.latencies[(n * per_mille / 1000).min(n - 1)] as f64 / 1e6
            )
        };
        let samples: Vec<String> = self.samples.iter().map(|s| json_string(s)).collect();
        format!(
            "\"auths_per_s\":{:.1},\"commands_per_s\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\
             \"p999_ms\":{},\"auths\":{},\"failed_auths\":{},\"pipelines_per_auth\":{:.2},\"errors\":{},\
             \"error_samples\":[{}],\"wait_short\":{},\"misses\":{},\"conn_errors\":{}",
            self.auths as f64 / seconds,
            (self.auths * COMMANDS_PER_AUTH) as f64 / seconds,
            pct(500),
            pct(990),
            pct(999),
            self.auths,
            self.failed_auths,
            self.pipelines as f64 / self.auths.max(1) as f64,
            self.errors,
            samples.join(","),
            self.wait_short,
            self.misses,
            self.conn_errors,
        )
    }
}

/// The preload's fields of the output line (no braces): `null`s without --preload.
pub fn preload_json_fields(preloaded: Option<&Preloaded>) -> String {
    let Some(p) = preloaded else {
        return "\"preload_s\":null,\"preload_retries\":null,\"preload_restarts\":null,\
                \"preload_refusal\":null"
            .to_string();
    };
    format!(
        "\"preload_s\":{:.1},\"preload_retries\":{},\"preload_restarts\":{},\"preload_refusal\":{}",
        p.seconds,
        p.retries,
        p.restarts,
        p.first_refusal
            .as_deref()
            .map_or("null".to_string(), json_string),
    )
}
