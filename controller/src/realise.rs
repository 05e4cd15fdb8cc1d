//! The realiser: what to send a switch so it holds exactly the desired flows, groups and
//! meters — computed over what changed, not over the whole switch.
//!
//! Owns: the desired pipeline of one switch by owner ([`Desired`]), what the switch holds
//! ([`Installed`]: read back from it on every new connection, then kept up to date with
//! what was sent and what the switch reported others did), and the plan between the two
//! for a set of dirty keys ([`plan`]), in dependency order: groups and meters added or
//! changed first, then flow deletions, then flow additions and changes, then the groups
//! and meters nothing uses any more. The node agent sends a plan as one bundle.
//!
//! A flow is identified the way OpenFlow identifies it: (table, priority, match). One whose
//! instructions differ is modified in place (MODIFY_STRICT keeps its counters); one whose
//! cookie differs, or that someone else touched, is re-added; one the switch has but nobody
//! wants is deleted strictly. br-int belongs to Switchyard: a flow nobody here wants is
//! removed whatever its cookie. An unchanged flow is never touched, so a controller restart
//! leaves every counter running.
//!
//! Memory: a switch's desired flows are kept only as keys and fingerprints, never whole:
//! the match as its encoded `ofp_match` bytes (shared by the owner index, the desired map and
//! the installed map), the rest as a hash. The bodies of the flows a change touches (cookie
//! and encoded instructions) live only from the feature's computation to the bundle
//! ([`Dirty`]); a flow-mod is put together from the two encodings, nothing is encoded
//! twice. At 1000 nodes × 100 pods that is 1.6M flows in a few hundred MB (see
//! BENCHMARKS.md).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use openflow::message::flow_mod::flags;
use openflow::{
    FlowMod, FlowModCommand, FlowStats, GroupDesc, GroupMod, GroupModCommand, Instruction, Match,
    Message, MeterBand, MeterMod, MeterModCommand, port,
};

use crate::features::{Flow, Owner};
use crate::pipeline::Table;

/// The hasher of the realiser's maps: FxHash (as rustc uses), several times faster than
/// std's SipHash on these short keys. The keys are ours, not an attacker's, so hash
/// flooding is no concern; fingerprints keep SipHash.
#[derive(Clone, Copy, Default)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // Keys often end alike (match padding): mix the high bits down, or hashbrown's
        // bucket index (the low bits) would collide (MurmurHash3's fmix64).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
type FxHashMap<K, V> = HashMap<K, V, FxBuild>;
type FxHashSet<K> = HashSet<K, FxBuild>;

/// What identifies a flow in a table: (table id, priority, match), in one shared allocation
/// (table, priority, then the match's canonical wire encoding: equal matches encode
/// equally). Cloning is a reference count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey(Arc<[u8]>);

impl FlowKey {
    /// The key of a flow with this table, priority and match.
    pub fn new(table_id: u8, priority: u16, match_: &Match) -> FlowKey {
        thread_local! {
            static SCRATCH: std::cell::RefCell<bytes::BytesMut> =
                std::cell::RefCell::new(bytes::BytesMut::with_capacity(256));
        }
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            buf.extend_from_slice(&[table_id]);
            buf.extend_from_slice(&priority.to_be_bytes());
            // Encoding a match the crate built cannot fail: every field has its width.
            if match_.encode(&mut buf).is_err() {
                buf.truncate(3);
            }
            FlowKey(Arc::from(&buf[..]))
        })
    }

    /// The table id.
    pub fn table_id(&self) -> u8 {
        self.0[0]
    }

    /// The priority.
    pub fn priority(&self) -> u16 {
        u16::from_be_bytes([self.0[1], self.0[2]])
    }

    /// The match, decoded again.
    pub fn match_(&self) -> Match {
        Match::from_wire(self.match_wire()).unwrap_or_default()
    }

    /// The match as encoded on the wire (`ofp_match`, padding included).
    pub fn match_wire(&self) -> &[u8] {
        &self.0[3..]
    }
}

/// A meter as a feature wants it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meter {
    /// Meter id.
    pub id: u32,
    /// OFPMF_* flags.
    pub flags: u16,
    /// Bands.
    pub bands: Vec<MeterBand>,
}

