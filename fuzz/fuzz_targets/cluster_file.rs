//! cargo-fuzz target: [`bodies::cluster_file`] (see fuzz/bodies.rs and fuzz/README.md).
#![no_main]

#[allow(dead_code)] // each binary uses one body
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::cluster_file(data));
