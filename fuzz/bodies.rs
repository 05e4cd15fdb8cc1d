//! The fuzz targets' bodies: one plain function per target, each taking the raw input and
//! panicking only on a bug. The cargo-fuzz binaries in `fuzz_targets/` call them, and so does
//! `tests/tests/fuzz_corpus.rs`, which replays every file of `fuzz/corpus/TARGET/` on stable
//! Rust; both include this file with `#[path]`, so it uses only the public APIs of the
//! crates and the dependencies both have (bytes, serde_json, tokio-util). The cluster file's
//! body is in `bodies_controller.rs`: it alone needs the controller crate, whose build
//! dominates the fuzz build (the other targets build without it: fuzz/README.md).
//!
//! Beyond "no panic", each body checks what must hold for any input its decoder accepts:
//! what we encode decodes again to the same value, and a stream framed in pieces frames the
//! same as in one piece.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// OpenFlow: the message decoder on a byte stream (as the connection's framer feeds it) and
/// message by message; whatever decodes must encode, decode again, and encode to the same
/// bytes.
pub fn openflow_decode(data: &[u8]) {
    let mut codec = openflow::conn::OfCodec;
    let mut stream = BytesMut::from(data);
    let mut framed = Vec::new();
    // The framer: a decode error of one message is yielded, an impossible header ends it.
    while let Ok(Some((xid, message))) = codec.decode(&mut stream) {
        framed.push((xid, message.is_ok()));
        if let Ok(message) = message {
            reencode(xid, &message);
        }
    }
    // Message::decode directly, consuming one message at a time.
    let mut buf = Bytes::copy_from_slice(data);
    let mut decoded = Vec::new();
    while buf.remaining() >= 8 {
        let before = buf.remaining();
        match openflow::Message::decode(&mut buf) {
            Ok((xid, _)) => {
                assert!(buf.remaining() < before, "decode consumed nothing");
                decoded.push(xid);
            }
            Err(_) => break,
        }
    }
    // The framer and the decoder agree on the well-formed prefix.
    let framed_ok: Vec<u32> = framed
        .iter()
        .take_while(|(_, ok)| *ok)
        .map(|(xid, _)| *xid)
        .collect();
    assert_eq!(
        framed_ok, decoded,
        "the framer and Message::decode disagree on the stream"
    );
}

fn reencode(xid: u32, message: &openflow::Message) {
    let Ok(bytes) = message.to_bytes(xid) else {
        // Some decodable messages have no encoding of ours (e.g. kinds we only receive).
        return;
    };
    let mut again = bytes.clone();
    let (xid2, message2) = openflow::Message::decode(&mut again)
        .unwrap_or_else(|e| panic!("our own encoding of {message:?} does not decode: {e}"));
    assert_eq!(xid2, xid);
    assert_eq!(again.remaining(), 0, "our encoding has trailing bytes");
    // Not `message2 == message`: decoding is lossy where the wire is not ours to fix (a port
    // name that is not UTF-8 decodes to replacement characters, which no longer fit its 16
    // bytes; corpus/openflow_decode/regression-port-name-not-utf8). After one trip through
    // our encoding, though, nothing may change any more.
    let bytes2 = message2.to_bytes(xid2).unwrap_or_else(|e| {
        panic!("{message2:?}, decoded from our encoding, does not encode: {e}")
    });
    assert_eq!(
        bytes2, bytes,
        "encode → decode → encode changed the bytes of {message2:?}"
    );
}

/// OVSDB JSON-RPC framing: the same frames whether the stream arrives at once or in pieces
/// (the first byte picks the piece size); every frame is parsed and its values read as
/// data.
pub fn ovsdb_framer(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let whole = frames(stream, stream.len().max(1));
    let pieces = frames(stream, usize::from(piece % 17) + 1);
    assert_eq!(whole, pieces, "framing depends on how the stream was split");
    for message in whole.iter().flatten() {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(message) {
            walk_json(&json, 0);
        }
    }
}

