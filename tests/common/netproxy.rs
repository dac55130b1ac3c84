//! A fault-injecting TCP proxy for the cluster bus, on plain threads in the test process.
//!
//! Each node's peers dial the proxy instead of the node's bus; the proxy forwards to the real
//! bus unless the link is cut. Nodes are told apart by the source address of their bus
//! connections: node `i` binds its own loopback address, the one the proxy listens on for it,
//! and the bus dials from the address it listens on.
//!
//! A cut link behaves like a partition, not like a crash: nothing is refused or closed. The
//! proxy keeps reading what the sender writes and drops it (so the sender's kernel sees its
//! data acknowledged and reports no error), and a connection opened across a cut is accepted
//! but never reaches the other side. Healing closes every connection that lost bytes (its
//! stream is corrupt from then on) so the nodes redial; the others carry on.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the proxy waits for a node's real bus to accept before refusing its caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const BUFFER: usize = 64 << 10;

/// One node as the proxy sees it: peers reach it at `listen`, whose IP is also where its own
/// connections come from; its real bus is at `target`.
#[derive(Clone, Copy, Debug)]
pub struct ProxiedNode {
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

/// The running proxy. Dropping it closes its listeners and every connection through it.
pub struct NetProxy {
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

struct Shared {
    nodes: Vec<ProxiedNode>,
    state: Mutex<State>,
    stop: AtomicBool,
    /// Bytes dropped at cut links since the start.
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Directed links that drop traffic: (sender, receiver).
    cut: BTreeSet<(usize, usize)>,
    connections: HashMap<u64, Connection>,
    next_id: u64,
}

/// A connection through the proxy, from node `from` (None: not a node's address) to `to`.
struct Connection {
    from: Option<usize>,
    to: usize,
    /// Both sockets (only the caller's when it was opened across a cut), to close it.
    sockets: Vec<TcpStream>,
    /// Bytes were dropped: healing closes it.
    lost_bytes: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every holder leaves the state consistent, so a poisoned lock is still sound.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn close_sockets(c: &Connection) {
    for s in &c.sockets {
        let _ = s.shutdown(Shutdown::Both);
    }
}

impl NetProxy {
    /// Listens for every node at once (an error if an address is taken; port 0 picks a free
    /// one, see [`NetProxy::listen_addr`]) and starts forwarding, with every link up.
    pub fn start(nodes: &[ProxiedNode]) -> io::Result<NetProxy> {
        let mut nodes = nodes.to_vec();
        let mut listeners = Vec::with_capacity(nodes.len());
        for n in &mut nodes {
            let listener = TcpListener::bind(n.listen)?;
            n.listen = listener.local_addr()?;
            listeners.push(listener);
        }
        let shared = Arc::new(Shared {
            nodes,
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let acceptors = listeners
            .into_iter()
            .enumerate()
            .map(|(to, listener)| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("netproxy-accept-{to}"))
                    .spawn(move || shared.accept_loop(listener, to))
                    .expect("spawn a proxy thread")
            })
            .collect();
        Ok(NetProxy { shared, acceptors })
    }

    /// Where node `i`'s peers reach it through the proxy.
    pub fn listen_addr(&self, i: usize) -> SocketAddr {
        self.shared.nodes[i].listen
    }

    /// Drops everything `from` sends to `to` (one direction only).
    pub fn block(&self, from: usize, to: usize) {
        lock(&self.shared.state).cut.insert((from, to));
    }

    /// Cuts node `i` off from every other node, both ways.
    pub fn isolate(&self, i: usize) {
        let mut state = lock(&self.shared.state);
        for j in (0..self.shared.nodes.len()).filter(|&j| j != i) {
            state.cut.insert((i, j));
            state.cut.insert((j, i));
        }
    }

    /// Restores every link and closes the connections that lost bytes while cut.
    pub fn heal(&self) {
        let mut state = lock(&self.shared.state);
        state.cut.clear();
        state.connections.retain(|_, c| {
            if c.lost_bytes {
                close_sockets(c);
            }
            !c.lost_bytes
        });
    }

    /// Whether traffic from `from` to `to` is dropped now.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        lock(&self.shared.state).cut.contains(&(from, to))
    }

