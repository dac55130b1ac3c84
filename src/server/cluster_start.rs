//! Starting cluster mode: find this node in `cluster-peers`, take the bus port, and once the
//! data is loaded, start the slot groups' Raft beside the cores.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use super::replica::CoreLink;
use super::state::Shared;
use crate::cluster::node::ClusterNode;
use crate::cluster::topology::Layout;

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
    let layout = Layout::initial(c)?;
    let host = announced_host(shared);
    let port = if c.announce_port != 0 {
        c.announce_port
    } else {
        shared.port()
    };
    let id = layout.find_self(&host, port)?;
    let bus_port = if c.port != 0 {
        c.port
    } else {
        shared.port() + 10000
    };
    if bus_port != layout.nodes[&id].bus_port && c.announce_bus_port != layout.nodes[&id].bus_port {
        return Err(format!(
            "cluster-port {bus_port}: peers expect this node's bus at port {} (client port + \
             10000)",
            layout.nodes[&id].bus_port
        ));
    }
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
    tracing::info!(
        "cluster node {} ({}), {} nodes, {} slot groups, bus on {bus_addr}",
        id,
        layout.nodes[&id].name,
        layout.nodes.len(),
        layout.group_count()
    );
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("tallykv-cluster".into())
        .spawn(move || {
            // The state machines apply to the cores' data: wait until it is loaded.
            while shared.storage().is_none() || shared.loading() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let storage = shared.storage().expect("storage is open").clone();
            let started = CoreLink::new(shared.inboxes.clone(), storage.clone()).and_then(|link| {
                ClusterNode::start(
                    &shared.config.cluster,
                    id,
                    layout,
                    bus,
                    storage,
                    Arc::new(link),
                )
            });
            match started {
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
