//! Cluster harness: N real `tallykv-server` processes in cluster mode on this host, each with
//! its own data dir and log file, plus a small redirect-following client ([`Router`]) that
//! reports every command's outcome as acknowledged, refused (certainly not applied) or unknown,
//! which is what fault tests need to judge the final state.
//!
//! Nodes keep their client port (and bus port = client port + 10000) for the harness's
//! lifetime, since their peers know them by it. Each node's config file holds the
//! `cluster-secret` its bus authenticates peers with: the cluster's own, random per cluster,
//! unless the test gave a node another ([`Cluster::add_joiner_with_secret`]). Every process is killed on drop; when the
//! test panics, the tail of each node's log is printed and the directory is kept.
//!
//! A TLS cluster ([`Cluster::start_tls`]) gives each node a `tls-port` beside its client port
//! (the test passes the certificate directives).
//!
//! A partitionable cluster ([`Cluster::start_partitionable`]) puts node `i` on its own
//! loopback address 127.0.0.(i+1) and its real bus on another port, with a [`NetProxy`]
//! listening where its peers dial (client port + 10000): the proxy can cut links between
//! nodes while clients still reach every node directly.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tallykv::cluster::key_slot;

use super::netproxy::{NetProxy, ProxiedNode};

/// Client ports are drawn from here: their bus ports (port + 10000) then fall in 20000..30000,
/// so neither range meets the other nor the kernel's ephemeral range (32768 and up), from
/// which client connections could take a bus port while its node is down.
const PORT_RANGE: Range<u16> = 10000..20000;
/// Real bus ports of a partitionable cluster's nodes (behind the proxy): below both ranges
/// above.
const REAL_BUS_RANGE: Range<u16> = 2000..10000;

/// TLS client ports of a cluster from [`Cluster::start_tls`]: above the bus ports, below the
/// ephemeral range.
const TLS_RANGE: Range<u16> = 30000..32768;

/// Ports this test process has handed out (its tests may run in parallel).
static USED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// How long a node may take to answer its first PING (a debug build opening its data dir).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to have a leader for every group.
const OK_TIMEOUT: Duration = Duration::from_secs(30);

fn bindable(host: &str, port: u16) -> bool {
    TcpListener::bind((host, port)).is_ok()
}

/// A client port for each of `hosts`, free along with its bus port (client port + 10000) on
/// that host a moment ago, and with `real_bus` a third free port for the node's real bus.
/// Ports differ across hosts too (nodes are told apart by port).
fn pick_ports(hosts: &[String], real_bus: bool) -> Vec<(u16, Option<u16>)> {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(hosts.len());
    while ports.len() < hosts.len() {
        let host = &hosts[ports.len()];
        let p = fastrand::u16(PORT_RANGE);
        if used.contains(&p) || !bindable(host, p) || !bindable(host, p + 10000) {
            continue;
        }
        let bus = if real_bus {
            let b = fastrand::u16(REAL_BUS_RANGE);
            if used.contains(&b) || !bindable(host, b) {
                continue;
            }
            used.push(b);
            Some(b)
        } else {
            None
        };
        used.push(p);
        ports.push((p, bus));
    }
    ports
}

/// A TLS port for each of `hosts`, free on that host a moment ago (see [`TLS_RANGE`]).
fn pick_tls_ports(hosts: &[String]) -> Vec<u16> {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(hosts.len());
    while ports.len() < hosts.len() {
        let p = fastrand::u16(TLS_RANGE);
        if !used.contains(&p) && bindable(&hosts[ports.len()], p) {
            used.push(p);
            ports.push(p);
        }
    }
    ports
}

/// A fresh `cluster-secret`: 32 random hex digits (the harness's randomness will do for a
/// test's cluster; a real one comes from `openssl rand -hex 32`).
fn random_secret() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("a hex digit"))
        .collect()
}

/// Writes node `i`'s config file under `root`, holding `secret`, and returns its path.
fn node_conf(root: &std::path::Path, i: usize, secret: &str) -> PathBuf {
    let conf = root.join(format!("node{i}.conf"));
    std::fs::write(&conf, format!("cluster-secret {secret}\n")).expect("write the node's config");
    conf
}

