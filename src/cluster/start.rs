//! Starting cluster mode: find this node in `cluster-peers`, check the bus port, and once the
//! data is loaded, start every core's part of the cluster (`host`): as the node the data dir
//! was (its stored id and map), else as the `cluster-peers` entry it is (forming the cluster
//! with them), else once another node's CLUSTER MEET makes it a member.
//!
//! Every core listens on the bus port itself (SO_REUSEPORT) from the start, so a node waiting
//! for CLUSTER MEET answers its Hello and Join — from a peer that proves it holds
//! `cluster-secret`, as every bus connection must.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::admin::{self, Call, HelloReply};
use super::host::Host;
use super::link::{self, BusKey, BusSecurity, BusTls, Handoff, Links, Serve};
use super::logstore::WalPump;
use super::meta::{self, META};
use super::net::KIND_ADMIN;
use super::node::{ClusterNode, lock};
use super::snapshot::SnapshotFiles;
use super::topology::Layout;
use super::types::{GroupId, NodeId, NodeInfo};
use super::wire;
use crate::config::AppendFsync;
use crate::engine::core::Core;
use crate::state::Shared;
use crate::storage::Storage;
use crate::storage::wal::{Wal, WalOptions};

/// What the node knows about its cluster part before it has started (set in [`prepare`]).
pub struct Boot {
    /// What this node announces (its name is empty until it has an id).
    pub me: NodeInfo,
    /// Where every core binds the bus.
    pub bus_addr: String,
    /// Outgoing bus connections come from here (the first specific bind address).
    pub local_ip: Option<IpAddr>,
    /// What every bus connection's two ends prove they hold (`cluster-secret`).
    bus: BusSecurity,
    /// This node's id and the map computed from `cluster-peers`, if listed there.
    initial: Option<(NodeId, Layout)>,
    /// Set while the node waits for a CLUSTER MEET (the Join call).
    joiner: Mutex<Option<oneshot::Sender<(NodeId, Layout)>>>,
    joined: Mutex<Option<oneshot::Receiver<(NodeId, Layout)>>>,
}

