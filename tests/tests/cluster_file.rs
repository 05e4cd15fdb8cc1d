//! `Source::cluster_file` on a real file: what subscribers see as a user edits it.
//!
//! Every wait is bounded by a generous deadline so a broken watcher fails the test
//! instead of hanging it; none of the assertions depend on how fast the watcher is.

use std::path::Path;
use std::time::Duration;

use switchyard::source::{Error, ObjectKey, Source};
use switchyard_tests::{pod_names, wait_for_state};

/// Far longer than the watcher's poll interval; only reached if something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

fn pod(namespace: &str, name: &str, node: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}}}
spec:
  nodeName: {node}
  containers: [{{name: main, image: busybox}}]
"
    )
}

const NODE: &str = "---
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status:
  addresses: [{type: InternalIP, address: 192.168.77.11}]
";

/// Replaces the file's content the way editors do: write a sibling, rename over.
fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write temporary file");
    std::fs::rename(&temporary, path).expect("rename over cluster file");
}

#[tokio::test]
async fn subscribers_follow_edits_of_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    let mut text = format!(
        "{NODE}{}{}",
        pod("frontend", "web-1", "node-1"),
        pod("backend", "api-1", "node-1")
    );
    std::fs::write(&path, &text).expect("write cluster file");

    let source = Source::cluster_file(path.clone())
        .await
        .expect("cluster file source starts");
    let mut receiver = source.subscribe();
    let initial = receiver.borrow_and_update().clone();
    assert_eq!(pod_names(&initial), ["backend/api-1", "frontend/web-1"]);
    assert!(initial.nodes.contains_key("node-1"));

    // Add a pod (in-place append, as `cat >>` would).
    text.push_str(&pod("default", "client", "node-1"));
    std::fs::write(&path, &text).expect("append pod");
    let state = wait_for_state(DEADLINE, &mut receiver, "client added", |state| {
        state
            .pods
            .contains_key(&ObjectKey::new("default", "client"))
    })
    .await;
    assert_eq!(
        pod_names(&state),
        ["backend/api-1", "default/client", "frontend/web-1"]
    );

    // Delete a pod (editor-style replace by rename).
    text = format!(
        "{NODE}{}{}",
        pod("frontend", "web-1", "node-1"),
        pod("default", "client", "node-1")
    );
    replace_file(&path, &text);
    let state = wait_for_state(DEADLINE, &mut receiver, "api-1 deleted", |state| {
        !state.pods.contains_key(&ObjectKey::new("backend", "api-1"))
    })
    .await;
    assert_eq!(pod_names(&state), ["default/client", "frontend/web-1"]);

    // An invalid object in an edit is skipped; the rest of the edit applies.
    text.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: default}\n");
    text.push_str(&pod("backend", "db-1", "node-1"));
    std::fs::write(&path, &text).expect("append invalid and valid pods");
    let state = wait_for_state(DEADLINE, &mut receiver, "db-1 added", |state| {
        state.pods.contains_key(&ObjectKey::new("backend", "db-1"))
    })
    .await;
    assert_eq!(
        pod_names(&state),
        ["backend/db-1", "default/client", "frontend/web-1"]
    );
}

#[tokio::test]
async fn broken_yaml_keeps_the_last_good_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    let good = format!("{NODE}{}", pod("frontend", "web-1", "node-1"));
    std::fs::write(&path, &good).expect("write cluster file");
    let source = Source::cluster_file(path.clone())
        .await
        .expect("cluster file source starts");
    let mut receiver = source.subscribe();
    let before = receiver.borrow_and_update().clone();

    // Half an edit: the YAML no longer parses at all.
    let broken = format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: [oops\n");
    std::fs::write(&path, &broken).expect("break the file");
    // The same text is rejected by a fresh source, which proves it is unreadable...
    match Source::cluster_file(path.clone()).await {
        Err(Error::ParseClusterFile {
            path: reported,
            message,
        }) => {
            assert_eq!(reported, path);
            assert!(message.contains("document 3"), "{message}");
        }
        Err(other) => panic!("expected a parse error, got {other}"),
        Ok(_) => panic!("a broken cluster file was accepted"),
    }
    // ...and the running source, having had many polls to see it, still publishes the
    // last good state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !receiver.has_changed().expect("source alive"),
        "a broken file must not publish a new state"
    );
    assert_eq!(**receiver.borrow(), *before);

    // Deleting the file altogether keeps it too.
    std::fs::remove_file(&path).expect("remove cluster file");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!receiver.has_changed().expect("source alive"));

    // Fixing the file publishes again.
    let fixed = format!("{good}{}", pod("backend", "api-1", "node-1"));
    std::fs::write(&path, &fixed).expect("fix the file");
    let state = wait_for_state(
        DEADLINE,
        &mut receiver,
        "api-1 added after the fix",
        |state| state.pods.contains_key(&ObjectKey::new("backend", "api-1")),
    )
    .await;
    assert_eq!(pod_names(&state), ["backend/api-1", "frontend/web-1"]);
}

#[tokio::test]
async fn unreadable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.yaml");
    match Source::cluster_file(path.clone()).await {
        Err(error @ Error::ReadClusterFile { .. }) => {
            assert!(
                error.to_string().contains(&*path.to_string_lossy()),
                "{error}"
            );
        }
        Err(other) => panic!("expected a read error, got {other}"),
        Ok(_) => panic!("a missing cluster file was accepted"),
    }
}

#[tokio::test]
async fn annotate_pod_on_a_cluster_file_is_a_no_op_that_leaves_the_file_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    let text = format!("{NODE}{}", pod("frontend", "web-1", "node-1"));
    std::fs::write(&path, &text).expect("write cluster file");
    let source = Source::cluster_file(path.clone())
        .await
        .expect("cluster file source starts");
    source
        .annotate_pod(
            &ObjectKey::new("frontend", "web-1"),
            "switchyard.io/pod-network",
            r#"{"ip":"10.244.1.2/24"}"#,
        )
        .await
        .expect("annotate is a no-op");
    assert_eq!(std::fs::read_to_string(&path).expect("read back"), text);
}

#[tokio::test]
async fn the_bundled_demo_cluster_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster.yaml");
    let source = Source::cluster_file(path)
        .await
        .expect("deploy/cluster.yaml loads");
    let state = source.subscribe().borrow().clone();
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.namespaces.len(), 3);
    assert_eq!(
        pod_names(&state),
        [
            "backend/api-1",
            "backend/api-2",
            "backend/db-1",
            "default/client",
            "frontend/web-1",
            "frontend/web-2"
        ]
    );
}
