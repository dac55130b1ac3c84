//! Security: ACL users and the permission check before a command (`acl`), TLS configuration
//! (rustls). It may read the command table (names, key positions, ACL categories); it never
//! touches shards, sockets or storage. The audit log is to come here too.

pub mod acl;
pub mod tls;
