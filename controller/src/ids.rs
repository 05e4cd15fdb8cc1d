//! Ids that cannot collide: flow cookies' owner ids, and the allocator later features use
//! for conjunction ids and group ids.
//!
//! Owns: the mapping from an owner to its number. Cookies need no table: every owner that
//! has flows holds an IPv4 address no other owner holds (a pod its address, a node its pod
//! CIDR, which the state keeps free of overlaps), so that address is the id — unique by
//! construction, stable across restarts, and readable in `ovs-ofctl dump-flows`. Numbers
//! without such a natural key (a policy rule's conjunction id, a Service's group id) come
//! from an [`IdAllocator`]: the lowest free number, never two owners on one number, and
//! seeded from what a switch already holds after a restart ([`IdAllocator::reserve`]) so an
//! unchanged owner keeps its number.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::pipeline::{CookieCategory, cookie};

/// The cookie of the pipeline skeleton's flows.
pub const fn pipeline_cookie() -> u64 {
    cookie(CookieCategory::Pipeline, 0)
}

/// The cookie of a node's gateway flows (by the gateway's address).
pub fn gateway_cookie(gateway_ip: Ipv4Addr) -> u64 {
    cookie(CookieCategory::Gateway, u32::from(gateway_ip))
}

/// The cookie of a pod's flows (by its address).
pub fn pod_cookie(ip: Ipv4Addr) -> u64 {
    cookie(CookieCategory::Pod, u32::from(ip))
}

/// The cookie of the flows that reach another node (by its pod CIDR's network address).
pub fn remote_node_cookie(pod_cidr: Ipv4Net) -> u64 {
    cookie(CookieCategory::RemoteNode, u32::from(pod_cidr.network()))
}

/// The cookie of the policy feature's fixed flows.
pub const fn policy_base_cookie() -> u64 {
    cookie(CookieCategory::PolicyBase, 0)
}

/// The cookie of a rule's `conj_id` flow (by its conjunction id).
pub const fn policy_rule_cookie(conj_id: u32) -> u64 {
    cookie(CookieCategory::PolicyRule, conj_id)
}

fn direction_bit(direction: crate::policy::Direction) -> u64 {
    match direction {
        crate::policy::Direction::Ingress => 0,
        crate::policy::Direction::Egress => 1 << 32,
    }
}

/// The cookie of a selected pod's policy flows in one direction (by its address).
pub fn policy_target_cookie(direction: crate::policy::Direction, ip: Ipv4Addr) -> u64 {
    cookie(CookieCategory::PolicyTarget, u32::from(ip)) | direction_bit(direction)
}

/// The cookie of the peer clause flows naming one address block in one direction.
pub fn policy_peer_cookie(direction: crate::policy::Direction, net: Ipv4Net) -> u64 {
    cookie(CookieCategory::PolicyPeer, u32::from(net.network()))
        | direction_bit(direction)
        | (u64::from(net.prefix_len()) << 40)
}

/// The cookie of a Service port's flows (by its Service port id).
pub const fn service_cookie(port_id: u32) -> u64 {
    cookie(CookieCategory::Service, port_id)
}

/// The cookie of the session affinity flows a Service port's EndpointDnat flows learn.
pub const fn service_affinity_cookie(port_id: u32) -> u64 {
    cookie(CookieCategory::ServiceAffinity, port_id)
}

/// The cookie of the Service feature's fixed flows.
pub const fn service_base_cookie() -> u64 {
    cookie(CookieCategory::ServiceBase, 0)
}

/// Why an id could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Every id of the range is in use.
    #[error("all {size} ids of {what} are in use")]
    Exhausted {
        /// What the ids are for (e.g. `conjunction ids`).
        what: &'static str,
        /// How many there are.
        size: u64,
    },
    /// A recorded id is already held by another owner.
    #[error("{what} {id} is already held by another owner")]
    Taken {
        /// What the ids are for.
        what: &'static str,
        /// The id.
        id: u32,
    },
}

