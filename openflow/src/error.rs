//! The crate's one error type: codec failures (malformed or unrepresentable messages),
//! match/action validation failures, errors the switch answered with, and connection
//! failures.

use crate::field::{Field, Prerequisite};
use crate::message::ErrorMsg;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input ended before a structure was complete.
    #[error("truncated {what}: needed {needed} bytes, only {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A length field is impossible (shorter than its own header, not a multiple of 8 where
    /// the protocol demands it, or longer than its container).
    #[error("bad length in {what}: {length} ({reason})")]
    BadLength {
        /// The structure whose length field is wrong.
        what: &'static str,
        /// The length it claimed.
        length: usize,
        /// Why that length is impossible.
        reason: &'static str,
    },
    /// A value does not fit in its wire field (a message over 64 KiB, a port number above
    /// 16 bits in an NX action...).
    #[error("{what} is too long: {length} > {max}")]
    TooLong {
        /// What did not fit.
        what: &'static str,
        /// Its size.
        length: usize,
        /// The largest size the wire format allows.
        max: usize,
    },
    /// The peer speaks an OpenFlow version this crate does not decode.
    #[error("unsupported OpenFlow version 0x{version:02x} (only 0x04, OpenFlow 1.3, is decoded)")]
    BadVersion {
        /// The version byte received.
        version: u8,
    },
    /// A field or value is not valid where it appears.
    #[error("invalid {what}: {detail}")]
    BadValue {
        /// What was invalid.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A match field was given a value or mask of the wrong width.
    #[error("match field {field}: {what} is {got} bytes, the field is {expected} bytes wide")]
    BadFieldWidth {
        /// The field.
        field: Field,
        /// "value" or "mask".
        what: &'static str,
        /// The width given.
        got: usize,
        /// The field's width.
        expected: usize,
    },
    /// A mask was given for a field that OVS can only match exactly.
    #[error("match field {field} is not maskable, but a mask was given")]
    NotMaskable {
        /// The field.
        field: Field,
    },
    /// A match uses a field without the fields it depends on (OpenFlow 1.3 §7.2.3.6).
    #[error("match field {field} requires {missing}")]
    MissingPrerequisite {
        /// The field whose prerequisite is missing.
        field: Field,
        /// What the match must also contain.
        missing: Prerequisite,
    },
    /// The switch answered a request with an OFPT_ERROR.
    #[error("switch rejected the request: {0}")]
    Switch(ErrorMsg),
    /// A bundle was not committed; nothing in it was applied.
    #[error("bundle failed{}: {error}", index.map(|i| format!(" at message {i}")).unwrap_or_default())]
    BundleFailed {
        /// Index (in the Vec given to `bundle`) of the message the switch blamed, if any.
        index: Option<usize>,
        /// The switch's error.
        error: ErrorMsg,
    },
    /// The peer sent something that makes no sense at this point of the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A connection target string (`tcp:IP:PORT`, `unix:PATH`, ...) is malformed.
    #[error("bad connection target {target:?}: {reason}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// I/O on the connection failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (with the peer's address).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (no certificate, one from another CA, a name that does not
    /// match, or no handshake in time).
    #[error("TLS with {peer} failed: {reason}")]
    Tls {
        /// Who.
        peer: String,
        /// rustls's words, or the timeout.
        reason: String,
    },
    /// The connection is closed (by the peer, by us, or after a failure logged earlier).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The peer did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl Error {
    pub(crate) fn bad_value(what: &'static str, detail: impl Into<String>) -> Error {
        Error::BadValue {
            what,
            detail: detail.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
