//! OpenFlow 1.3 with the Open vSwitch extensions.
//!
//! Owns: wire types and their codec (no I/O), the `ovs-ofctl` text syntax, and a thin
//! tokio connection layer. Knows nothing about Kubernetes or Switchyard's pipeline.

pub mod text;
