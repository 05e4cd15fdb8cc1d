//! The crate's one error type. Every variant names what failed and with what input, so
//! a message read from a log is enough to find the cause.

use std::time::Duration;

/// Everything that can go wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target string is neither `unix:PATH` nor `tcp:IP:PORT`.
    #[error("invalid OVSDB target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The TLS handshake with the server failed (its certificate is not from our CA or
    /// does not carry the expected name, or it refused ours).
    #[error("TLS with the OVSDB server at {target} failed: {reason}")]
    Tls {
        /// The target as given.
        target: String,
        /// rustls's words, or the timeout.
        reason: String,
    },

    /// Opening the connection failed.
    #[error("cannot connect to the OVSDB server at {target}: {source}")]
    Connect {
        /// The target we tried.
        target: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },

    /// Reading from or writing to an established connection failed.
    #[error("I/O error on the OVSDB connection to {target}: {source}")]
    Io {
        /// The peer.
        target: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },

    /// The byte stream does not hold concatenated JSON objects/arrays (RFC 7047 §4 framing).
    #[error("malformed JSON-RPC stream: {reason} (byte {byte:#04x} at stream offset {offset})")]
    Framing {
        /// What was expected.
        reason: &'static str,
        /// The offending byte.
        byte: u8,
        /// Offset of that byte since the connection started.
        offset: u64,
    },

    /// One message is larger than the configured bound; the connection is dropped rather
    /// than buffering without limit.
    #[error("JSON-RPC message exceeds the {limit}-byte limit (already {seen} bytes buffered)")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
        /// How many bytes of the message had arrived when we gave up.
        seen: usize,
    },

    /// A framed message is not valid JSON.
    #[error("invalid JSON in a JSON-RPC message: {source}; message starts with {start:?}")]
    Json {
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
        /// The first bytes of the message, for the log.
        start: String,
    },

    /// A JSON message that is not a JSON-RPC 1.0 request, reply or notification, or a
    /// reply whose shape does not fit the method.
    #[error("unexpected JSON-RPC message ({reason}): {message}")]
    Protocol {
        /// What is wrong with it.
        reason: String,
        /// The message (possibly truncated).
        message: String,
    },

    /// The server answered a request with a JSON-RPC error.
    #[error("the OVSDB server answered {method} with an error: {error}")]
    Rpc {
        /// The method we called.
        method: String,
        /// The server's `error` member, as sent.
        error: serde_json::Value,
    },

    /// We cancelled the request (see `Client::cancel`).
    #[error("{method} request {id} was cancelled")]
    Canceled {
        /// The method of the cancelled request.
        method: String,
        /// Its JSON-RPC id.
        id: u64,
    },

    /// One operation of a transaction failed (RFC 7047 §4.1.3). `index` equal to the
    /// number of operations means the commit itself failed (e.g. a referential integrity
    /// violation), which the server reports in an extra result element.
    #[error(
        "transaction on {db}: operation {index} ({op}) failed: {error}{}",
        details.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Operation {
        /// Database of the transaction.
        db: String,
        /// Index of the failed operation in the transaction.
        index: usize,
        /// The operation's `op` (`"commit"` for a failure of the whole transaction).
        op: String,
        /// The server's `error` string, e.g. `"constraint violation"`.
        error: String,
        /// The server's `details`, when it sent any.
        details: Option<String>,
    },

    /// JSON that is not valid OVSDB data notation (RFC 7047 §5.1) for the expected type.
    #[error("invalid OVSDB {what}: {reason}: {json}")]
    Data {
        /// What we were parsing (atom, set, map, row, ...).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
        /// The JSON (possibly truncated).
        json: String,
    },

    /// A schema document that does not follow RFC 7047 §3.2.
    #[error("invalid OVSDB schema: {reason}")]
    Schema {
        /// What is wrong, with the table/column path.
        reason: String,
    },

    /// A table or column asked for is not in the database schema.
    #[error("database {db} has no {what} {name:?}")]
    UnknownName {
        /// The database.
        db: String,
        /// `"table"` or `"column"`.
        what: &'static str,
        /// The name asked for (`table.column` for a column).
        name: String,
    },

    /// The connection is closed (by the peer, by an error, or by us).
    #[error("the OVSDB connection to {target} is closed: {reason}")]
    Disconnected {
        /// The peer.
        target: String,
        /// Why it closed, as known.
        reason: String,
    },

    /// The peer did not answer our echo: it is considered dead.
    #[error("the OVSDB server at {target} did not answer an echo within {timeout:?}")]
    Inactivity {
        /// The peer.
        target: String,
        /// How long we waited.
        timeout: Duration,
    },

    /// A row does not have the shape a typed view expects.
    #[error("row {uuid} of table {table}: column {column}: {reason}")]
    Row {
        /// The table.
        table: String,
        /// The row.
        uuid: String,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
}

/// Shortens JSON or text for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `excerpt` of a JSON value.
pub(crate) fn json_excerpt(value: &serde_json::Value) -> String {
    excerpt(&value.to_string())
}
