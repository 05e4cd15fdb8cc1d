//! OFPT_GROUP_MOD and the group description / statistics multipart entries.

use bytes::{BufMut, BytesMut};

use crate::action::Action;
use crate::port;
use crate::wire::{Reader, patch_len16, put_zeros};
use crate::{Error, Result};

/// Group-mod command (`enum ofp_group_mod_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum GroupModCommand {
    /// OFPGC_ADD.
    #[default]
    Add,
    /// OFPGC_MODIFY.
    Modify,
    /// OFPGC_DELETE.
    Delete,
}

/// Group type (`enum ofp_group_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum GroupType {
    /// OFPGT_ALL: every bucket (multicast/flood).
    #[default]
    All,
    /// OFPGT_SELECT: one bucket, chosen by hash and weight (load balancing).
    Select,
    /// OFPGT_INDIRECT: the single bucket.
    Indirect,
    /// OFPGT_FF: the first live bucket.
    FastFailover,
}

impl GroupType {
    fn to_wire(self) -> u8 {
        match self {
            GroupType::All => 0,
            GroupType::Select => 1,
            GroupType::Indirect => 2,
            GroupType::FastFailover => 3,
        }
    }

    fn from_wire(v: u8) -> Result<GroupType> {
        Ok(match v {
            0 => GroupType::All,
            1 => GroupType::Select,
            2 => GroupType::Indirect,
            3 => GroupType::FastFailover,
            v => return Err(Error::bad_value("group type", format!("{v}"))),
        })
    }
}

/// A bucket of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Relative weight (select groups).
    pub weight: u16,
    /// Port whose liveness decides the bucket's (fast failover), or [`port::ANY`].
    pub watch_port: u32,
    /// Group whose liveness decides the bucket's, or [`port::GROUP_ANY`].
    pub watch_group: u32,
    /// Actions applied to the packet copy.
    pub actions: Vec<Action>,
}

impl Bucket {
    /// A bucket of weight 0 that watches nothing: what `all`, `indirect` and
    /// `fast_failover` groups need (ovs-vswitchd rejects a nonzero weight on them with
    /// OFPGMFC_INVALID_GROUP). Select groups need [`Bucket::weighted`].
    pub fn new(actions: Vec<Action>) -> Bucket {
        Bucket::weighted(0, actions)
    }

    /// A bucket with a weight, for select groups (a weight of 0 is never chosen).
    pub fn weighted(weight: u16, actions: Vec<Action>) -> Bucket {
        Bucket {
            weight,
            watch_port: port::ANY,
            watch_group: port::GROUP_ANY,
            actions,
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u16(0);
        out.put_u16(self.weight);
        out.put_u32(self.watch_port);
        out.put_u32(self.watch_group);
        put_zeros(out, 4);
        Action::encode_list(&self.actions, out)?;
        let len = out.len() - start;
        patch_len16(out, start, len, "bucket")
    }

    fn decode(r: &mut Reader) -> Result<Bucket> {
        let len = r.peek_u16("bucket length", 0)? as usize;
        if len < 16 || !len.is_multiple_of(8) {
            return Err(Error::BadLength {
                what: "bucket",
                length: len,
                reason: "must be a multiple of 8, at least 16",
            });
        }
        let mut b = r.sub("bucket", len)?;
        b.skip("bucket length", 2)?;
        let weight = b.u16("bucket weight")?;
        let watch_port = b.u32("bucket watch_port")?;
        let watch_group = b.u32("bucket watch_group")?;
        b.skip("bucket pad", 4)?;
        let actions = Action::decode_list(&mut b)?;
        Ok(Bucket {
            weight,
            watch_port,
            watch_group,
            actions,
        })
    }

    fn decode_list(r: &mut Reader) -> Result<Vec<Bucket>> {
        let mut v = Vec::new();
        while !r.is_empty() {
            v.push(Bucket::decode(r)?);
        }
        Ok(v)
    }
}

/// A group-mod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupMod {
    /// Add, modify or delete.
    pub command: GroupModCommand,
    /// Group type.
    pub group_type: GroupType,
    /// Group id ([`port::GROUP_ALL`] to delete all).
    pub group_id: u32,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

impl GroupMod {
    /// OFPGC_ADD of a group.
    pub fn add(group_id: u32, group_type: GroupType, buckets: Vec<Bucket>) -> GroupMod {
        GroupMod {
            command: GroupModCommand::Add,
            group_type,
            group_id,
            buckets,
        }
    }

