//! cargo-fuzz target: [`bodies_controller::cluster_file`] (see fuzz/bodies_controller.rs and
//! fuzz/README.md).
#![no_main]

#[path = "../bodies_controller.rs"]
mod bodies_controller;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies_controller::cluster_file(data));
