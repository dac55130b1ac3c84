//! Security: ACL users and the permission check before a command (`acl`), TLS configuration
//! (rustls), the audit log (`audit`, a file and a writer thread of its own), and the
//! plaintext-PAN guard on writes (`pan_guard`). It may read
//! the command table (names, key positions, ACL categories); it never touches shards,
//! sockets or storage.

pub mod acl;
pub mod audit;
pub mod pan_guard;
pub mod tls;