/// The host this node announces: cluster-announce-hostname, else cluster-announce-ip, else
/// its first specific bind address, else 127.0.0.1.
fn announced_host(shared: &Shared) -> String {
    let c = &shared.config.cluster;
    if !c.announce_hostname.is_empty() {
        return c.announce_hostname.clone();
    }
    if !c.announce_ip.is_empty() {
        return c.announce_ip.clone();
    }
    shared
        .config
        .bind_addrs()
        .into_iter()
        .map(|b| b.host)
        .find(|h| !matches!(h.as_str(), "*" | "::*" | "0.0.0.0" | "::"))
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// Checks the cluster settings and the bus port before anything starts (a clear error now
/// rather than a node that never joins); with `cluster-peers`, assigns the slot groups to the
/// cores.
pub fn prepare(shared: &Arc<Shared>, bus_tls: Option<Arc<BusTls>>) -> Result<(), String> {
    let c = &shared.config.cluster;
    if !shared.config.runtime.appendonly() {
        return Err(
            "cluster-enabled yes needs appendonly yes: the Raft log lives in the data dir"
                .to_string(),
        );
    }
    let host = announced_host(shared);
    let port = if c.announce_port != 0 {
        c.announce_port
    } else {
        shared.port()
    };
    let bus_port = if c.port != 0 {
        c.port
    } else {
        shared.port() + 10000
    };
    let announced_bus_port = if c.announce_bus_port != 0 {
        c.announce_bus_port
    } else {
        bus_port
    };
    // With no peers listed, the node waits for another node's CLUSTER MEET.
    let initial = if c.peers.is_empty() {
        None
    } else {
        let layout = Layout::initial(c)?;
        let id = layout.find_self(&host, port)?;
        if bus_port != layout.nodes[&id].bus_port
            && c.announce_bus_port != layout.nodes[&id].bus_port
        {
            return Err(format!(
                "cluster-port {bus_port}: peers expect this node's bus at port {} (client port \
                 + 10000)",
                layout.nodes[&id].bus_port
            ));
        }
        shared.slot_map.assign_groups(layout.group_count());
        Some((id, layout))
    };
    let bind_host = shared
        .config
        .bind_addrs()
        .into_iter()
        .map(|b| b.host)
        .find(|h| !matches!(h.as_str(), "*" | "::*"))
        .unwrap_or_else(|| "0.0.0.0".to_string());
    let bus_addr = super::types::join_host_port(&bind_host, bus_port);
    // Probed once here for a clear error; every core binds it again (SO_REUSEPORT).
    drop(
        std::net::TcpListener::bind(&bus_addr)
            .map_err(|e| format!("Could not create the cluster bus socket {bus_addr}: {e}"))?,
    );
    match &initial {
        Some((id, layout)) => tracing::info!(
            "cluster node {} ({}), {} nodes, {} slot groups, bus on {bus_addr}",
            id,
            layout.nodes[id].name,
            layout.nodes.len(),
            layout.group_count()
        ),
        None => tracing::info!("cluster bus on {bus_addr}"),
    }
    let local_ip = bind_host
        .parse::<IpAddr>()
        .ok()
        .filter(|ip| !ip.is_unspecified());
    // The bus authenticates every peer on the shared secret (the configuration refuses a
    // cluster node without one), inside mutual TLS with `tls-cluster yes`.
    if c.secret.is_empty() {
        return Err("cluster-enabled yes needs a cluster-secret".to_string());
    }
    if bus_tls.is_some() {
        tracing::info!("cluster bus: mutual TLS (tls-cluster yes)");
    }
    let bus = BusSecurity {
        key: BusKey::new(c.secret.expose()),
        tls: bus_tls,
    };
    let (tx, rx) = oneshot::channel();
    let boot = Boot {
        me: NodeInfo {
            name: String::new(),
            host,
            port,
            bus_port: announced_bus_port,
            tls_port: shared.config.runtime.tls_port(),
        },
        bus_addr,
        local_ip,
        bus,
        initial,
        joiner: Mutex::new(Some(tx)),
        joined: Mutex::new(Some(rx)),
    };
    shared
        .cluster_boot
        .set(boot)
        .map_err(|_| "cluster start prepared twice".to_string())
}

/// Called once the data dir is open, before the cores load it: a node restarting with a
/// cluster in its data dir assigns its slot groups to the cores now (they load by them);
/// a data dir from the 0.9-based build is refused.
pub fn storage_opened(shared: &Shared, storage: &Storage) -> Result<(), String> {
    if meta::older_cluster(storage)? {
        return Err(format!(
            "{}: this data dir holds a cluster written by an older tallykv (Raft log of \
             commands in bincode, cluster format 1); this build reads format 2 only. Empty the \
             dir to have the node rejoin and catch up from the other nodes",
            storage.dir().display()
        ));
    }
    let wal_root = wal_root(storage.dir());
    if let Some(cores) = stored_cores(&wal_root)?
        && cores > shared.cores
    {
        return Err(format!(
            "{}: this node's Raft logs were written with threads {cores} (it now has {}): \
             changing threads on a cluster node needs an empty data dir",
            wal_root.display(),
            shared.cores
        ));
    }
    if let Some(stored) = meta::load(storage)? {
        shared.slot_map.assign_groups(stored.map.group_count());
    }
    if let Some(at_rest) = storage.at_rest() {
        // The cores open their logs later (`start_core`): the logs already here count as
        // behind from now, so the storage's rotation does not call a generation finished
        // (and let an old key leave the key file) before they are re-sealed.
        for c in 0..shared.cores {
            if wal_root.join(format!("core-{c}")).is_dir() {
                at_rest.part_started(&wal_part(c));
            }
        }
    }
    Ok(())
}

fn wal_root(dir: &Path) -> std::path::PathBuf {
    dir.join("raft-wal")
}

/// The name a core's Raft log reports its at-rest key rotation under (`AtRest::part_done`).
pub(super) fn wal_part(core: usize) -> String {
    format!("wal-core-{core}")
}

/// How many cores wrote Raft logs here (None: none yet).
fn stored_cores(root: &Path) -> Result<Option<usize>, String> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", root.display())),
    };
    let mut max = None;
    for entry in entries.flatten() {
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("core-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            max = Some(max.unwrap_or(0).max(n + 1));
        }
    }
    Ok(max)
}

/// Serves the bus on one core: Raft traffic to the groups it hosts, admin calls, and before
/// the node has joined a cluster, Hello and Join.
pub struct BusServe {
    core: Weak<Core>,
}

type Reply = LocalBoxFuture<'static, Result<Vec<u8>, String>>;

fn ready(r: Result<Vec<u8>, String>) -> Reply {
    Box::pin(futures::future::ready(r))
}