    /// Bytes dropped at cut links so far.
    pub fn dropped_bytes(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Open connections from node `from` to node `to` through the proxy.
    pub fn connections(&self, from: usize, to: usize) -> usize {
        lock(&self.shared.state)
            .connections
            .values()
            .filter(|c| c.from == Some(from) && c.to == to)
            .count()
    }
}

impl Drop for NetProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        // Each acceptor notices the stop flag once it accepts this wake-up call.
        for n in &self.shared.nodes {
            let _ = TcpStream::connect_timeout(&n.listen, CONNECT_TIMEOUT);
        }
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
        let mut state = lock(&self.shared.state);
        for c in state.connections.values() {
            close_sockets(c);
        }
        state.connections.clear();
    }
}

impl Shared {
    fn accept_loop(self: Arc<Self>, listener: TcpListener, to: usize) {
        for incoming in listener.incoming() {
            if self.stop.load(Relaxed) {
                return;
            }
            match incoming {
                Ok(caller) => self.open(caller, to),
                Err(_) => std::thread::sleep(ACCEPT_RETRY),
            }
        }
    }

    /// The node whose address a connection comes from.
    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.listen.ip() == addr.ip())
    }

    fn is_cut(&self, from: Option<usize>, to: usize) -> bool {
        let state = lock(&self.state);
        from.is_some_and(|f| state.cut.contains(&(f, to)) || state.cut.contains(&(to, f)))
    }

    /// Connects `caller` to node `to`'s bus, or keeps it dangling if the link is cut.
    fn open(self: &Arc<Self>, caller: TcpStream, to: usize) {
        let from = caller.peer_addr().ok().and_then(|a| self.node_at(a));
        let _ = caller.set_nodelay(true);
        let upstream = if self.is_cut(from, to) {
            None
        } else {
            match TcpStream::connect_timeout(&self.nodes[to].target, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    Some(s)
                }
                // The node is down: the caller sees its connection closed, as a real
                // refusal would look through a proxy.
                Err(_) => return,
            }
        };
        let mut sockets = vec![caller.try_clone().expect("clone a socket")];
        sockets.extend(
            upstream
                .iter()
                .map(|s| s.try_clone().expect("clone a socket")),
        );
        let id = {
            let mut state = lock(&self.state);
            let id = state.next_id;
            state.next_id += 1;
            state.connections.insert(
                id,
                Connection {
                    from,
                    to,
                    lost_bytes: upstream.is_none(),
                    sockets,
                },
            );
            id
        };
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("spawn a proxy thread");
        };
        match upstream {
            None => {
                let me = self.clone();
                spawn(
                    format!("netproxy-void-{to}"),
                    Box::new(move || me.pump(id, caller, None, from, Some(to))),
                );
            }
            Some(upstream) => {
                let back = caller.try_clone().expect("clone a socket");
                let up_reader = upstream.try_clone().expect("clone a socket");
                let me = self.clone();
                spawn(
                    format!("netproxy-req-{to}"),
                    Box::new(move || me.pump(id, caller, Some(upstream), from, Some(to))),
                );
                let me = self.clone();
                spawn(
                    format!("netproxy-resp-{to}"),
                    Box::new(move || me.pump(id, up_reader, Some(back), Some(to), from)),
                );
            }
        }
    }

    /// Whether bytes `sender` → `receiver` on connection `id` are to be dropped now; marks
    /// the connection as having lost bytes if so. Under the state lock, so `heal` either sees
    /// the mark or this sees the healed rules.
    fn drops(&self, id: u64, sender: Option<usize>, receiver: Option<usize>) -> bool {
        let mut state = lock(&self.state);
        let cut = matches!((sender, receiver), (Some(s), Some(r)) if state.cut.contains(&(s, r)));
        if cut && let Some(c) = state.connections.get_mut(&id) {
            c.lost_bytes = true;
        }
        cut
    }

    /// Copies `src` to `dst` until either end closes, dropping what a cut link would lose
    /// (everything when there is no `dst`); then closes the whole connection.
    fn pump(
        &self,
        id: u64,
        mut src: TcpStream,
        mut dst: Option<TcpStream>,
        sender: Option<usize>,
        receiver: Option<usize>,
    ) {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let forwarded = match &mut dst {
                Some(d) if !self.drops(id, sender, receiver) => Some(d.write_all(&buf[..n])),
                _ => None,
            };
            match forwarded {
                Some(Ok(())) => {}
                Some(Err(_)) => break,
                None => {
                    self.dropped.fetch_add(n as u64, Relaxed);
                }
            }
        }
        if let Some(c) = lock(&self.state).connections.remove(&id) {
            close_sockets(&c);
        }
    }
}