    /// OFPGC_DELETE of a group ([`port::GROUP_ALL`] for every group).
    pub fn delete(group_id: u32) -> GroupMod {
        GroupMod {
            command: GroupModCommand::Delete,
            group_type: GroupType::All,
            group_id,
            buckets: Vec::new(),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u16(match self.command {
            GroupModCommand::Add => 0,
            GroupModCommand::Modify => 1,
            GroupModCommand::Delete => 2,
        });
        out.put_u8(self.group_type.to_wire());
        out.put_u8(0);
        out.put_u32(self.group_id);
        self.buckets.iter().try_for_each(|b| b.encode(out))
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<GroupMod> {
        let command = match r.u16("group_mod command")? {
            0 => GroupModCommand::Add,
            1 => GroupModCommand::Modify,
            2 => GroupModCommand::Delete,
            v => return Err(Error::bad_value("group_mod command", format!("{v}"))),
        };
        let group_type = GroupType::from_wire(r.u8("group_mod type")?)?;
        r.skip("group_mod pad", 1)?;
        let group_id = r.u32("group_mod group_id")?;
        let buckets = Bucket::decode_list(r)?;
        Ok(GroupMod {
            command,
            group_type,
            group_id,
            buckets,
        })
    }
}

/// An OFPMP_GROUP_DESC reply entry: a group as the switch has it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupDesc {
    /// Group type.
    pub group_type: GroupType,
    /// Group id.
    pub group_id: u32,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

impl GroupDesc {
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u16(0);
        out.put_u8(self.group_type.to_wire());
        out.put_u8(0);
        out.put_u32(self.group_id);
        self.buckets.iter().try_for_each(|b| b.encode(out))?;
        let len = out.len() - start;
        patch_len16(out, start, len, "group desc")
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<GroupDesc> {
        let len = r.peek_u16("group desc length", 0)? as usize;
        if len < 8 {
            return Err(Error::BadLength {
                what: "group desc",
                length: len,
                reason: "shorter than its 8-byte header",
            });
        }
        let mut g = r.sub("group desc", len)?;
        g.skip("group desc length", 2)?;
        let group_type = GroupType::from_wire(g.u8("group desc type")?)?;
        g.skip("group desc pad", 1)?;
        let group_id = g.u32("group desc group_id")?;
        let buckets = Bucket::decode_list(&mut g)?;
        Ok(GroupDesc {
            group_type,
            group_id,
            buckets,
        })
    }
}

/// An OFPMP_GROUP reply entry: counters of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupStats {
    /// Group id.
    pub group_id: u32,
    /// Flows and groups that reference this group.
    pub ref_count: u32,
    /// Packets processed.
    pub packet_count: u64,
    /// Bytes processed.
    pub byte_count: u64,
    /// Seconds since the group was added.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Per bucket: (packet_count, byte_count).
    pub bucket_stats: Vec<(u64, u64)>,
}

impl GroupStats {
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u16(0);
        put_zeros(out, 2);
        out.put_u32(self.group_id);
        out.put_u32(self.ref_count);
        put_zeros(out, 4);
        out.put_u64(self.packet_count);
        out.put_u64(self.byte_count);
        out.put_u32(self.duration_sec);
        out.put_u32(self.duration_nsec);
        for (p, b) in &self.bucket_stats {
            out.put_u64(*p);
            out.put_u64(*b);
        }
        let len = out.len() - start;
        patch_len16(out, start, len, "group stats")
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<GroupStats> {
        let len = r.peek_u16("group stats length", 0)? as usize;
        if len < 40 || !(len - 40).is_multiple_of(16) {
            return Err(Error::BadLength {
                what: "group stats",
                length: len,
                reason: "must be 40 bytes plus 16 per bucket",
            });
        }
        let mut g = r.sub("group stats", len)?;
        g.skip("group stats length", 4)?;
        let group_id = g.u32("group stats group_id")?;
        let ref_count = g.u32("group stats ref_count")?;
        g.skip("group stats pad", 4)?;
        let packet_count = g.u64("group stats packet_count")?;
        let byte_count = g.u64("group stats byte_count")?;
        let duration_sec = g.u32("group stats duration_sec")?;
        let duration_nsec = g.u32("group stats duration_nsec")?;
        let mut bucket_stats = Vec::new();
        while !g.is_empty() {
            bucket_stats.push((g.u64("bucket packet_count")?, g.u64("bucket byte_count")?));
        }
        Ok(GroupStats {
            group_id,
            ref_count,
            packet_count,
            byte_count,
            duration_sec,
            duration_nsec,
            bucket_stats,
        })
    }
}