impl Serve for BusServe {
    fn request(&self, kind: u8, group: u16, payload: Bytes) -> Reply {
        let Some(core) = self.core.upgrade() else {
            return ready(Err("this node is stopping".into()));
        };
        let Some(host) = core.host() else {
            return ready(before_joining(&core.shared, kind, &payload));
        };
        if kind == KIND_ADMIN {
            return admin::serve(host, payload);
        }
        if host.raft(group).is_some() {
            return host.server.request(kind, group, payload);
        }
        // Another core of this node hosts the group (the peer has a different core count):
        // sent on, in arrival order.
        let target = group_core(&core, group);
        if target == core.id {
            return ready(Err(format!("slot group {group} is not hosted here")));
        }
        let (tx, rx) = oneshot::channel();
        core.spawn_on(target, move |core| {
            Box::pin(async move {
                let r = match core.host() {
                    Some(h) => h.server.request(kind, group, payload).await,
                    None => Err("this node has not joined a cluster yet".to_string()),
                };
                let _ = tx.send(r);
            })
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the core hosting the group is busy".into()))
        })
    }
}

/// The core hosting group `g` on this node.
fn group_core(core: &Core, g: GroupId) -> usize {
    if g == META {
        return 0;
    }
    core.shared
        .cluster()
        .and_then(|c| c.layout().groups.get(g as usize).map(|gl| gl.slots.start))
        .map_or(0, |slot| core.owner(slot))
}

/// Admin calls a node answers before it belongs to a cluster.
fn before_joining(shared: &Shared, kind: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
    let boot = shared.cluster_boot.get().ok_or("cluster mode is off")?;
    if kind != KIND_ADMIN {
        return Err("this node has not joined a cluster yet".into());
    }
    match wire::decode::<Call>(payload, "admin call").map_err(|e| e.0)? {
        Call::Hello => Ok(wire::encode(&HelloReply {
            info: boot.me.clone(),
            id: None,
        })),
        Call::Join { id, map } => match lock(&boot.joiner).take() {
            Some(tx) => {
                let _ = tx.send((id, *map));
                Ok(wire::encode(&()))
            }
            None => Err("this node is joining already".into()),
        },
        _ => Err("this node has not joined a cluster yet".into()),
    }
}

/// Starts serving the bus on `core` (every core, at start, in cluster mode).
pub fn serve_bus(core: &Rc<Core>) -> Result<(), String> {
    let boot = core
        .shared
        .cluster_boot
        .get()
        .ok_or("cluster start not prepared")?;
    let listener = crate::server::bind_listener(&boot.bus_addr).map_err(|e| {
        format!(
            "Could not create the cluster bus socket {}: {e}",
            boot.bus_addr
        )
    })?;
    let handler: Rc<dyn Serve> = Rc::new(BusServe {
        core: Rc::downgrade(core),
    });
    let router = Rc::downgrade(core);
    let security = boot.bus.clone();
    let route: link::Route = Rc::new(move |handoff: Handoff, fd: OwnedFd| {
        let Some(core) = router.upgrade() else {
            return Err(fd);
        };
        let target = (handoff.target_core() as usize).min(core.cores() - 1);
        if target == core.id {
            return Err(fd);
        }
        let security = security.clone();
        core.spawn_on(target, move |core| {
            Box::pin(async move {
                let handler: Rc<dyn Serve> = Rc::new(BusServe {
                    core: Rc::downgrade(&core),
                });
                link::serve_adopted(fd, handoff, security, handler).await;
            })
        });
        Ok(())
    });
    let security = boot.bus.clone();
    glommio::spawn_local(link::serve(
        listener,
        core.id as u16,
        security,
        handler,
        route,
    ))
    .detach();
    Ok(())
}

/// Starts the node's cluster part once the data is loaded (spawned on core 0).
pub async fn start(core: Rc<Core>) {
    if let Err(e) = start_inner(&core).await {
        tracing::error!("{e}");
        eprintln!("{e}");
        std::process::exit(1);
    }
}