/// What a feature computes for one owner on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Flows.
    pub flows: Vec<Flow>,
    /// Flows prepared once and shared with other switches (see [`Prepared`]).
    pub shared: Arc<[Prepared]>,
    /// Groups (their ids from the owner's feature's allocator).
    pub groups: Vec<GroupDesc>,
    /// Meters.
    pub meters: Vec<Meter>,
}

/// A flow made ready for the realiser: its key and fingerprint computed, its body kept.
/// A flow that is the same on every switch (another node's pod CIDR: 999 of a node's 1622
/// flows at 1000 nodes) is prepared once and shared by every agent, which then only
/// clones reference counts and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    key: FlowKey,
    fingerprint: (u64, u64),
    body: Body,
    /// The flow_mod's length; `usize::MAX` when the instructions did not encode (longer than
    /// their 16-bit length field).
    length: usize,
}

impl Prepared {
    /// Prepares `f`: its match and instructions encoded once, as they will be sent.
    pub fn new(f: Flow) -> Prepared {
        let (instructions, encoded) = match encode_instructions(&f.instructions) {
            Ok(i) => (i, true),
            Err(()) => (Bytes::new(), false),
        };
        let key = FlowKey::new(f.table.id(), f.priority, &f.match_);
        let length = if encoded {
            FLOW_MOD_HEAD + key.match_wire().len() + instructions.len()
        } else {
            usize::MAX
        };
        Prepared {
            key,
            fingerprint: fingerprint(f.cookie, &instructions),
            body: Body {
                cookie: f.cookie,
                instructions,
            },
            length,
        }
    }
}

/// Encodes an instruction list. It fails only when a list outgrows its 16-bit length (tens
/// of thousands of actions: conjunctions of thousands of policy rules on one flow); such a
/// flow's owner is left out ([`Desired::set`]).
fn encode_instructions(list: &[Instruction]) -> Result<Bytes, ()> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<BytesMut> =
            std::cell::RefCell::new(BytesMut::with_capacity(512));
    }
    SCRATCH.with(|scratch| {
        let mut out = scratch.borrow_mut();
        out.clear();
        Instruction::encode_list(list, &mut out).map_err(|_| ())?;
        Ok(Bytes::copy_from_slice(&out))
    })
}

impl From<Vec<Flow>> for Parts {
    fn from(flows: Vec<Flow>) -> Parts {
        Parts {
            flows,
            ..Parts::default()
        }
    }
}

/// What a flow does beyond its key, as a feature computed it, encoded as it is sent (the
/// match is the key's): only kept until it is sent. Cloning is a reference count.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    cookie: u64,
    instructions: Bytes,
}

/// A desired flow, as kept: who claims it (a hash of the owner, enough to tell claimants
/// apart; the owner itself is found by its holdings when needed) and its fingerprint.
#[derive(Clone, Debug)]
struct Held {
    owner: u64,
    fingerprint: (u64, u64),
}

fn owner_hash(owner: &Owner) -> u64 {
    let mut h = DefaultHasher::new();
    owner.hash(&mut h);
    h.finish()
}

/// What one owner holds: its flow keys, and its groups and meters (rare: boxed, so the
/// many owners without any cost one pointer).
#[derive(Debug, Default)]
struct Holdings {
    flows: Box<[FlowKey]>,
    others: Option<Box<(Vec<u32>, Vec<u32>)>>,
}

/// The keys a change touched, with the new bodies of the desired flows among them: what
/// the next plan must look at.
#[derive(Debug, Default)]
pub struct Dirty {
    flows: FxHashSet<FlowKey>,
    bodies: FxHashMap<FlowKey, Body>,
    groups: HashSet<u32>,
    meters: HashSet<u32>,
    /// Look at everything (a new connection, a re-read). Every owner must be set again
    /// before the plan, so that every desired flow's body is here.
    all: bool,
}

impl Dirty {
    /// Everything: after a (re)connection or a re-read.
    pub fn everything() -> Dirty {
        Dirty {
            all: true,
            ..Dirty::default()
        }
    }

    /// True when nothing needs looking at.
    pub fn is_empty(&self) -> bool {
        !self.all && self.flows.is_empty() && self.groups.is_empty() && self.meters.is_empty()
    }
}

/// The longest message a bundle carries: OpenFlow's 16-bit length less the BUNDLE_ADD's
/// own 16 bytes (header, bundle id, flags) around it.
pub const MAX_BUNDLED_MESSAGE: usize = u16::MAX as usize - 16;

