//! cargo-fuzz target: [`bodies::cni_request`] (see fuzz/bodies.rs and fuzz/README.md).
#![no_main]

#[allow(dead_code)] // each binary uses one body
#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::cni_request(data));