/// One group's line of INFO cluster, as a node sees it.
#[derive(Clone, Debug)]
pub struct GroupView {
    pub slots: Range<usize>,
    /// leader, follower, candidate, learner, shutdown (or none: not a member).
    pub role: String,
    pub term: u64,
    /// The leader's node name (None while none is known).
    pub leader: Option<String>,
    pub last_log: u64,
    pub applied: u64,
}

/// Parses `groupN:slots=a-b,role=R,term=T,leader=L,last_log=X,applied=Y[,lag=...]`.
fn parse_group_line(line: &str) -> Option<GroupView> {
    let (head, fields) = line.split_once(':')?;
    head.strip_prefix("group")?.parse::<usize>().ok()?;
    let mut view = GroupView {
        slots: 0..0,
        role: String::new(),
        term: 0,
        leader: None,
        last_log: 0,
        applied: 0,
    };
    for field in fields.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        match k {
            "slots" => {
                let (a, b) = v.split_once('-')?;
                view.slots = a.parse().ok()?..b.parse::<usize>().ok()? + 1;
            }
            "role" => view.role = v.to_string(),
            "term" => view.term = v.parse().ok()?,
            "leader" if v != "-" => view.leader = Some(v.to_string()),
            "last_log" => view.last_log = v.parse().ok()?,
            "applied" => view.applied = v.parse().ok()?,
            _ => {}
        }
    }
    Some(view)
}

struct Node {
    /// The address it binds (and announces).
    host: String,
    port: u16,
    /// Where its bus really listens, behind the proxy (None: client port + 10000, direct).
    real_bus: Option<u16>,
    /// Its `tls-port` (None: no TLS).
    tls_port: Option<u16>,
    dir: PathBuf,
    log: PathBuf,
    /// None once killed.
    child: Option<Child>,
    /// SIGSTOPped (it accepts connections but answers nothing).
    stopped: bool,
    /// CLUSTER MYID.
    name: String,
    /// Started without `--cluster-peers`: it waits for a CLUSTER MEET.
    joiner: bool,
    /// Its config file, which holds its `cluster-secret` (kept out of the command line).
    conf: PathBuf,
    /// Arguments of this node alone, after the cluster's.
    args: Vec<String>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// `--cluster-peers`, the same on every node.
    peers: String,
    /// The `cluster-secret` of the cluster's nodes.
    secret: String,
    args: Vec<String>,
    /// Holds every node's dir and log; None after it was kept for a failed test.
    root: Option<tempfile::TempDir>,
    /// Each slot group's slots, by group number.
    pub groups: Vec<Range<usize>>,
    /// The bus proxy of a partitionable cluster. Dropped after the nodes are killed.
    proxy: Option<NetProxy>,
}

