//! Object builders for the controller's unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::source::{Delta, Kind, Object, ObjectKey};

/// A Node with a pod CIDR and an InternalIP.
pub fn node(name: &str, cidr: &str, ip: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        }),
    }
}

/// A scheduled pod with labels.
pub fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        status: Some(PodStatus::default()),
    }
}

/// An apply delta.
pub fn apply(o: impl Into<Object>) -> Delta {
    Delta::Apply(o.into())
}

/// A delete delta for a pod.
pub fn delete_pod(ns: &str, name: &str) -> Delta {
    Delta::Delete(Kind::Pod, ObjectKey::new(ns, name))
}

/// A delete delta for a node.
pub fn delete_node(name: &str) -> Delta {
    Delta::Delete(Kind::Node, ObjectKey::new("", name))
}
