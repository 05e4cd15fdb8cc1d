//! The Switchyard controller: Kubernetes sources, model, flow compiler, reconciler.

pub mod source;