impl Cluster {
    /// Starts `n` nodes with `extra` arguments (`--directive value` pairs) and waits until
    /// every node reports `cluster_state:ok` and all agree on each group's leader. Retries on
    /// fresh ports if a node dies at startup (most likely a port taken meanwhile).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::launch(n, extra, false, false)
    }

    /// Like [`Cluster::start`], with a `tls-port` for each node (see [`Cluster::tls_port`]);
    /// `extra` holds the certificate directives.
    pub fn start_tls(n: usize, extra: &[&str]) -> Cluster {
        Self::launch(n, extra, false, true)
    }

    /// Like [`Cluster::start`], with node `i` bound to 127.0.0.(i+1) and every bus link
    /// through a [`NetProxy`] (see [`Cluster::proxy`]).
    pub fn start_partitionable(n: usize, extra: &[&str]) -> Cluster {
        assert!(n < 255, "one loopback address per node");
        Self::launch(n, extra, true, false)
    }

    fn launch(n: usize, extra: &[&str], partitionable: bool, tls: bool) -> Cluster {
        for attempt in 1..=3 {
            let root = tempfile::tempdir().expect("temp dir");
            let hosts: Vec<String> = (0..n)
                .map(|i| {
                    if partitionable {
                        format!("127.0.0.{}", i + 1)
                    } else {
                        "127.0.0.1".to_string()
                    }
                })
                .collect();
            let ports = pick_ports(&hosts, partitionable);
            let tls_ports: Vec<Option<u16>> = if tls {
                pick_tls_ports(&hosts).into_iter().map(Some).collect()
            } else {
                vec![None; n]
            };
            let proxy = if partitionable {
                let proxied: Vec<ProxiedNode> = hosts
                    .iter()
                    .zip(&ports)
                    .map(|(host, &(port, real_bus))| {
                        let ip = host.parse().expect("an IP address");
                        ProxiedNode {
                            listen: SocketAddr::new(ip, port + 10000),
                            target: SocketAddr::new(ip, real_bus.expect("a real bus port")),
                        }
                    })
                    .collect();
                match NetProxy::start(&proxied) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!("cluster start attempt {attempt}: bus proxy: {e}");
                        continue;
                    }
                }
            } else {
                None
            };
            let peers = hosts
                .iter()
                .zip(&ports)
                .map(|(host, (p, _))| format!("{host}:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let secret = random_secret();
            let nodes = hosts
                .into_iter()
                .zip(ports)
                .zip(tls_ports)
                .enumerate()
                .map(|(i, ((host, (port, real_bus)), tls_port))| {
                    let dir = root.path().join(format!("node{i}"));
                    std::fs::create_dir(&dir).expect("node dir");
                    Node {
                        host,
                        port,
                        real_bus,
                        tls_port,
                        dir,
                        log: root.path().join(format!("node{i}.log")),
                        child: None,
                        stopped: false,
                        name: String::new(),
                        joiner: false,
                        conf: node_conf(root.path(), i, &secret),
                        args: Vec::new(),
                    }
                })
                .collect();
            let mut c = Cluster {
                nodes,
                peers,
                secret,
                args: extra.iter().map(|a| a.to_string()).collect(),
                root: Some(root),
                groups: Vec::new(),
                proxy,
            };
            for i in 0..n {
                c.spawn(i);
            }
            if !(0..n).all(|i| c.wait_answers(i)) {
                eprintln!("cluster start attempt {attempt}: a node exited at startup");
                eprintln!("{}", c.logs(20));
                continue;
            }
            c.wait_ok();
            for i in 0..n {
                c.nodes[i].name = c.query(i, redis::cmd("CLUSTER").arg("MYID"));
            }
            c.groups = c
                .info_groups(0)
                .expect("INFO cluster from node 0")
                .into_iter()
                .map(|g| g.slots)
                .collect();
            return c;
        }
        panic!("the cluster did not start after 3 attempts");
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The `cluster-secret` the cluster's nodes share.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Starts one more node, without `--cluster-peers` (it waits for a CLUSTER MEET: see
    /// [`Cluster::meet`]); returns its index.
    pub fn add_joiner(&mut self) -> usize {
        let secret = self.secret.clone();
        self.add_joiner_with_secret(&secret)
    }

    /// [`Cluster::add_joiner`] with `secret` (one word) as the node's `cluster-secret`.
    pub fn add_joiner_with_secret(&mut self, secret: &str) -> usize {
        self.add_joiner_with(secret, &[])
    }

    /// [`Cluster::add_joiner_with_secret`], with `args` after the cluster's arguments (the
    /// last of a directive given twice wins).
    pub fn add_joiner_with(&mut self, secret: &str, args: &[&str]) -> usize {
        assert!(self.proxy.is_none(), "joiners are not proxied");
        let i = self.nodes.len();
        let host = "127.0.0.1".to_string();
        let (port, real_bus) = pick_ports(std::slice::from_ref(&host), false)[0];
        let root = self.root.as_ref().expect("the cluster's dir").path();
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir(&dir).expect("node dir");
        let conf = node_conf(root, i, secret);
        self.nodes.push(Node {
            host,
            port,
            real_bus,
            tls_port: None,
            dir,
            log: root.join(format!("node{i}.log")),
            child: None,
            stopped: false,
            name: String::new(),
            joiner: true,
            conf,
            args: args.iter().map(|a| a.to_string()).collect(),
        });
        self.spawn(i);
        assert!(
            self.wait_answers(i),
            "node {i} did not start\n{}",
            self.logs(20)
        );
        i
    }

    /// Sends `CLUSTER MEET` for node `joiner` to node `via` and waits until the joiner has
    /// started its cluster node (it answers CLUSTER MYID).
    pub fn meet(&mut self, via: usize, joiner: usize) {
        let reply: redis::RedisResult<String> = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg(self.host(joiner))
            .arg(self.port(joiner))
            .query(&mut self.conn(via));
        assert_eq!(
            reply.as_deref(),
            Ok("OK"),
            "CLUSTER MEET\n{}",
            self.logs(20)
        );
        let mut name = String::new();
        let started = super::wait_until(Duration::from_secs(20), || {
            let r: redis::RedisResult<String> = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut self.conn(joiner));
            r.map(|n| name = n).is_ok()
        });
        assert!(started, "node {joiner} did not join\n{}", self.logs(20));
        self.nodes[joiner].name = name;
    }

    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Node `i`'s `tls-port` (a cluster from [`Cluster::start_tls`]).
    pub fn tls_port(&self, i: usize) -> u16 {
        self.nodes[i].tls_port.expect("a node of a TLS cluster")
    }

    /// The address node `i` binds and announces (127.0.0.1 unless partitionable).
    pub fn host(&self, i: usize) -> &str {
        &self.nodes[i].host
    }

    /// The bus proxy of a cluster from [`Cluster::start_partitionable`].
    pub fn proxy(&self) -> &NetProxy {
        self.proxy
            .as_ref()
            .expect("a cluster started with start_partitionable")
    }

    /// CLUSTER MYID of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node listening on client port `port`.
    pub fn node_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The group owning `slot`.
    pub fn group_of_slot(&self, slot: usize) -> usize {
        self.groups
            .iter()
            .position(|r| r.contains(&slot))
            .expect("every slot is in a group")
    }

    /// The group owning `key`'s slot.
    pub fn group_of_key(&self, key: &str) -> usize {
        self.group_of_slot(key_slot(key.as_bytes()) as usize)
    }

    /// Whether node `i` runs and is not paused.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].stopped
    }

    fn url(&self, i: usize) -> String {
        format!("redis://{}:{}/", self.nodes[i].host, self.nodes[i].port)
    }

    /// A RESP2 connection to node `i` (panics if it does not connect).
    pub fn conn(&self, i: usize) -> redis::Connection {
        self.try_conn(i, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to node {i}: {e}"))
    }

    /// A connection to node `i` with `timeout` for connecting and for each reply.
    pub fn try_conn(&self, i: usize, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let c = redis::Client::open(self.url(i))?.get_connection_with_timeout(timeout)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_write_timeout(Some(timeout))?;
        Ok(c)
    }

    /// A cluster-aware redis-rs client seeded with every node.
    pub fn cluster_client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::builder((0..self.len()).map(|i| self.url(i)))
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(10))
            .build()
            .expect("cluster client")
    }

    /// Runs `cmd` on node `i` and returns its reply (panics on any error).
    pub fn query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.conn(i))
            .unwrap_or_else(|e| panic!("node {i}: {cmd:?}: {e}"))
    }

    /// Node `i`'s view of every group (INFO cluster), or None if it does not answer.
    pub fn info_groups(&self, i: usize) -> Option<Vec<GroupView>> {
        if !self.running(i) {
            return None;
        }
        let mut c = self.try_conn(i, Duration::from_secs(2)).ok()?;
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).ok()?;
        Some(info.lines().filter_map(parse_group_line).collect())
    }

    fn cluster_ok(&self, i: usize) -> bool {
        let Ok(mut c) = self.try_conn(i, Duration::from_secs(2)) else {
            return false;
        };
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut c)
            .is_ok_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
    }

    /// Whether every running node is ok and they all name the same leader for every group.
    fn settled(&self) -> bool {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.running(i)).collect();
        if !running.iter().all(|&i| self.cluster_ok(i)) {
            return false;
        }
        let mut views = Vec::new();
        for &i in &running {
            match self.info_groups(i) {
                Some(v) => views.push(v),
                None => return false,
            }
        }
        let Some(first) = views.first() else {
            return false;
        };
        (0..first.len()).all(|g| {
            first[g].leader.is_some() && views.iter().all(|v| v[g].leader == first[g].leader)
        })
    }

    /// Waits until every running node reports `cluster_state:ok` and they agree on every
    /// group's leader (panics with the logs after 30 s).
    pub fn wait_ok(&self) {
        if !super::wait_until(OK_TIMEOUT, || self.settled()) {
            panic!(
                "the cluster was not ok after {OK_TIMEOUT:?}\n{}",
                self.logs(30)
            );
        }
    }

    /// The node leading group `g` now: the one claiming leadership in the highest term whose
    /// claim a majority of the cluster's nodes confirm (polls up to 20 s).
    pub fn leader_of_group(&self, g: usize) -> usize {
        let mut found = None;
        let majority = self.len() / 2 + 1;
        let settled = super::wait_until(Duration::from_secs(20), || {
            let views: Vec<Option<Vec<GroupView>>> =
                (0..self.len()).map(|i| self.info_groups(i)).collect();
            let claimant = views
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((i, v.as_ref()?.get(g)?)))
                .filter(|(_, v)| v.role == "leader")
                .max_by_key(|(_, v)| v.term)
                .map(|(i, _)| i);
            let Some(l) = claimant else {
                return false;
            };
            let confirmed = views
                .iter()
                .flatten()
                .filter(|v| v.get(g).and_then(|v| v.leader.as_deref()) == Some(self.name(l)))
                .count();
            found = Some(l);
            confirmed >= majority
        });
        match (settled, found) {
            (true, Some(l)) => l,
            _ => panic!("group {g} has no confirmed leader\n{}", self.logs(30)),
        }
    }

    /// Waits until every running node names a leader other than node `old` for each of
    /// `groups`; how long that took, or None after `limit`.
    pub fn wait_leader_change(
        &self,
        groups: &[usize],
        old: usize,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.running(i)).collect();
        let changed = super::wait_until(limit, || {
            running.iter().all(|&i| {
                self.info_groups(i).is_some_and(|views| {
                    groups.iter().all(|&g| {
                        views[g]
                            .leader
                            .as_deref()
                            .is_some_and(|l| l != self.name(old))
                    })
                })
            })
        });
        changed.then(|| start.elapsed())
    }

    /// The node leading the group of `slot` now.
    pub fn leader_of_slot(&self, slot: usize) -> usize {
        self.leader_of_group(self.group_of_slot(slot))
    }

    /// The groups node `i` says it leads.
    pub fn led_by(&self, i: usize) -> Vec<usize> {
        self.info_groups(i)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, v)| v.role == "leader")
            .map(|(g, _)| g)
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        assert!(node.child.is_none(), "node {i} is already running");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the node's log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tallykv-server"));
        // The config file first: the command line's directives follow it.
        command.arg(&node.conf);
        command.args(["--port", &node.port.to_string(), "--bind", &node.host]);
        if let Some(real_bus) = node.real_bus {
            command
                .args(["--cluster-port", &real_bus.to_string()])
                .args([
                    "--cluster-announce-bus-port",
                    &(node.port + 10000).to_string(),
                ]);
        }
        if let Some(tls_port) = node.tls_port {
            command.args(["--tls-port", &tls_port.to_string()]);
        }
        let child = command
            .arg("--dir")
            .arg(&node.dir)
            .args(["--threads", "2", "--cluster-enabled", "yes"])
            .args(if node.joiner {
                Vec::new()
            } else {
                vec!["--cluster-peers", self.peers.as_str()]
            })
            .args(["--loglevel", "notice", "--logfile"])
            .arg(&node.log)
            // "{node}" in a shared argument is the node's number (per-node files).
            .args(
                self.args
                    .iter()
                    .map(|a| a.replace("{node}", &i.to_string())),
            )
            .args(&node.args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tallykv-server");
        self.nodes[i].child = Some(child);
        self.nodes[i].stopped = false;
    }

    /// Waits until node `i` answers PING (any reply: it may still be loading); false if the
    /// process exited first (it is then reaped and marked dead).
    fn wait_answers(&mut self, i: usize) -> bool {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while Instant::now() < deadline {
            let Some(child) = self.nodes[i].child.as_mut() else {
                return false;
            };
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("node {i} exited: {status}");
                self.nodes[i].child = None;
                return false;
            }
            if let Ok(mut c) = self.try_conn(i, Duration::from_millis(500)) {
                let reply: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                if reply.is_ok() || reply.is_err_and(|e| e.code().is_some()) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILLs node `i` (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].stopped = false;
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; it is not reaped yet, so the pid is its.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Empties node `i`'s data dir (the node must be killed first).
    /// Node `i`'s data dir.
    pub fn dir(&self, i: usize) -> &std::path::Path {
        &self.nodes[i].dir
    }

    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "wipe a running node");
        let dir = &self.nodes[i].dir;
        std::fs::remove_dir_all(dir).expect("remove the node's dir");
        std::fs::create_dir(dir).expect("recreate the node's dir");
    }

    /// How many times node `i`'s log contains `needle`.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.nodes[i].log)
            .map(|t| t.matches(needle).count())
            .unwrap_or(0)
    }

    /// Pauses node `i` (SIGSTOP): its sockets stay open but nothing runs.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].stopped = true;
    }

    /// Resumes node `i` (SIGCONT).
    pub fn cont(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].stopped = false;
    }

    /// Starts node `i` again (after `kill9`) on its port and dir and waits until it answers;
    /// retries a few times if it exits at once (its port briefly still held).
    pub fn respawn(&mut self, i: usize) {
        for _ in 0..5 {
            self.spawn(i);
            if self.wait_answers(i) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("node {i} did not restart\n{}", self.logs(30));
    }

    /// Kills node `i` if it runs, starts it again on the same port and dir, and waits until
    /// it answers and the cluster is ok again.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.respawn(i);
        self.wait_ok();
    }

    /// The last `lines` lines of every node's log, headed by the node.
    pub fn logs(&self, lines: usize) -> String {
        let mut text = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let all: Vec<String> = File::open(&n.log)
                .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
                .unwrap_or_default();
            text.push_str(&format!("--- node {i} (port {}) log tail ---\n", n.port));
            for l in &all[all.len().saturating_sub(lines)..] {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("{}", self.logs(40));
        }
        // TALLYKV_KEEP_LOGS=1 keeps them after a passing test too, to read its elections.
        if (panicking || std::env::var_os("TALLYKV_KEEP_LOGS").is_some())
            && let Some(root) = self.root.take()
        {
            eprintln!("cluster dirs and logs kept at {}", root.keep().display());
        }
    }
}

