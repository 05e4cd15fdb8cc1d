//! Replays every file of the fuzz corpora (`fuzz/corpus/TARGET/*`) through the fuzz
//! targets' bodies on stable Rust: the inputs cargo-fuzz found interesting, the seeds taken
//! from captured traffic and fixtures, and the regression inputs of the panics fuzzing found,
//! each of which must now pass. The bodies are `fuzz/bodies.rs`, shared with the cargo-fuzz
//! binaries (`fuzz/README.md` says how to run those).

#[path = "../../fuzz/bodies.rs"]
mod bodies;
#[path = "../../fuzz/bodies_controller.rs"]
mod bodies_controller;

/// A target's body: the raw input in, a panic only on a bug.
type Body = fn(&[u8]);

/// Every target, by the name of its corpus directory and `fuzz_targets/*.rs` file.
const TARGETS: &[(&str, Body)] = &[
    ("openflow_decode", bodies::openflow_decode),
    ("ovsdb_framer", bodies::ovsdb_framer),
    ("ovsdb_datum", bodies::ovsdb_datum),
    ("cni_request", bodies::cni_request),
    ("cluster_file", bodies_controller::cluster_file),
];

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `target` on every file of its corpus; a panic names the file.
fn replay(target: &str) -> usize {
    let (_, body) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} panics on {}",
            file.display()
        );
    }
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    eprintln!("{target}: {} inputs replayed", files.len());
    files.len()
}

#[test]
fn every_target_has_a_corpus_and_a_binary() {
    for (target, _) in TARGETS {
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(binary.is_file(), "no {}", binary.display());
    }
}

#[test]
fn openflow_decode_corpus() {
    replay("openflow_decode");
}

#[test]
fn ovsdb_framer_corpus() {
    replay("ovsdb_framer");
}

#[test]
fn ovsdb_datum_corpus() {
    replay("ovsdb_datum");
}

#[test]
fn cni_request_corpus() {
    replay("cni_request");
}

#[test]
fn cluster_file_corpus() {
    replay("cluster_file");
}
