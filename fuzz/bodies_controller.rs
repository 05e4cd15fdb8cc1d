//! The fuzz body that needs the controller crate (see `bodies.rs`).

/// The cluster file: parsed, then applied to a fresh network state as the controller does
/// (every pod on a valid node attached, so IPAM runs too).
pub fn cluster_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (state, _problems) = switchyard::source::parse_cluster_file(text);
    let deltas =
        switchyard::source::diff_states(&switchyard::source::ClusterState::default(), &state);
    let mut network = switchyard::state::NetworkState::new();
    let _ = network.apply(deltas);
    let keys: Vec<_> = state.pods.keys().cloned().collect();
    for (n, key) in keys.iter().enumerate() {
        let _ = network.attach(key, &format!("sy{n:012x}"), &format!("c{n}"));
    }
    // Everything gone again: the state must take the deletes as well.
    let back =
        switchyard::source::diff_states(&state, &switchyard::source::ClusterState::default());
    let _ = network.apply(back);
}