/// What became of one command sent by a [`Router`].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The command ran; its reply.
    Reply(redis::Value),
    /// Not applied, for certain: not sent (no connection), or refused before it ran (MOVED,
    /// TRYAGAIN, LOADING).
    Refused(String),
    /// May or may not have been applied: UNCERTAIN, CLUSTERDOWN, the connection broke or the
    /// reply did not come in time.
    Unknown(String),
    /// Any other error reply (a test failure for the commands these tests send).
    Failed(String),
}

/// A minimal cluster client: one connection per node, a guess of each group's leader that
/// MOVED corrects, and rotation to the next node when a node does not answer. Each `send` is
/// exactly one attempt, so callers can count attempts and outcomes themselves.
pub struct Router {
    hosts: Vec<String>,
    ports: Vec<u16>,
    groups: Vec<Range<usize>>,
    conns: Vec<Option<redis::Connection>>,
    guess: Vec<usize>,
    timeout: Duration,
}

impl Router {
    /// A router for `cluster`'s nodes; `timeout` bounds connecting and each reply.
    pub fn new(cluster: &Cluster, timeout: Duration) -> Router {
        Router {
            hosts: (0..cluster.len())
                .map(|i| cluster.host(i).to_string())
                .collect(),
            ports: cluster.ports(),
            groups: cluster.groups.clone(),
            conns: (0..cluster.len()).map(|_| None).collect(),
            guess: vec![0; cluster.groups.len()],
            timeout,
        }
    }

