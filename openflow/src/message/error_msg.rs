//! OFPT_ERROR: error type and code with their OVS names, the experimenter (NX/ONF) form,
//! and the offending bytes the switch echoes back.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Result;
use crate::field::{NX_EXPERIMENTER, ONF_EXPERIMENTER};
use crate::wire::Reader;

/// OFPET_EXPERIMENTER: the error carries an experimenter id and its own type.
pub const OFPET_EXPERIMENTER: u16 = 0xffff;

/// An error message from the switch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorMsg {
    /// OFPET_* type; 0xffff for experimenter errors.
    pub error_type: u16,
    /// OFP*C_* code; for experimenter errors, the experimenter's `exp_type`.
    pub code: u16,
    /// Experimenter id (0x2320 Nicira, 0x4f4e4600 ONF) when `error_type == 0xffff`.
    pub experimenter: Option<u32>,
    /// The offending request (at least its first 64 bytes), or text for HELLO_FAILED.
    pub data: Bytes,
}

impl ErrorMsg {
    /// The xid of the offending message, read from the header echoed in `data`.
    pub fn offending_xid(&self) -> Option<u32> {
        (self.data.len() >= 8)
            .then(|| u32::from_be_bytes([self.data[4], self.data[5], self.data[6], self.data[7]]))
    }

    /// The OFPT_* type of the offending message.
    pub fn offending_type(&self) -> Option<u8> {
        (self.data.len() >= 8).then(|| self.data[1])
    }

    /// The symbolic name OVS uses (`OFPBIC_BAD_TABLE_ID`, `OFPBFC_MSG_FAILED`...), or
    /// `None` when this crate does not know the pair.
    pub fn name(&self) -> Option<&'static str> {
        error_name(self.error_type, self.code, self.experimenter)
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<ErrorMsg> {
        let error_type = r.u16("error type")?;
        let code = r.u16("error code")?;
        let experimenter = if error_type == OFPET_EXPERIMENTER {
            Some(r.u32("error experimenter id")?)
        } else {
            None
        };
        Ok(ErrorMsg {
            error_type,
            code,
            experimenter,
            data: r.rest(),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.error_type);
        out.put_u16(self.code);
        if self.error_type == OFPET_EXPERIMENTER {
            out.put_u32(self.experimenter.unwrap_or(0));
        }
        out.put_slice(&self.data);
    }
}

impl fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "unknown error")?,
        }
        match self.experimenter {
            Some(e) => write!(f, " (experimenter {e:#x}, type {})", self.code)?,
            None => write!(f, " (type {}, code {})", self.error_type, self.code)?,
        }
        if self.error_type == 0 && !self.data.is_empty() {
            write!(f, ": {}", String::from_utf8_lossy(&self.data))?;
        }
        Ok(())
    }
}