/// A flow_mod's bytes before its match: the OpenFlow header and 40 fixed bytes.
const FLOW_MOD_HEAD: usize = 48;

/// Why an owner's parts were left out of a switch's desired pipeline: one of its flows or
/// groups does not fit one OpenFlow message, so no switch could take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// What does not fit (a flow's table and priority, or a group's id).
    pub what: String,
    /// Its encoded length in bytes (more than [`MAX_BUNDLED_MESSAGE`]).
    pub length: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} bytes, more than one OpenFlow message in a bundle holds ({MAX_BUNDLED_MESSAGE})",
            self.what, self.length
        )
    }
}

/// The first of `parts`' flows and groups that does not fit one bundled message, if any.
fn too_long(parts: &Parts, prepared: &[Prepared]) -> Option<TooLong> {
    for p in prepared {
        if p.length > MAX_BUNDLED_MESSAGE {
            return Some(TooLong {
                what: format!(
                    "a flow in table {} at priority {}",
                    Table::from_id(p.key.table_id())
                        .map_or_else(|| p.key.table_id().to_string(), |t| t.name().to_owned()),
                    p.key.priority()
                ),
                length: p.length,
            });
        }
    }
    let mut scratch = BytesMut::new();
    for g in &parts.groups {
        scratch.clear();
        // Encoding fails exactly when the length does not fit the header's 16 bits.
        let length = match group_mod(GroupModCommand::Add, g).encode(0, &mut scratch) {
            Ok(()) => scratch.len(),
            Err(_) => usize::MAX,
        };
        if length > MAX_BUNDLED_MESSAGE {
            return Some(TooLong {
                what: format!("group {} ({} buckets)", g.group_id, g.buckets.len()),
                length,
            });
        }
    }
    None
}

/// One switch's desired pipeline, by owner.
#[derive(Debug, Default)]
pub struct Desired {
    owners: FxHashMap<Owner, Holdings>,
    flows: FxHashMap<FlowKey, Held>,
    groups: HashMap<u32, (u64, GroupDesc)>,
    meters: HashMap<u32, (u64, Meter)>,
}

impl Desired {
    /// Replaces what `owner` wants with `parts`, recording every key touched (and the new
    /// flows' bodies) in `dirty`. When two owners claim one key (a pod deleted and another
    /// added with its address in one batch), the last one set wins; removing the loser
    /// later leaves the winner alone.
    ///
    /// An owner one of whose flows or groups does not fit one OpenFlow message is left out
    /// whole (what it had is removed, as for an owner that wants nothing), and the error
    /// says which part: a bundle holding it would fail on every switch, and with it every
    /// other owner's change.
    pub fn set(
        &mut self,
        owner: &Owner,
        mut parts: Parts,
        dirty: &mut Dirty,
    ) -> Result<(), TooLong> {
        self.remove(owner, dirty);
        if parts.flows.is_empty()
            && parts.shared.is_empty()
            && parts.groups.is_empty()
            && parts.meters.is_empty()
        {
            return Ok(());
        }
        let claim = owner_hash(owner);
        let count = parts.flows.len() + parts.shared.len();
        let prepared: Vec<Prepared> = std::mem::take(&mut parts.flows)
            .into_iter()
            .map(Prepared::new)
            .chain(parts.shared.iter().cloned())
            .collect();
        if let Some(e) = too_long(&parts, &prepared) {
            return Err(e);
        }
        self.flows.reserve(count);
        dirty.bodies.reserve(count);
        let mut keys = Vec::with_capacity(count);
        for Prepared {
            key,
            fingerprint,
            body,
            ..
        } in prepared
        {
            let held = Held {
                owner: claim,
                fingerprint,
            };
            self.flows.insert(key.clone(), held);
            // A plan over everything looks at every desired key anyway.
            if !dirty.all {
                dirty.flows.insert(key.clone());
            }
            dirty.bodies.insert(key.clone(), body);
            keys.push(key);
        }
        let mut groups = Vec::new();
        for g in parts.groups {
            dirty.groups.insert(g.group_id);
            groups.push(g.group_id);
            self.groups.insert(g.group_id, (claim, g));
        }
        let mut meters = Vec::new();
        for m in parts.meters {
            dirty.meters.insert(m.id);
            meters.push(m.id);
            self.meters.insert(m.id, (claim, m));
        }
        let others = (!groups.is_empty() || !meters.is_empty()).then(|| Box::new((groups, meters)));
        self.owners.insert(
            owner.clone(),
            Holdings {
                flows: keys.into_boxed_slice(),
                others,
            },
        );
        Ok(())
    }

