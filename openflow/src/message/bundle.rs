//! Bundles through the ONF extension for OpenFlow 1.3 (ONF_ET_BUNDLE_CONTROL = 2300,
//! ONF_ET_BUNDLE_ADD_MESSAGE = 2301 under experimenter 0x4f4e4600): the OpenFlow 1.4
//! bundle bodies wrapped in an experimenter header, as lib/ofp-bundle.c encodes them for
//! OpenFlow 1.3.

use bytes::{BufMut, BytesMut};

use crate::message::Message;
use crate::wire::{Reader, put_zeros};
use crate::{Error, Result};

/// ONF_ET_BUNDLE_CONTROL.
pub const ONF_ET_BUNDLE_CONTROL: u32 = 2300;
/// ONF_ET_BUNDLE_ADD_MESSAGE.
pub const ONF_ET_BUNDLE_ADD_MESSAGE: u32 = 2301;

/// OFPBF_* bundle flags.
pub mod flags {
    /// OFPBF_ATOMIC: all or nothing.
    pub const ATOMIC: u16 = 1;
    /// OFPBF_ORDERED: apply in the order added.
    pub const ORDERED: u16 = 2;
}

/// Bundle control type (`enum ofp14_bundle_ctrl_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BundleCtrlType {
    /// OFPBCT_OPEN_REQUEST.
    OpenRequest,
    /// OFPBCT_OPEN_REPLY.
    OpenReply,
    /// OFPBCT_CLOSE_REQUEST.
    CloseRequest,
    /// OFPBCT_CLOSE_REPLY.
    CloseReply,
    /// OFPBCT_COMMIT_REQUEST.
    CommitRequest,
    /// OFPBCT_COMMIT_REPLY.
    CommitReply,
    /// OFPBCT_DISCARD_REQUEST.
    DiscardRequest,
    /// OFPBCT_DISCARD_REPLY.
    DiscardReply,
}

impl BundleCtrlType {
    fn to_wire(self) -> u16 {
        self as u16
    }

    fn from_wire(v: u16) -> Result<BundleCtrlType> {
        use BundleCtrlType::*;
        Ok(match v {
            0 => OpenRequest,
            1 => OpenReply,
            2 => CloseRequest,
            3 => CloseReply,
            4 => CommitRequest,
            5 => CommitReply,
            6 => DiscardRequest,
            7 => DiscardReply,
            v => return Err(Error::bad_value("bundle control type", format!("{v}"))),
        })
    }
}

/// A bundle control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BundleControl {
    /// Bundle id chosen by the controller.
    pub bundle_id: u32,
    /// Open / close / commit / discard, request or reply.
    pub ctrl_type: BundleCtrlType,
    /// [`flags`] bits.
    pub flags: u16,
}

impl BundleControl {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.bundle_id);
        out.put_u16(self.ctrl_type.to_wire());
        out.put_u16(self.flags);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<BundleControl> {
        let bundle_id = r.u32("bundle_ctrl bundle_id")?;
        let ctrl_type = BundleCtrlType::from_wire(r.u16("bundle_ctrl type")?)?;
        let flags = r.u16("bundle_ctrl flags")?;
        // Properties (none defined that OVS uses) are ignored.
        Ok(BundleControl {
            bundle_id,
            ctrl_type,
            flags,
        })
    }
}

/// A message added to a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BundleAdd {
    /// Bundle id.
    pub bundle_id: u32,
    /// [`flags`] bits (must equal the open's).
    pub flags: u16,
    /// Xid of the inner message; the switch reports a failure of it with this xid.
    pub xid: u32,
    /// The inner message (flow-mod, group-mod...).
    pub message: Box<Message>,
}

impl BundleAdd {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u32(self.bundle_id);
        put_zeros(out, 2);
        out.put_u16(self.flags);
        self.message.encode(self.xid, out)
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<BundleAdd> {
        let bundle_id = r.u32("bundle_add bundle_id")?;
        r.skip("bundle_add pad", 2)?;
        let flags = r.u16("bundle_add flags")?;
        let len = r.peek_u16("bundle_add inner message length", 2)? as usize;
        let mut inner = r.sub("bundle_add inner message", len)?;
        let (xid, message) = Message::decode_one(&mut inner)?;
        Ok(BundleAdd {
            bundle_id,
            flags,
            xid,
            message: Box::new(message),
        })
    }
}
