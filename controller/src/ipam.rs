//! Pod address management: one pool per node, carved from the node's pod CIDR.
//!
//! Owns: which address each pod holds, that no address is ever given twice, and the MAC that
//! goes with an address. Does not own: persistence. The controller records every allocation
//! on the pod's OVS port (external_ids) and on the pod object, and feeds them back through
//! [`Ipam::restore`] after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::first_host;
use crate::source::ObjectKey;
use switchyard_mac::Mac;

/// Why an address could not be given or recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The pod is on a node the controller has no valid pod CIDR for.
    #[error("node {node} has no pod CIDR known to Switchyard (check the Node's spec.podCIDR)")]
    UnknownNode {
        /// The node's name.
        node: String,
    },
    /// Every address of the node's CIDR is in use.
    #[error("node {node}: every address of {cidr} is in use ({in_use} pods)")]
    Exhausted {
        /// The node's name.
        node: String,
        /// The node's pod CIDR.
        cidr: Ipv4Net,
        /// How many addresses are held.
        in_use: usize,
    },
    /// A recorded allocation names an address outside the node's CIDR, or the gateway.
    #[error("pod {pod}: recorded address {ip} is not a pod address of node {node} ({cidr})")]
    OutOfRange {
        /// The pod.
        pod: String,
        /// The recorded address.
        ip: Ipv4Addr,
        /// The node's name.
        node: String,
        /// The node's pod CIDR.
        cidr: Ipv4Net,
    },
    /// Two pods claim one address.
    #[error("address {ip} is recorded for both {holder} and {claimant}; keeping {holder}")]
    Conflict {
        /// The address.
        ip: Ipv4Addr,
        /// Who holds it.
        holder: String,
        /// Who claimed it too.
        claimant: String,
    },
}

/// The address pools of all nodes.
#[derive(Debug, Default, Clone)]
pub struct Ipam {
    pools: BTreeMap<String, NodePool>,
    owners: BTreeMap<ObjectKey, (String, Ipv4Addr)>,
}

#[derive(Debug, Clone)]
struct NodePool {
    cidr: Ipv4Net,
    held: BTreeMap<Ipv4Addr, ObjectKey>,
    /// Where the next search starts: a freed address is handed out again only after the
    /// others, so a stale conntrack entry or ARP cache rarely meets a new pod.
    cursor: u32,
}

impl NodePool {
    fn is_pod_address(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && ip != self.cidr.network()
            && ip != self.cidr.broadcast()
            && ip != first_host(self.cidr)
    }
}

fn pod_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

impl Ipam {
    /// Declares (or updates) a node's pod CIDR. Changing the CIDR of a node drops its pool.
    pub fn set_node(&mut self, node: &str, cidr: Ipv4Net) {
        if self.pools.get(node).is_some_and(|p| p.cidr == cidr) {
            return;
        }
        self.remove_node(node);
        self.pools.insert(
            node.to_owned(),
            NodePool {
                cidr,
                held: BTreeMap::new(),
                cursor: 0,
            },
        );
    }

    /// Forgets a node and every allocation on it.
    pub fn remove_node(&mut self, node: &str) {
        if let Some(pool) = self.pools.remove(node) {
            for pod in pool.held.values() {
                self.owners.remove(pod);
            }
        }
    }

    /// The nodes that have a pool.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// The address `pod` holds, if any.
    pub fn address_of(&self, pod: &ObjectKey) -> Option<Ipv4Addr> {
        self.owners.get(pod).map(|(_, ip)| *ip)
    }

    /// Every allocation: pod → (node, address).
    pub fn allocations(&self) -> impl Iterator<Item = (&ObjectKey, &str, Ipv4Addr)> {
        self.owners
            .iter()
            .map(|(k, (node, ip))| (k, node.as_str(), *ip))
    }

    /// Gives `pod` an address on `node`: the one it already holds there, or a free one.
    pub fn allocate(&mut self, node: &str, pod: &ObjectKey) -> Result<Ipv4Addr, IpamError> {
        if let Some((held_node, ip)) = self.owners.get(pod) {
            if held_node == node {
                return Ok(*ip);
            }
            // The pod moved (same name, new node): its old address goes back.
            self.release(pod);
        }
        let pool = self
            .pools
            .get_mut(node)
            .ok_or_else(|| IpamError::UnknownNode { node: node.into() })?;
        let base = u32::from(pool.cidr.network());
        let size = 1u32 << (32 - pool.cidr.prefix_len());
        for step in 0..size {
            let offset = (pool.cursor + step) % size;
            let ip = Ipv4Addr::from(base + offset);
            if pool.is_pod_address(ip) && !pool.held.contains_key(&ip) {
                pool.held.insert(ip, pod.clone());
                pool.cursor = (offset + 1) % size;
                self.owners.insert(pod.clone(), (node.to_owned(), ip));
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            node: node.into(),
            cidr: pool.cidr,
            in_use: pool.held.len(),
        })
    }