/// Hands out numbers in `first..=last` to owners of type `K`: deterministic (the lowest free
/// number), never the same number to two owners, idempotent per owner.
#[derive(Clone, Debug)]
pub struct IdAllocator<K: Ord + Clone> {
    what: &'static str,
    first: u32,
    last: u32,
    by_owner: BTreeMap<K, u32>,
    used: BTreeSet<u32>,
    /// Every number below this one is in use: where the search for a free one starts.
    floor: u32,
}

impl<K: Ord + Clone> IdAllocator<K> {
    /// An allocator for `first..=last`; `what` names the ids in errors.
    pub fn new(what: &'static str, first: u32, last: u32) -> IdAllocator<K> {
        IdAllocator {
            what,
            first,
            last,
            by_owner: BTreeMap::new(),
            used: BTreeSet::new(),
            floor: first,
        }
    }

    /// The owner's id, giving it the lowest free one if it has none.
    pub fn get_or_allocate(&mut self, owner: &K) -> Result<u32, IdError> {
        if let Some(id) = self.by_owner.get(owner) {
            return Ok(*id);
        }
        let mut id = self.floor;
        while self.used.contains(&id) {
            if id == self.last {
                return Err(IdError::Exhausted {
                    what: self.what,
                    size: u64::from(self.last - self.first) + 1,
                });
            }
            id += 1;
        }
        self.used.insert(id);
        self.by_owner.insert(owner.clone(), id);
        self.floor = id;
        Ok(id)
    }

    /// The owner's id, if it has one.
    pub fn get(&self, owner: &K) -> Option<u32> {
        self.by_owner.get(owner).copied()
    }

    /// Records an id found on a switch (or in a record) for `owner`, so it keeps it.
    pub fn reserve(&mut self, owner: &K, id: u32) -> Result<(), IdError> {
        if self.by_owner.get(owner) == Some(&id) {
            return Ok(());
        }
        if self.used.contains(&id) || id < self.first || id > self.last {
            return Err(IdError::Taken {
                what: self.what,
                id,
            });
        }
        self.release(owner);
        self.used.insert(id);
        self.by_owner.insert(owner.clone(), id);
        Ok(())
    }

    /// Gives the owner's id back.
    pub fn release(&mut self, owner: &K) -> Option<u32> {
        let id = self.by_owner.remove(owner)?;
        self.used.remove(&id);
        self.floor = self.floor.min(id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_of_distinct_addresses_never_collide_and_name_the_owner() {
        let a = pod_cookie(Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(a, 0x0300_0000_0af4_0105);
        // 100k pods on 1000 /24s: all cookies distinct (the old 32-bit hash of the name
        // had a ~69% chance of at least one collision at this size).
        let mut seen = BTreeSet::new();
        for node in 0..1000u32 {
            for pod in 2..102u32 {
                let ip = Ipv4Addr::from(0x0a00_0000 + (node << 8) + pod);
                assert!(seen.insert(pod_cookie(ip)));
            }
        }
        assert_ne!(
            remote_node_cookie("10.244.1.0/24".parse().unwrap()),
            pod_cookie(Ipv4Addr::new(10, 244, 1, 0)),
            "the category keeps owners of different kinds apart"
        );
    }

    #[test]
    fn allocator_gives_the_lowest_free_id_once_per_owner() {
        let mut ids = IdAllocator::new("conjunction ids", 1, 3);
        assert_eq!(ids.get_or_allocate(&"a"), Ok(1));
        assert_eq!(ids.get_or_allocate(&"b"), Ok(2));
        assert_eq!(ids.get_or_allocate(&"a"), Ok(1));
        assert_eq!(ids.release(&"a"), Some(1));
        assert_eq!(ids.get_or_allocate(&"c"), Ok(1));
        assert_eq!(ids.get_or_allocate(&"d"), Ok(3));
        assert!(matches!(
            ids.get_or_allocate(&"e"),
            Err(IdError::Exhausted { size: 3, .. })
        ));
        assert_eq!(
            ids.reserve(&"e", 2),
            Err(IdError::Taken {
                what: "conjunction ids",
                id: 2
            })
        );
        ids.release(&"b");
        assert_eq!(ids.reserve(&"e", 2), Ok(()));
        assert_eq!(ids.get(&"e"), Some(2));
    }
}