    /// Forgets what `owner` wanted.
    pub fn remove(&mut self, owner: &Owner, dirty: &mut Dirty) {
        let Some(old) = self.owners.remove(owner) else {
            return;
        };
        let claim = owner_hash(owner);
        for key in old.flows.into_vec() {
            if self.flows.get(&key).is_some_and(|f| f.owner == claim) {
                self.flows.remove(&key);
                dirty.bodies.remove(&key);
            }
            dirty.flows.insert(key);
        }
        let (old_groups, old_meters) = old.others.map(|b| *b).unwrap_or_default();
        for id in old_groups {
            if self.groups.get(&id).is_some_and(|(o, _)| *o == claim) {
                self.groups.remove(&id);
            }
            dirty.groups.insert(id);
        }
        for id in old_meters {
            if self.meters.get(&id).is_some_and(|(o, _)| *o == claim) {
                self.meters.remove(&id);
            }
            dirty.meters.insert(id);
        }
    }

    /// Forgets everything (before a full recomputation).
    pub fn clear(&mut self) {
        *self = Desired::default();
    }

    /// How many flows are desired.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// How many groups are desired.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// How many meters are desired.
    pub fn meter_count(&self) -> usize {
        self.meters.len()
    }

    /// Who owns the flow with this key, if anyone. A scan of the owners' holdings: asked
    /// only when the switch reports a foreign change.
    pub fn owner_of(&self, key: &FlowKey) -> Option<&Owner> {
        let claim = self.flows.get(key)?.owner;
        self.owners
            .iter()
            .find(|(o, h)| owner_hash(o) == claim && h.flows.iter().any(|k| k == key))
            .map(|(o, _)| o)
    }

    /// Who wanted what `change` adds or modifies: the owner a switch's refusal of that
    /// message is blamed on. None for deletions (what goes belongs to nobody any more) and
    /// for what no owner holds. A scan, like `owner_of`: asked only when a bundle fails.
    pub fn owner_of_change(&self, change: &Change) -> Option<&Owner> {
        let holds = |claim: u64, held: &dyn Fn(&Holdings) -> bool| {
            self.owners
                .iter()
                .find(|(o, h)| owner_hash(o) == claim && held(h))
                .map(|(o, _)| o)
        };
        match change {
            Change::AddFlow(key) | Change::ModifyFlow(key) => self.owner_of(key),
            Change::AddGroup(id) | Change::ModifyGroup(id) => {
                let (claim, _) = self.groups.get(id)?;
                holds(*claim, &|h| {
                    h.others.as_ref().is_some_and(|o| o.0.contains(id))
                })
            }
            Change::AddMeter(id) | Change::ModifyMeter(id) => {
                let (claim, _) = self.meters.get(id)?;
                holds(*claim, &|h| {
                    h.others.as_ref().is_some_and(|o| o.1.contains(id))
                })
            }
            Change::DeleteFlow(_) | Change::DeleteGroup(_) | Change::DeleteMeter(_) => None,
        }
    }
}

/// A fingerprint of what a flow does beyond its key: its cookie and a hash (SipHash: a
/// collision would hide a change) of its encoded instructions. The encoding is canonical,
/// so equal instructions, ours or read back from the switch, hash equally.
fn fingerprint(cookie: u64, instructions: &[u8]) -> (u64, u64) {
    let mut h = DefaultHasher::new();
    h.write(instructions);
    (cookie, h.finish())
}

/// Whether a flow read from a switch does what a feature wants: the same cookie and the
/// same instructions once encoded (canonical, as the realiser compares them). For readers
/// that diff without a [`Desired`] (the admin API's `DiffFlows`).
pub fn same_body(desired: &Flow, cookie: u64, instructions: &[Instruction]) -> bool {
    fingerprint(
        desired.cookie,
        &encode_instructions(&desired.instructions).unwrap_or_default(),
    ) == fingerprint(
        cookie,
        &encode_instructions(instructions).unwrap_or_default(),
    )
}

