//! OVSDB (RFC 7047) client.
//!
//! Owns: JSON-RPC framing, typed OVSDB data, transactions, monitors and a live replica.
//! Knows nothing about Kubernetes or Switchyard's pipeline.