    /// Records an allocation made before (found on an OVS port or a pod annotation).
    /// Idempotent for the same pod and address.
    pub fn restore(&mut self, node: &str, pod: &ObjectKey, ip: Ipv4Addr) -> Result<(), IpamError> {
        let pool = self
            .pools
            .get_mut(node)
            .ok_or_else(|| IpamError::UnknownNode { node: node.into() })?;
        if !pool.is_pod_address(ip) {
            return Err(IpamError::OutOfRange {
                pod: pod_name(pod),
                ip,
                node: node.into(),
                cidr: pool.cidr,
            });
        }
        if let Some(holder) = pool.held.get(&ip) {
            if holder == pod {
                return Ok(());
            }
            return Err(IpamError::Conflict {
                ip,
                holder: pod_name(holder),
                claimant: pod_name(pod),
            });
        }
        if self.owners.contains_key(pod) {
            self.release(pod);
        }
        let pool = self.pools.get_mut(node).expect("pool checked above");
        pool.held.insert(ip, pod.clone());
        self.owners.insert(pod.clone(), (node.to_owned(), ip));
        Ok(())
    }

    /// Frees the pod's address, if it holds one. Returns it.
    pub fn release(&mut self, pod: &ObjectKey) -> Option<Ipv4Addr> {
        let (node, ip) = self.owners.remove(pod)?;
        if let Some(pool) = self.pools.get_mut(&node) {
            pool.held.remove(&ip);
        }
        Some(ip)
    }
}

/// The MAC that goes with a pod or gateway address: [`Mac::for_ipv4`].
pub fn mac_for(ip: Ipv4Addr) -> Mac {
    Mac::for_ipv4(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast_and_are_never_shared() {
        let mut ipam = Ipam::default();
        ipam.set_node("n1", "10.0.0.0/29".parse().unwrap());
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate("n1", &key(&format!("p{i}"))).unwrap());
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 0, 0, h)).collect();
        assert_eq!(got, want);
        let err = ipam.allocate("n1", &key("p5")).unwrap_err();
        assert!(
            matches!(err, IpamError::Exhausted { in_use: 5, .. }),
            "{err}"
        );
        assert_eq!(
            ipam.allocate("n1", &key("p2")).unwrap(),
            want[2],
            "idempotent"
        );
    }

    #[test]
    fn freed_addresses_come_back_last() {
        let mut ipam = Ipam::default();
        ipam.set_node("n1", "10.0.0.0/28".parse().unwrap());
        let a = ipam.allocate("n1", &key("a")).unwrap();
        assert_eq!(ipam.release(&key("a")), Some(a));
        let b = ipam.allocate("n1", &key("b")).unwrap();
        assert_ne!(a, b, "a freed address is not handed out again at once");
        assert_eq!(ipam.address_of(&key("a")), None);
    }

    #[test]
    fn restore_rejects_conflicts_and_out_of_range() {
        let mut ipam = Ipam::default();
        ipam.set_node("n1", "10.0.0.0/24".parse().unwrap());
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        ipam.restore("n1", &key("a"), ip).unwrap();
        ipam.restore("n1", &key("a"), ip).unwrap();
        assert!(matches!(
            ipam.restore("n1", &key("b"), ip),
            Err(IpamError::Conflict { .. })
        ));
        assert!(matches!(
            ipam.restore("n1", &key("b"), Ipv4Addr::new(10, 0, 0, 1)),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            ipam.restore("n2", &key("b"), ip),
            Err(IpamError::UnknownNode { .. })
        ));
        // A new allocation never lands on a restored address.
        for i in 0..250 {
            assert_ne!(ipam.allocate("n1", &key(&format!("p{i}"))).unwrap(), ip);
        }
    }

    #[test]
    fn mac_encodes_the_address() {
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 244, 1, 5)).to_string(),
            "0a:58:0a:f4:01:05"
        );
    }
}