/// What one switch holds, as far as the controller knows: a fingerprint per flow, `None`
/// when unknown (someone else touched it), which makes the next plan re-add or delete it.
#[derive(Debug, Default)]
pub struct Installed {
    flows: FxHashMap<FlowKey, Option<(u64, u64)>>,
    groups: HashMap<u32, Option<GroupDesc>>,
    meters: HashMap<u32, Option<Meter>>,
}

impl Installed {
    /// What a switch reported holding (a flow dump and a group dump).
    pub fn from_switch(flows: Vec<FlowStats>, groups: Vec<GroupDesc>) -> Installed {
        Installed {
            flows: flows
                .into_iter()
                // Flows the switch made itself (learned) are not ours to diff.
                .filter(|s| !crate::pipeline::switch_made(s.cookie))
                .map(|s| {
                    let fp = fingerprint(
                        s.cookie,
                        &encode_instructions(&s.instructions).unwrap_or_default(),
                    );
                    let key = FlowKey::new(s.table_id, s.priority, &s.match_);
                    (key, Some(fp))
                })
                .collect(),
            groups: groups.into_iter().map(|g| (g.group_id, Some(g))).collect(),
            meters: HashMap::new(),
        }
    }

    /// How many flows the switch holds.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Notes what the switch reported about a flow someone else touched, so the next plan
    /// puts it right (marked in `dirty`). `gone`: the flow was deleted (FLOW_REMOVED, or a
    /// monitor's delete); otherwise it was added or changed and is no longer known. Returns
    /// the owner whose flows must be computed again to restore it, if anyone wants it.
    pub fn foreign_change(
        &mut self,
        key: FlowKey,
        gone: bool,
        desired: &Desired,
        dirty: &mut Dirty,
    ) -> Option<Owner> {
        let owner = desired.owner_of(&key).cloned();
        if gone {
            // Our own deletions come back as FLOW_REMOVED too: they are simply forgotten.
            self.flows.remove(&key);
            if owner.is_some() {
                dirty.flows.insert(key);
            }
        } else {
            self.flows.insert(key.clone(), None);
            dirty.flows.insert(key);
        }
        owner
    }
}

/// One change to a switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add (or replace) a flow.
    AddFlow(FlowKey),
    /// Replace a flow's instructions in place.
    ModifyFlow(FlowKey),
    /// Delete exactly this flow.
    DeleteFlow(FlowKey),
    /// Add a group.
    AddGroup(u32),
    /// Change a group.
    ModifyGroup(u32),
    /// Delete a group.
    DeleteGroup(u32),
    /// Add a meter.
    AddMeter(u32),
    /// Change a meter.
    ModifyMeter(u32),
    /// Delete a meter.
    DeleteMeter(u32),
}

/// The changes for the dirty keys, in dependency order, with the messages that make them.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// What changes.
    pub changes: Vec<Change>,
    /// The messages, in the same order.
    pub messages: Vec<Message>,
}

impl Plan {
    /// True when the switch is already right.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// A short account for logs: `flows +3 ~1 -2 groups +0 ~0 -0 meters +0 ~0 -0`.
    pub fn summary(&self) -> String {
        let n = |f: fn(&Change) -> bool| self.changes.iter().filter(|c| f(c)).count();
        format!(
            "flows +{} ~{} -{} groups +{} ~{} -{} meters +{} ~{} -{}",
            n(|c| matches!(c, Change::AddFlow(_))),
            n(|c| matches!(c, Change::ModifyFlow(_))),
            n(|c| matches!(c, Change::DeleteFlow(_))),
            n(|c| matches!(c, Change::AddGroup(_))),
            n(|c| matches!(c, Change::ModifyGroup(_))),
            n(|c| matches!(c, Change::DeleteGroup(_))),
            n(|c| matches!(c, Change::AddMeter(_))),
            n(|c| matches!(c, Change::ModifyMeter(_))),
            n(|c| matches!(c, Change::DeleteMeter(_))),
        )
    }