/// The frames of `stream` pushed `piece` bytes at a time, with the error that ended it.
fn frames(stream: &[u8], piece: usize) -> Vec<Result<Vec<u8>, String>> {
    let mut framer = ovsdb::framing::Framer::new(64 * 1024);
    let mut out = Vec::new();
    for chunk in stream.chunks(piece) {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => break,
                Err(e) => {
                    // A failed stream stays failed; the error's text names a position that
                    // does not depend on the split.
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

/// Reads every JSON value nested in a message as OVSDB data, as the client does with the
/// parts of a reply or notification.
fn walk_json(json: &serde_json::Value, depth: usize) {
    if depth > 8 {
        return;
    }
    datum_roundtrip(json);
    let _ = ovsdb::Row::from_json(json);
    if let Some(s) = json.as_str() {
        let _ = ovsdb::Uuid::parse(s);
    }
    match json {
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk_json(v, depth + 1)),
        serde_json::Value::Object(map) => map.values().for_each(|v| walk_json(v, depth + 1)),
        _ => {}
    }
}

fn datum_roundtrip(json: &serde_json::Value) {
    if let Ok(datum) = ovsdb::Datum::from_json(json) {
        let again = ovsdb::Datum::from_json(&datum.to_json())
            .unwrap_or_else(|e| panic!("{datum:?} as JSON does not parse again: {e}"));
        assert_eq!(again, datum, "Datum → JSON → Datum changed it");
    }
}

/// The Open_vSwitch schema of the OVS the tests run (3.1), for typed parsing.
fn vswitch_schema() -> &'static ovsdb::DatabaseSchema {
    static SCHEMA: std::sync::OnceLock<ovsdb::DatabaseSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let json = serde_json::from_str(include_str!("vswitch.ovsschema"))
            .expect("vswitch.ovsschema is JSON");
        ovsdb::DatabaseSchema::from_json(&json).expect("vswitch.ovsschema is a schema")
    })
}

/// OVSDB data: a JSON value read as a datum (untyped, and typed as each column of the
/// vswitch schema's Interface, Port and Bridge tables), as a row, as a schema and as a
/// transact result.
pub fn ovsdb_datum(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    datum_roundtrip(&json);
    let _ = ovsdb::Atom::from_json(&json);
    let _ = ovsdb::Row::from_json(&json);
    let _ = ovsdb::DatabaseSchema::from_json(&json);
    let _ = ovsdb::transaction::parse_results("Open_vSwitch", &[], &json);
    let schema = vswitch_schema();
    for table in ["Interface", "Port", "Bridge"] {
        let Ok(table) = schema.table(table) else {
            continue;
        };
        for (name, column) in &table.columns {
            if let Ok(datum) = ovsdb::Datum::from_json_typed(&json, &column.column_type) {
                let again = ovsdb::Datum::from_json_typed(&datum.to_json(), &column.column_type)
                    .unwrap_or_else(|e| panic!("{name}: {datum:?} does not parse again: {e}"));
                assert_eq!(
                    again, datum,
                    "{name}: typed Datum → JSON → Datum changed it"
                );
            }
        }
    }
}

/// The CNI plugin's input: `KEY=VALUE` lines (the `CNI_*` environment) up to the first empty
/// line, then the configuration on stdin. Only parsing runs (nothing touches the node or a
/// controller); errors must print as CNI error JSON. The same bytes are also read as a
/// pod-attach request (what the controller parses) and reply (what the shim parses).
pub fn cni_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (env_text, stdin) = text.split_once("\n\n").unwrap_or((&text, ""));
    let env: HashMap<String, String> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let var = |k: &str| env.get(k).cloned();
    let mut version = "1.1.0".to_owned();
    match switchyard_cni::plugin::parse_request(&var, &mut stdin.as_bytes(), &mut version) {
        Ok(parsed) => {
            let _ = parsed.command();
        }
        Err(e) => {
            let out = switchyard_cni::plugin::error_json(&version, &e);
            let err: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|j| panic!("error {out:?}: {j}"));
            assert!(err["code"].is_u64() && err["msg"].is_string(), "{err}");
        }
    }
    use switchyard_cni::api::{Reply, Request};
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let line = serde_json::to_vec(&request).expect("a request serialises");
        let again: Request = serde_json::from_slice(&line).expect("our request parses");
        assert_eq!(again, request);
    }
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        let line = serde_json::to_vec(&reply).expect("a reply serialises");
        let again: Reply = serde_json::from_slice(&line).expect("our reply parses");
        assert_eq!(again, reply);
    }
}