    fn group_of(&self, slot: usize) -> usize {
        self.groups
            .iter()
            .position(|r| r.contains(&slot))
            .expect("every slot is in a group")
    }

    fn connection(&mut self, node: usize) -> redis::RedisResult<&mut redis::Connection> {
        if self.conns[node].is_none() {
            let url = format!("redis://{}:{}/", self.hosts[node], self.ports[node]);
            let c = redis::Client::open(url)?.get_connection_with_timeout(self.timeout)?;
            c.set_read_timeout(Some(self.timeout))?;
            c.set_write_timeout(Some(self.timeout))?;
            self.conns[node] = Some(c);
        }
        Ok(self.conns[node].as_mut().expect("just connected"))
    }

    /// Forgets `node`'s connection and tries the next node for group `g` next time.
    fn give_up_on(&mut self, node: usize, g: usize) {
        self.conns[node] = None;
        self.guess[g] = (node + 1) % self.ports.len();
    }

    /// Sends `cmd` (whose keys are in `slot`) once, to the node believed to lead the slot's
    /// group, and learns from the answer where to send the next one.
    pub fn send(&mut self, cmd: &redis::Cmd, slot: usize) -> Outcome {
        let g = self.group_of(slot);
        let node = self.guess[g];
        let conn = match self.connection(node) {
            Ok(c) => c,
            Err(e) => {
                self.give_up_on(node, g);
                std::thread::sleep(Duration::from_millis(10));
                return Outcome::Refused(format!("connect to node {node}: {e}"));
            }
        };
        match cmd.query::<redis::Value>(conn) {
            Ok(v) => Outcome::Reply(v),
            Err(e) => {
                let text = super::error_text(&e);
                match e.code() {
                    Some("MOVED") => {
                        let to = e
                            .redirect_node()
                            .and_then(|(addr, _)| addr.rsplit_once(':'))
                            .and_then(|(host, p)| Some((host.to_string(), p.parse::<u16>().ok()?)));
                        let Some((host, port)) = to else {
                            return Outcome::Failed(format!("bad redirect: {text}"));
                        };
                        // A node that joined since the router was made is learned here.
                        let to = match self.ports.iter().position(|&q| q == port) {
                            Some(to) => to,
                            None => {
                                self.hosts.push(host);
                                self.ports.push(port);
                                self.conns.push(None);
                                self.ports.len() - 1
                            }
                        };
                        self.guess[g] = to;
                        Outcome::Refused(text)
                    }
                    Some("TRYAGAIN" | "LOADING") => {
                        std::thread::sleep(Duration::from_millis(20));
                        Outcome::Refused(text)
                    }
                    Some("UNCERTAIN") => Outcome::Unknown(text),
                    Some("CLUSTERDOWN") => {
                        // As cluster clients do (they reload the slot map elsewhere): a node
                        // cut off from its group's quorum says so until it is healed.
                        self.give_up_on(node, g);
                        std::thread::sleep(Duration::from_millis(20));
                        Outcome::Unknown(text)
                    }
                    Some(_) => Outcome::Failed(text),
                    None => {
                        // I/O: refused, reset, or no reply in time.
                        self.give_up_on(node, g);
                        Outcome::Unknown(format!("node {node}: {text}"))
                    }
                }
            }
        }
    }

    /// Sends `cmd` until it runs and returns its reply (for reads and idempotent writes
    /// only: an unknown outcome is simply retried). Panics after `limit`.
    pub fn query(&mut self, cmd: &redis::Cmd, slot: usize, limit: Duration) -> redis::Value {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < deadline {
            match self.send(cmd, slot) {
                Outcome::Reply(v) => return v,
                Outcome::Failed(e) => panic!("{cmd:?}: {e}"),
                other => last = Some(other),
            }
        }
        panic!("{cmd:?} did not run within {limit:?}; last outcome {last:?}");
    }
}