    /// The tables the plan touches, for logs.
    pub fn tables(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::AddFlow(k) | Change::ModifyFlow(k) | Change::DeleteFlow(k) => Some(
                    Table::from_id(k.table_id())
                        .map(Table::name)
                        .unwrap_or("foreign"),
                ),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The plan that makes the switch hold `desired` for every key in `dirty`.
pub fn plan(desired: &Desired, installed: &Installed, dirty: &mut Dirty) -> Plan {
    let mut flow_keys: Vec<FlowKey> = if dirty.all {
        let mut all: Vec<FlowKey> = desired.flows.keys().cloned().collect();
        all.extend(
            installed
                .flows
                .keys()
                .filter(|k| !desired.flows.contains_key(*k))
                .cloned(),
        );
        all
    } else {
        dirty.flows.iter().cloned().collect()
    };
    // The bodies move into the messages (they are not needed after). A desired flow whose
    // body is not at hand cannot be sent: its owner was not set again (a caller's bug); it
    // is left for the next full realisation rather than guessed.
    let mut bodies = std::mem::take(&mut dirty.bodies);
    let mut body = |key: &FlowKey| bodies.remove(key);
    // Bundles in pipeline order, higher priority first (easier to read in a capture).
    flow_keys.sort_by_key(|k| (k.table_id(), std::cmp::Reverse(k.priority())));
    let ids = |d: &HashSet<u32>, a: Vec<u32>, b: Vec<u32>| -> Vec<u32> {
        let mut v: Vec<u32> = if dirty.all {
            a.into_iter().chain(b).collect()
        } else {
            d.iter().copied().collect()
        };
        v.sort_unstable();
        v.dedup();
        v
    };
    let group_ids = ids(
        &dirty.groups,
        desired.groups.keys().copied().collect(),
        installed.groups.keys().copied().collect(),
    );
    let meter_ids = ids(
        &dirty.meters,
        desired.meters.keys().copied().collect(),
        installed.meters.keys().copied().collect(),
    );

    let mut p = Plan::default();
    let group_deletes = plan_ids(
        &mut p,
        &group_ids,
        |id| desired.groups.get(&id).map(|(_, g)| g),
        |id| installed.groups.get(&id),
        |id, g, add| {
            let (change, command) = if add {
                (Change::AddGroup(id), GroupModCommand::Add)
            } else {
                (Change::ModifyGroup(id), GroupModCommand::Modify)
            };
            (change, group_mod(command, g))
        },
    );
    let meter_deletes = plan_ids(
        &mut p,
        &meter_ids,
        |id| desired.meters.get(&id).map(|(_, m)| m),
        |id| installed.meters.get(&id),
        |id, m, add| {
            let (change, command) = if add {
                (Change::AddMeter(id), MeterModCommand::Add)
            } else {
                (Change::ModifyMeter(id), MeterModCommand::Modify)
            };
            (change, meter_mod(command, m))
        },
    );
    // Deletions before additions: a bundle never briefly holds an old and a new flow for
    // one purpose.
    let mut adds = Vec::new();
    for key in flow_keys {
        let want = desired.flows.get(&key);
        match (want, installed.flows.get(&key)) {
            (None, Some(_)) => {
                let m = delete_flow(&key);
                p.push(Change::DeleteFlow(key), m);
            }
            (Some(_), None) => {
                if let Some(b) = body(&key) {
                    adds.push((Change::AddFlow(key.clone()), add_flow(&key, b)));
                }
            }
            (Some(w), Some(fp)) => match fp {
                Some(have) if *have == w.fingerprint => {}
                Some((cookie, _)) if *cookie == w.fingerprint.0 => {
                    if let Some(b) = body(&key) {
                        adds.push((Change::ModifyFlow(key.clone()), modify_flow(&key, b)));
                    }
                }
                _ => {
                    if let Some(b) = body(&key) {
                        adds.push((Change::AddFlow(key.clone()), add_flow(&key, b)));
                    }
                }
            },
            (None, None) => {}
        }
    }
    for (c, m) in adds {
        p.push(c, m);
    }
    for id in group_deletes {
        p.push(
            Change::DeleteGroup(id),
            Message::GroupMod(GroupMod {
                command: GroupModCommand::Delete,
                group_type: openflow::GroupType::All,
                group_id: id,
                buckets: vec![],
            }),
        );
    }
    for id in meter_deletes {
        p.push(
            Change::DeleteMeter(id),
            Message::MeterMod(MeterMod {
                command: MeterModCommand::Delete,
                flags: 0,
                meter_id: id,
                bands: vec![],
            }),
        );
    }
    p
}

/// Adds and modifies for groups or meters (by id); returns the ids to delete once the flows
/// that used them are gone.
fn plan_ids<'a, T: PartialEq + 'a>(
    p: &mut Plan,
    ids: &[u32],
    want: impl Fn(u32) -> Option<&'a T>,
    have: impl Fn(u32) -> Option<&'a Option<T>>,
    change: impl Fn(u32, &T, bool) -> (Change, Message),
) -> Vec<u32> {
    let mut deletes = Vec::new();
    for &id in ids {
        match (want(id), have(id)) {
            (Some(w), None) => {
                let (c, m) = change(id, w, true);
                p.push(c, m);
            }
            (Some(w), Some(h)) if h.as_ref() != Some(w) => {
                let (c, m) = change(id, w, false);
                p.push(c, m);
            }
            (None, Some(_)) => deletes.push(id),
            _ => {}
        }
    }
    deletes
}

impl Plan {
    fn push(&mut self, change: Change, message: Message) {
        self.changes.push(change);
        self.messages.push(message);
    }
}

/// Records that the switch now holds `desired` for every key in `dirty` (after the plan's
/// bundle was committed).
pub fn commit(desired: &Desired, installed: &mut Installed, dirty: Dirty) {
    if dirty.all {
        installed.flows = desired
            .flows
            .iter()
            .map(|(k, f)| (k.clone(), Some(f.fingerprint)))
            .collect();
        installed.groups = desired
            .groups
            .iter()
            .map(|(id, (_, g))| (*id, Some(g.clone())))
            .collect();
        installed.meters = desired
            .meters
            .iter()
            .map(|(id, (_, m))| (*id, Some(m.clone())))
            .collect();
        return;
    }
    for key in dirty.flows {
        match desired.flows.get(&key) {
            Some(f) => {
                installed.flows.insert(key, Some(f.fingerprint));
            }
            None => {
                installed.flows.remove(&key);
            }
        }
    }
    for id in dirty.groups {
        match desired.groups.get(&id) {
            Some((_, g)) => {
                installed.groups.insert(id, Some(g.clone()));
            }
            None => {
                installed.groups.remove(&id);
            }
        }
    }
    for id in dirty.meters {
        match desired.meters.get(&id) {
            Some((_, m)) => {
                installed.meters.insert(id, Some(m.clone()));
            }
            None => {
                installed.meters.remove(&id);
            }
        }
    }
}

// Flow-mods are put together from the key's encoded match and the body's encoded
// instructions: nothing is encoded twice, and a flow shared by many switches is encoded once.

fn add_flow(key: &FlowKey, b: Body) -> Message {
    FlowMod {
        command: FlowModCommand::Add,
        // The switch reports every deletion of our flows, so one made by hand is noticed.
        flags: flags::SEND_FLOW_REM,
        table_id: key.table_id(),
        priority: key.priority(),
        cookie: b.cookie,
        ..FlowMod::default()
    }
    .encoded(key.match_wire(), &b.instructions)
}

fn modify_flow(key: &FlowKey, b: Body) -> Message {
    // The flags of a flow are its own: a modify leaves them (and the counters) alone.
    FlowMod {
        command: FlowModCommand::ModifyStrict,
        flags: 0,
        table_id: key.table_id(),
        priority: key.priority(),
        cookie: b.cookie,
        ..FlowMod::default()
    }
    .encoded(key.match_wire(), &b.instructions)
}

fn delete_flow(key: &FlowKey) -> Message {
    FlowMod {
        command: FlowModCommand::DeleteStrict,
        table_id: key.table_id(),
        priority: key.priority(),
        out_port: port::ANY,
        out_group: port::GROUP_ANY,
        ..FlowMod::default()
    }
    .encoded(key.match_wire(), &[])
}

fn group_mod(command: GroupModCommand, g: &GroupDesc) -> Message {
    Message::GroupMod(GroupMod {
        command,
        group_type: g.group_type,
        group_id: g.group_id,
        buckets: g.buckets.clone(),
    })
}

fn meter_mod(command: MeterModCommand, m: &Meter) -> Message {
    Message::MeterMod(MeterMod {
        command,
        flags: m.flags,
        meter_id: m.id,
        bands: m.bands.clone(),
    })
}

#[cfg(test)]
mod tests;