async fn start_inner(core: &Rc<Core>) -> Result<(), String> {
    let shared = core.shared.clone();
    // The state machines apply to the cores' data: wait until it is loaded.
    while shared.storage().is_none() || shared.loading() {
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    let storage = shared.storage().ok_or("storage is not open")?.clone();
    let boot = shared
        .cluster_boot
        .get()
        .ok_or("cluster start not prepared")?;
    let stored_id = meta::load_self(&storage)?;
    let stored = meta::load(&storage)?;
    let (id, state, bootstrap) = match (stored_id, stored, boot.initial.clone()) {
        (Some(id), Some(state), _) => {
            tracing::info!(
                "cluster node {id}: cluster map epoch {} from the data dir",
                state.map.epoch
            );
            let bootstrap = state.map.epoch == 1;
            (id, state, bootstrap)
        }
        (_, _, Some((id, map))) => (id, first_state(&shared, &storage, id, map).await?, true),
        (_, _, None) => {
            tracing::info!(
                "no cluster-peers and no cluster in the data dir: waiting for CLUSTER MEET from \
                 a cluster node"
            );
            let rx = lock(&boot.joined).take().ok_or("already joined")?;
            let (id, map) = rx.await.map_err(|_| "the bus stopped".to_string())?;
            tracing::info!(
                "joined the cluster as node {id} (cluster map epoch {})",
                map.epoch
            );
            // Empty until now: the cores take the cluster's slot groups.
            shared.slot_map.assign_groups(map.group_count());
            for c in 0..shared.cores {
                core.on_core(c, |core| {
                    Box::pin(async move {
                        let range = core.shared.slot_map.range(core.id);
                        core.gate.wait_open(None).await;
                        core.shard.borrow_mut().set_owned(range);
                    })
                })
                .await;
            }
            (id, first_state(&shared, &storage, id, map).await?, false)
        }
    };
    let files = Arc::new(SnapshotFiles::new(
        storage.dir(),
        storage.at_rest().cloned(),
    ));
    // The storage layer's at-rest rotation re-seals them too.
    super::snapshot::add_reseal_pass(&files, &storage);
    let node = Arc::new(ClusterNode::new(
        id,
        state.map.clone(),
        &shared.config.cluster,
        files,
    ));
    shared
        .cluster
        .set(node.clone())
        .map_err(|_| "the cluster node started twice".to_string())?;
    let raft_config = Host::raft_config(&shared.config.cluster)?;
    for c in 0..shared.cores {
        let node = node.clone();
        let config = raft_config.clone();
        let state = (c == 0).then(|| state.clone());
        let started = core
            .on_core(c, move |core| {
                Box::pin(async move { start_core(core, node, config, state, bootstrap).await })
            })
            .await
            .ok_or("a core stopped")?;
        started?;
    }
    Ok(())
}

/// A node's first meta state, starting from `map` as node `id`, stored before any group
/// starts (a restart then finds it). Its function libraries start empty: the meta group's log
/// (or snapshot) brings the cluster's.
async fn first_state(
    shared: &crate::state::Shared,
    storage: &Storage,
    id: NodeId,
    map: Layout,
) -> Result<meta::Stored, String> {
    shared.scripts.libraries.replace(Default::default(), 0);
    let state = meta::Stored {
        applied: None,
        membership: Default::default(),
        map,
    };
    meta::save_joined(storage, id, &state).await?;
    Ok(state)
}

/// Starts one core's part: its log, links and groups (core 0: the meta group too).
async fn start_core(
    core: Rc<Core>,
    node: Arc<ClusterNode>,
    config: openraft10::Config,
    meta_state: Option<meta::Stored>,
    bootstrap: bool,
) -> Result<(), String> {
    let shared = core.shared.clone();
    let storage = shared.storage().ok_or("storage is not open")?.clone();
    let boot = shared
        .cluster_boot
        .get()
        .ok_or("cluster start not prepared")?;
    let dir = wal_root(storage.dir()).join(format!("core-{}", core.id));
    // The cache of recent entries serves the followers' replication (they lag by little):
    // a few MiB per core; older entries are read back from the file.
    let wal = Wal::open(
        &dir,
        WalOptions {
            cache_bytes: 8 << 20,
            at_rest: storage.at_rest().cloned(),
            ..WalOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(at_rest) = storage.at_rest() {
        // Behind until its first pass (`Host::reseal_log`) finds or makes everything sealed
        // under the active key.
        at_rest.part_started(&wal_part(core.id));
    }
    let rt = shared.config.runtime.clone();
    let pump = WalPump::new(
        wal,
        Box::new(move || rt.appendfsync() == AppendFsync::Always),
    );
    let links = Rc::new(Links::new(
        boot.local_ip,
        boot.bus.clone(),
        node.id,
        core.id as u16,
    ));
    let host = Host::new(&core, node.clone(), storage, pump, links, config);
    core.set_host(host.clone());
    if let Some(state) = meta_state {
        let view = node.clone();
        let on_map: Rc<dyn Fn(Arc<Layout>)> = Rc::new(move |map| view.set_layout(map));
        let voters = state.map.meta_voters();
        host.open_meta(state, on_map).await?;
        if bootstrap {
            host.spawn_bootstrap(META, voters.into_iter().collect());
        }
    }
    let map = node.layout();
    for (g, gl) in map.groups.iter().enumerate() {
        let g = g as GroupId;
        if core.owner(gl.slots.start) != core.id || !gl.members.contains(&node.id) {
            continue;
        }
        host.open_group(g, gl.slots.clone()).await?;
        if bootstrap {
            host.spawn_bootstrap(g, gl.members.clone());
        }
    }
    host.spawn_membership();
    host.spawn_heartbeats();
    Ok(())
}
