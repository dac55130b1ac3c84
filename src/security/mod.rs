//! Security: TLS configuration (rustls); AUTH/ACL and the audit log are to come here too.

pub mod tls;
