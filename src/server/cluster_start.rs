//! Starting cluster mode: find this node in `cluster-peers`, take the bus port, and once the
//! data is loaded, start the slot groups' Raft beside the cores.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::replica::CoreLink;
use crate::cluster::meta;
use crate::cluster::node::{ClusterNode, Startup};
use crate::cluster::topology::Layout;
use crate::cluster::types::{NodeId, NodeInfo};
use crate::state::Shared;

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

/// Checks the cluster settings and binds the bus before anything starts (a clear error now
/// rather than a node that never joins), then starts the groups once loading is done.
pub fn prepare(shared: &Arc<Shared>) -> Result<(), String> {
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
        Some((id, layout))
    };
    let bind_host = shared
        .config
        .bind_addrs()
        .into_iter()
        .map(|b| b.host)
        .find(|h| !matches!(h.as_str(), "*" | "::*"))
        .unwrap_or_else(|| "0.0.0.0".to_string());
    let bus_addr = crate::cluster::types::join_host_port(&bind_host, bus_port);
    let bus = TcpListener::bind(&bus_addr)
        .map_err(|e| format!("Could not create the cluster bus socket {bus_addr}: {e}"))?;
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
    let me = NodeInfo {
        name: String::new(),
        host,
        port,
        bus_port: announced_bus_port,
    };
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("tallykv-cluster".into())
        .spawn(move || {
            // The state machines apply to the cores' data: wait until it is loaded.
            while shared.storage().is_none() || shared.loading() {
                std::thread::sleep(Duration::from_millis(5));
            }
            match start(&shared, bus, me, initial) {
                Ok(node) => {
                    let _ = shared.cluster.set(node);
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    Ok(())
}

/// Starts this node's groups: as the node this data dir was (its stored id and cluster
/// map), else as the `cluster-peers` entry it is (forming the cluster with them), else once
/// another node's CLUSTER MEET makes it a member.
fn start(
    shared: &Arc<Shared>,
    bus: TcpListener,
    me: NodeInfo,
    initial: Option<(NodeId, Layout)>,
) -> Result<Arc<ClusterNode>, String> {
    let config = &shared.config.cluster;
    let storage = shared.storage().expect("storage is open").clone();
    let link = Arc::new(CoreLink::new(shared.inboxes.clone(), storage.clone())?);
    let startup = Startup::new(bus, me, config.node_timeout_ms)?;
    let stored_id = meta::load_self(&storage)?;
    let stored = meta::load(&storage)?;
    let (id, state, bootstrap) = match (stored_id, stored, initial) {
        (Some(id), Some(state), _) => {
            tracing::info!(
                "cluster node {id}: cluster map epoch {} from the data dir",
                state.map.epoch
            );
            let bootstrap = state.map.epoch == 1;
            (id, state, bootstrap)
        }
        (_, _, Some((id, map))) => (id, first_state(&startup, &storage, id, map)?, true),
        (_, _, None) => {
            tracing::info!(
                "no cluster-peers and no cluster in the data dir: waiting for CLUSTER MEET from \
                 a cluster node"
            );
            let (id, map) = startup.wait_join()?;
            tracing::info!(
                "joined the cluster as node {id} (cluster map epoch {})",
                map.epoch
            );
            (id, first_state(&startup, &storage, id, map)?, false)
        }
    };
    let node = ClusterNode::start(config, id, state, &startup, storage, link, bootstrap)?;
    node.set_evictor(crate::engine::replica::evictor(shared.inboxes.clone()));
    Ok(node)
}

/// A node's first meta state, starting from `map` as node `id`, stored before any group
/// starts (a restart then finds it).
fn first_state(
    startup: &Startup,
    storage: &crate::storage::Storage,
    id: NodeId,
    map: Layout,
) -> Result<meta::Stored, String> {
    let state = meta::Stored {
        applied: None,
        membership: Default::default(),
        map,
    };
    startup
        .handle()
        .block_on(meta::save_joined(storage, id, &state))?;
    Ok(state)
}