fn error_name(t: u16, c: u16, exp: Option<u32>) -> Option<&'static str> {
    // OpenFlow 1.3 §7.4.4; ONF bundle errors as OVS sends them in 1.3
    // (ONF1.3(2300+n) in lib/ofp-errors.h).
    let table: &[&str] = match (t, exp) {
        (0, None) => &["OFPHFC_INCOMPATIBLE", "OFPHFC_EPERM"],
        (1, None) => &[
            "OFPBRC_BAD_VERSION",
            "OFPBRC_BAD_TYPE",
            "OFPBRC_BAD_MULTIPART",
            "OFPBRC_BAD_EXPERIMENTER",
            "OFPBRC_BAD_EXP_TYPE",
            "OFPBRC_EPERM",
            "OFPBRC_BAD_LEN",
            "OFPBRC_BUFFER_EMPTY",
            "OFPBRC_BUFFER_UNKNOWN",
            "OFPBRC_BAD_TABLE_ID",
            "OFPBRC_IS_SLAVE",
            "OFPBRC_BAD_PORT",
            "OFPBRC_BAD_PACKET",
            "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
        ],
        (2, None) => &[
            "OFPBAC_BAD_TYPE",
            "OFPBAC_BAD_LEN",
            "OFPBAC_BAD_EXPERIMENTER",
            "OFPBAC_BAD_EXP_TYPE",
            "OFPBAC_BAD_OUT_PORT",
            "OFPBAC_BAD_ARGUMENT",
            "OFPBAC_EPERM",
            "OFPBAC_TOO_MANY",
            "OFPBAC_BAD_QUEUE",
            "OFPBAC_BAD_OUT_GROUP",
            "OFPBAC_MATCH_INCONSISTENT",
            "OFPBAC_UNSUPPORTED_ORDER",
            "OFPBAC_BAD_TAG",
            "OFPBAC_BAD_SET_TYPE",
            "OFPBAC_BAD_SET_LEN",
            "OFPBAC_BAD_SET_ARGUMENT",
        ],
        (3, None) => &[
            "OFPBIC_UNKNOWN_INST",
            "OFPBIC_UNSUP_INST",
            "OFPBIC_BAD_TABLE_ID",
            "OFPBIC_UNSUP_METADATA",
            "OFPBIC_UNSUP_METADATA_MASK",
            "OFPBIC_BAD_EXPERIMENTER",
            "OFPBIC_BAD_EXP_TYPE",
            "OFPBIC_BAD_LEN",
            "OFPBIC_EPERM",
        ],
        (4, None) => &[
            "OFPBMC_BAD_TYPE",
            "OFPBMC_BAD_LEN",
            "OFPBMC_BAD_TAG",
            "OFPBMC_BAD_DL_ADDR_MASK",
            "OFPBMC_BAD_NW_ADDR_MASK",
            "OFPBMC_BAD_WILDCARDS",
            "OFPBMC_BAD_FIELD",
            "OFPBMC_BAD_VALUE",
            "OFPBMC_BAD_MASK",
            "OFPBMC_BAD_PREREQ",
            "OFPBMC_DUP_FIELD",
            "OFPBMC_EPERM",
        ],
        (5, None) => &[
            "OFPFMFC_UNKNOWN",
            "OFPFMFC_TABLE_FULL",
            "OFPFMFC_BAD_TABLE_ID",
            "OFPFMFC_OVERLAP",
            "OFPFMFC_EPERM",
            "OFPFMFC_BAD_TIMEOUT",
            "OFPFMFC_BAD_COMMAND",
            "OFPFMFC_BAD_FLAGS",
        ],
        (6, None) => &[
            "OFPGMFC_GROUP_EXISTS",
            "OFPGMFC_INVALID_GROUP",
            "OFPGMFC_WEIGHT_UNSUPPORTED",
            "OFPGMFC_OUT_OF_GROUPS",
            "OFPGMFC_OUT_OF_BUCKETS",
            "OFPGMFC_CHAINING_UNSUPPORTED",
            "OFPGMFC_WATCH_UNSUPPORTED",
            "OFPGMFC_LOOP",
            "OFPGMFC_UNKNOWN_GROUP",
            "OFPGMFC_CHAINED_GROUP",
            "OFPGMFC_BAD_TYPE",
            "OFPGMFC_BAD_COMMAND",
            "OFPGMFC_BAD_BUCKET",
            "OFPGMFC_BAD_WATCH",
            "OFPGMFC_EPERM",
        ],
        (7, None) => &[
            "OFPPMFC_BAD_PORT",
            "OFPPMFC_BAD_HW_ADDR",
            "OFPPMFC_BAD_CONFIG",
            "OFPPMFC_BAD_ADVERTISE",
            "OFPPMFC_EPERM",
        ],
        (8, None) => &["OFPTMFC_BAD_TABLE", "OFPTMFC_BAD_CONFIG", "OFPTMFC_EPERM"],
        (10, None) => &["OFPSCFC_BAD_FLAGS", "OFPSCFC_BAD_LEN", "OFPSCFC_EPERM"],
        (11, None) => &["OFPRRFC_STALE", "OFPRRFC_UNSUP", "OFPRRFC_BAD_ROLE"],
        (OFPET_EXPERIMENTER, Some(ONF_EXPERIMENTER)) if (2300..=2315).contains(&c) => {
            return Some(
                [
                    "OFPBFC_UNKNOWN",
                    "OFPBFC_EPERM",
                    "OFPBFC_BAD_ID",
                    "OFPBFC_BUNDLE_EXIST",
                    "OFPBFC_BUNDLE_CLOSED",
                    "OFPBFC_OUT_OF_BUNDLES",
                    "OFPBFC_BAD_TYPE",
                    "OFPBFC_BAD_FLAGS",
                    "OFPBFC_MSG_BAD_LEN",
                    "OFPBFC_MSG_BAD_XID",
                    "OFPBFC_MSG_UNSUP",
                    "OFPBFC_MSG_CONFLICT",
                    "OFPBFC_MSG_TOO_MANY",
                    "OFPBFC_MSG_FAILED",
                    "OFPBFC_TIMEOUT",
                    "OFPBFC_BUNDLE_IN_PROGRESS",
                ][usize::from(c - 2300)],
            );
        }
        (OFPET_EXPERIMENTER, Some(NX_EXPERIMENTER)) => return Some("NX_EXPERIMENTER_ERROR"),
        _ => return None,
    };
    table.get(usize::from(c)).copied()
}
