//! The cluster file: multi-document YAML of Kubernetes objects, parsed and watched.
//!
//! Owns the file format (which kinds and apiVersions are accepted, defaults, what happens
//! to invalid objects) and the polling watcher that republishes on change. It does not
//! write the file: the file is the user's.
//!
//! The watcher polls metadata (mtime, size, inode) instead of using inotify: editors
//! replace files by rename, which an inotify watch on the file silently loses, and a
//! 300 ms poll of one `stat` costs nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::Spanned;
use serde_saphyr::granit_parser::{Event, Parser as EventParser};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{ClusterState, Delta, Error, ObjectKey, diff_states};

/// How often the watcher looks at the file's metadata.
const POLL_INTERVAL: Duration = Duration::from_millis(300);

/// How long after its modification time a file is re-read on every poll, even if its
/// stamp did not change (timestamps are only as fine as the kernel's clock tick).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One thing wrong in a cluster file. Everything but [`Problem::file_unreadable`] ones
/// concern a single object, which was skipped (or, for duplicates, replaced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 0-based index in the `items` of a `kind: List` document, if the object came from one.
    pub item: Option<usize>,
    /// The object's `kind`, if it had one.
    pub kind: Option<String>,
    /// The object's `namespace/name` (or `name` for cluster-scoped kinds), if known.
    pub object: Option<String>,
    /// What is wrong, naming the field (serde's path, e.g. `spec.containers[0].name`).
    pub message: String,
    /// True when the text is not YAML at all. The state returned with such a problem is
    /// empty and must not replace a previously good state.
    pub file_unreadable: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        if let Some(object) = &self.object {
            write!(f, " {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where an object came from, for problem reports.
#[derive(Clone, Copy)]
struct Origin {
    document: usize,
    item: Option<usize>,
}

impl Origin {
    fn problem(self, kind: Option<&str>, object: Option<String>, message: String) -> Problem {
        Problem {
            document: self.document,
            item: self.item,
            kind: kind.map(str::to_owned),
            object,
            message,
            file_unreadable: false,
        }
    }

    fn describe(self) -> String {
        match self.item {
            Some(item) => format!("document {} item {item}", self.document),
            None => format!("document {}", self.document),
        }
    }
}

/// Parses a cluster file: every valid object goes into the state, every invalid one
/// becomes a [`Problem`] and is skipped.
///
/// Accepted, as `kubectl apply` would: `v1` Node, Namespace, Pod, Service;
/// `discovery.k8s.io/v1` EndpointSlice; `networking.k8s.io/v1` NetworkPolicy; and a `v1`
/// `kind: List` whose `items` are any of those. Namespaced objects without a namespace go
/// to `default`; a namespace given on a cluster-scoped object is dropped, as the API
/// server does. When an object appears twice the later one wins, with a problem naming
/// both documents. Empty documents are ignored.
pub fn parse_cluster_file(text: &str) -> (ClusterState, Vec<Problem>) {
    let starts = document_starts(text);
    // The document a position belongs to: the number of documents started at or before it.
    let document_at = |line: u64, column: u64| {
        starts
            .iter()
            .take_while(|&&start| start <= (line, column))
            .count()
            .max(1)
    };
    let options = serde_saphyr::options! { with_snippet: false };
    // serde-saphyr skips empty (null) documents; the spans of the others tell which
    // document of the file each one is.
    match serde_saphyr::from_multiple_with_options::<Spanned<Value>>(text, options) {
        Ok(documents) => {
            let mut parser = Parser::default();
            for document in documents {
                let origin = Origin {
                    document: document_at(document.referenced.line(), document.referenced.column()),
                    item: None,
                };
                parser.document(origin, document.value);
            }
            (parser.state, parser.problems)
        }
        Err(error) => {
            // A syntax error leaves the parser unable to find where the next document
            // starts, so nothing after it (and, for safety, nothing before it) is used.
            // The message names the line and column.
            let document = match error.location() {
                Some(location) => document_at(location.line(), location.column()),
                None => starts.len().max(1),
            };
            let problem = Problem {
                document,
                item: None,
                kind: None,
                object: None,
                message: format!("not valid YAML: {error}"),
                file_unreadable: true,
            };
            (ClusterState::default(), vec![problem])
        }
    }
}

/// Where each document of `text` starts, as 1-based (line, column), up to the first
/// syntax error. Empty documents count, so document numbers are those a reader of the
/// file would count.
fn document_starts(text: &str) -> Vec<(u64, u64)> {
    let mut starts = Vec::new();
    for event in EventParser::new_from_str(text) {
        match event {
            Ok((Event::DocumentStart(..), span)) => {
                starts.push((span.start.line() as u64, span.start.col() as u64 + 1));
            }
            Ok((Event::StreamEnd, _)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    starts
}

#[derive(Default)]
struct Parser {
    state: ClusterState,
    problems: Vec<Problem>,
    /// Where each object was first seen: (kind, key) → origin, to report duplicates.
    seen: HashMap<(&'static str, String), Origin>,
}

/// The kinds a cluster file may hold, with the apiVersion the API server serves them at.
const KINDS: &[(&str, &str)] = &[
    ("Node", "v1"),
    ("Namespace", "v1"),
    ("Pod", "v1"),
    ("Service", "v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
];

impl Parser {
    fn document(&mut self, origin: Origin, value: Value) {
        if value.is_null() {
            return;
        }
        let Some(kind) = value.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            let object = object_name(&value, true);
            self.problems.push(origin.problem(
                None,
                object,
                "kind is missing or not a string".to_owned(),
            ));
            return;
        };
        if kind == "List" {
            self.list(origin, value);
        } else {
            self.object(origin, &kind, value);
        }
    }

    fn list(&mut self, origin: Origin, value: Value) {
        let Some(items) = value.get("items").and_then(Value::as_array) else {
            self.problems.push(origin.problem(
                Some("List"),
                None,
                "items is missing or not a sequence".to_owned(),
            ));
            return;
        };
        for (index, item) in items.iter().enumerate() {
            let origin = Origin {
                document: origin.document,
                item: Some(index),
            };
            match item.get("kind").and_then(Value::as_str) {
                Some("List") => self.problems.push(origin.problem(
                    Some("List"),
                    None,
                    "a List inside a List is not supported".to_owned(),
                )),
                Some(kind) => self.object(origin, kind, item.clone()),
                None => self.problems.push(origin.problem(
                    None,
                    object_name(item, true),
                    "kind is missing or not a string".to_owned(),
                )),
            }
        }
    }

    fn object(&mut self, origin: Origin, kind: &str, value: Value) {
        let Some(&(kind, api_version)) = KINDS.iter().find(|(known, _)| *known == kind) else {
            self.problems.push(origin.problem(
                Some(kind),
                object_name(&value, true),
                format!(
                    "unknown kind (accepted: List, {})",
                    KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ),
            ));
            return;
        };
        let namespaced = !matches!(kind, "Node" | "Namespace");
        let object = object_name(&value, namespaced);
        match value.get("apiVersion").and_then(Value::as_str) {
            Some(given) if given == api_version => {}
            given => {
                self.problems.push(origin.problem(
                    Some(kind),
                    object,
                    format!(
                        "apiVersion {} is not served for this kind (expected {api_version})",
                        given.map_or_else(|| "(missing)".to_owned(), |g| format!("{g:?}")),
                    ),
                ));
                return;
            }
        }
        let report = |message: String| origin.problem(Some(kind), object.clone(), message);
        let result = match kind {
            "Node" => decode::<Node>(&value).map(|mut node| {
                let name = self.cluster_scoped(&mut node.metadata)?;
                self.insert(origin, kind, name.clone(), report);
                self.state.nodes.insert(name, node);
                Ok(())
            }),
            "Namespace" => decode::<Namespace>(&value).map(|mut namespace| {
                let name = self.cluster_scoped(&mut namespace.metadata)?;
                self.insert(origin, kind, name.clone(), report);
                self.state.namespaces.insert(name, namespace);
                Ok(())
            }),
            "Pod" => decode::<Pod>(&value).map(|mut pod| {
                let key = namespaced_key(&mut pod.metadata)?;
                self.insert(origin, kind, key.to_string(), report);
                self.state.pods.insert(key, pod);
                Ok(())
            }),
            "Service" => decode::<Service>(&value).map(|mut service| {
                let key = namespaced_key(&mut service.metadata)?;
                self.insert(origin, kind, key.to_string(), report);
                self.state.services.insert(key, service);
                Ok(())
            }),
            "EndpointSlice" => decode::<EndpointSlice>(&value).map(|mut slice| {
                let key = namespaced_key(&mut slice.metadata)?;
                self.insert(origin, kind, key.to_string(), report);
                self.state.endpoint_slices.insert(key, slice);
                Ok(())
            }),
            "NetworkPolicy" => decode::<NetworkPolicy>(&value).map(|mut policy| {
                let key = namespaced_key(&mut policy.metadata)?;
                self.insert(origin, kind, key.to_string(), report);
                self.state.network_policies.insert(key, policy);
                Ok(())
            }),
            _ => Ok(Err(format!("kind {kind} has no decoder"))),
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(message)) | Err(message) => self.problems.push(report(message)),
        }
    }

    /// Validates a cluster-scoped object's metadata, returning its name.
    fn cluster_scoped(&self, metadata: &mut ObjectMeta) -> Result<String, String> {
        // The API server ignores a namespace on cluster-scoped objects; so do we.
        metadata.namespace = None;
        required_name(metadata)
    }

    /// Records that `(kind, key)` was defined at `origin`, reporting an earlier definition.
    fn insert(
        &mut self,
        origin: Origin,
        kind: &'static str,
        key: String,
        report: impl Fn(String) -> Problem,
    ) {
        if let Some(earlier) = self.seen.insert((kind, key), origin) {
            self.problems.push(report(format!(
                "duplicate: replaces the definition in {}",
                earlier.describe()
            )));
        }
    }
}

fn required_name(metadata: &ObjectMeta) -> Result<String, String> {
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err("metadata.name is missing or empty".to_owned()),
    }
}

/// Validates a namespaced object's metadata, defaulting the namespace to `default`.
fn namespaced_key(metadata: &mut ObjectMeta) -> Result<ObjectKey, String> {
    let name = required_name(metadata)?;
    let namespace = match metadata.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => namespace.to_owned(),
        _ => "default".to_owned(),
    };
    metadata.namespace = Some(namespace.clone());
    Ok(ObjectKey { namespace, name })
}

/// `namespace/name` (or `name`) of a not yet decoded object, for problem reports.
fn object_name(value: &Value, namespaced: bool) -> Option<String> {
    let metadata = value.get("metadata")?;
    let name = metadata.get("name").and_then(Value::as_str)?;
    if !namespaced {
        return Some(name.to_owned());
    }
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or("default");
    Some(format!("{namespace}/{name}"))
}

/// Decodes one object, with serde's path to the offending field in the error.
fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// What identifies one version of the file cheaply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

async fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = tokio::fs::metadata(path).await?;
    Ok(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
    })
}

fn warn_problems(path: &Path, problems: &[Problem]) {
    for problem in problems {
        tracing::warn!(
            file = %path.display(),
            document = problem.document,
            item = problem.item,
            kind = problem.kind.as_deref(),
            object = problem.object.as_deref(),
            "cluster file: skipped invalid object: {}",
            problem.message
        );
    }
}

/// Reads and parses the file once (failing if it is unreadable), then starts the watcher.
pub(super) async fn start(
    path: PathBuf,
) -> Result<
    (
        watch::Receiver<Arc<ClusterState>>,
        mpsc::UnboundedReceiver<Vec<Delta>>,
        JoinHandle<()>,
    ),
    Error,
> {
    let stamp_now = stamp(&path).await;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|source| Error::ReadClusterFile {
            path: path.clone(),
            source,
        })?;
    let (state, problems) = parse_cluster_file(&text);
    if let Some(fatal) = problems.iter().find(|problem| problem.file_unreadable) {
        return Err(Error::ParseClusterFile {
            path,
            message: fatal.to_string(),
        });
    }
    warn_problems(&path, &problems);
    tracing::info!(
        file = %path.display(),
        nodes = state.nodes.len(),
        namespaces = state.namespaces.len(),
        pods = state.pods.len(),
        "cluster file loaded"
    );
    let (delta_tx, delta_rx) = mpsc::unbounded_channel();
    let _ = delta_tx.send(diff_states(&ClusterState::default(), &state));
    let (sender, receiver) = watch::channel(Arc::new(state));
    let task = tokio::spawn(watch_file(path, sender, delta_tx, stamp_now.ok(), text));
    Ok((receiver, delta_rx, task))
}

/// Polls the file and publishes each new good state.
async fn watch_file(
    path: PathBuf,
    sender: watch::Sender<Arc<ClusterState>>,
    deltas: mpsc::UnboundedSender<Vec<Delta>>,
    mut last_stamp: Option<Stamp>,
    mut last_text: String,
) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Warn once per failure, not every poll.
    let mut failing = false;
    loop {
        interval.tick().await;
        let current = match stamp(&path).await {
            Ok(current) => current,
            Err(error) => {
                if !failing {
                    tracing::warn!(file = %path.display(), %error,
                        "cluster file: cannot stat; keeping the last good state");
                    failing = true;
                }
                last_stamp = None;
                continue;
            }
        };
        // Like git's "racy clean" check: a write in the same timestamp tick as the previous
        // one, keeping the length, leaves the stamp unchanged; so a file modified in the
        // last moments is read again regardless (the text comparison below stops that
        // from republishing).
        let recent = current
            .modified
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age < RACY_WINDOW);
        if last_stamp == Some(current) && !recent {
            continue;
        }
        last_stamp = Some(current);
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(error) => {
                if !failing {
                    tracing::warn!(file = %path.display(), %error,
                        "cluster file: cannot read; keeping the last good state");
                    failing = true;
                }
                // Retry on the next poll even if the metadata does not change again.
                last_stamp = None;
                continue;
            }
        };
        failing = false;
        if text == last_text {
            continue;
        }
        let (state, problems) = parse_cluster_file(&text);
        last_text = text;
        if let Some(fatal) = problems.iter().find(|problem| problem.file_unreadable) {
            tracing::warn!(file = %path.display(), problem = %fatal,
                "cluster file: not valid YAML; keeping the last good state");
            continue;
        }
        warn_problems(&path, &problems);
        // The file is diffed against its last good state: the controller receives only
        // the objects that were added, changed or removed.
        let changes = diff_states(&sender.borrow(), &state);
        let changed = !changes.is_empty();
        if changed {
            let _ = deltas.send(changes);
            sender.send_replace(Arc::new(state));
        }
        if changed {
            tracing::info!(file = %path.display(), "cluster file changed; new state published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_for<'a>(problems: &'a [Problem], object: &str) -> &'a Problem {
        problems
            .iter()
            .find(|problem| problem.object.as_deref() == Some(object))
            .unwrap_or_else(|| panic!("no problem names {object}: {problems:#?}"))
    }

    #[test]
    fn bundled_demo_cluster_parses_without_problems() {
        let (state, problems) = parse_cluster_file(include_str!("../../../deploy/cluster.yaml"));
        assert_eq!(problems, []);
        assert_eq!(
            state.nodes.keys().collect::<Vec<_>>(),
            ["node-1", "node-2", "node-3"]
        );
        assert_eq!(
            state.namespaces.keys().collect::<Vec<_>>(),
            ["backend", "default", "frontend"]
        );
        assert_eq!(state.pods.len(), 6);
        let node2 = &state.nodes["node-2"];
        let spec = node2.spec.as_ref().expect("node spec");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.2.0/24"));
        assert_eq!(
            spec.pod_cidrs.as_deref(),
            Some(&["10.244.2.0/24".to_owned()][..])
        );
        let addresses = node2.status.as_ref().and_then(|s| s.addresses.as_ref());
        let internal = addresses
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.as_str());
        assert_eq!(internal, Some("192.168.77.12"));
        let api1 = &state.pods[&ObjectKey::new("backend", "api-1")];
        assert_eq!(
            api1.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("node-2")
        );
        assert_eq!(
            api1.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("api")
        );
    }

    #[test]
    fn all_six_kinds_are_read() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: frontend}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: frontend
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.5]
    conditions: {ready: true}
    nodeName: node-1
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: backend}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: v1
kind: Namespace
metadata: {name: frontend}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: frontend}
"#;
        let (state, problems) = parse_cluster_file(text);
        assert_eq!(problems, []);
        let service = &state.services[&ObjectKey::new("frontend", "web")];
        let port = &service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()[0];
        assert_eq!(port.port, 80);
        let slice = &state.endpoint_slices[&ObjectKey::new("frontend", "web-abcde")];
        assert_eq!(slice.endpoints[0].addresses, ["10.244.1.5"]);
        assert!(
            state
                .network_policies
                .contains_key(&ObjectKey::new("backend", "deny-all"))
        );
        assert!(state.namespaces.contains_key("frontend"));
        assert!(state.nodes.contains_key("node-1"));
        assert!(state.pods.contains_key(&ObjectKey::new("frontend", "p")));
    }

    #[test]
    fn namespace_defaults_to_default_and_is_dropped_on_cluster_scoped_kinds() {
        let text = "
apiVersion: v1
kind: Pod
metadata: {name: lonely}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ''}
---
apiVersion: v1
kind: Node
metadata: {name: node-9, namespace: kube-system}
";
        let (state, problems) = parse_cluster_file(text);
        assert_eq!(problems, []);
        let pod = &state.pods[&ObjectKey::new("default", "lonely")];
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert!(
            state
                .services
                .contains_key(&ObjectKey::new("default", "svc"))
        );
        assert_eq!(state.nodes["node-9"].metadata.namespace, None);
    }

    #[test]
    fn list_items_are_read_and_bad_items_reported_with_their_index() {
        let text = "
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata: {name: team-a}
  - apiVersion: v1
    kind: Pod
    metadata: {name: a-1, namespace: team-a}
  - apiVersion: v1
    kind: Pod
    metadata: {namespace: team-a}
  - apiVersion: v1
    kind: List
    items: []
";
        let (state, problems) = parse_cluster_file(text);
        assert!(state.namespaces.contains_key("team-a"));
        assert!(state.pods.contains_key(&ObjectKey::new("team-a", "a-1")));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!((problems[0].document, problems[0].item), (1, Some(2)));
        assert!(
            problems[0].message.contains("metadata.name"),
            "{}",
            problems[0]
        );
        assert_eq!((problems[1].document, problems[1].item), (1, Some(3)));
        assert!(problems[1].message.contains("List inside a List"));
    }

    #[test]
    fn each_invalid_document_is_reported_and_skipped_without_stopping_the_rest() {
        let text = "
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: kube-system}
---
apiVersion: apps/v1
kind: Pod
metadata: {name: wrong-group, namespace: backend}
---
apiVersion: v1
kind: Pod
metadata: {namespace: backend}
---
apiVersion: v1
kind: Pod
metadata: {name: bad-container, namespace: backend}
spec:
  containers:
    - name: [not, a, string]
---
apiVersion: v1
kind: Node
metadata: {name: bad-cidr}
spec: {podCIDRs: 10.244.9.0/24}
---
metadata: {name: no-kind}
---
- just
- a list
---
apiVersion: v1
kind: Pod
metadata: {name: good, namespace: backend}
";
        let (state, problems) = parse_cluster_file(text);
        assert_eq!(
            state.pods.keys().collect::<Vec<_>>(),
            [&ObjectKey::new("backend", "good")]
        );
        assert!(state.nodes.is_empty());
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems.iter().all(|problem| !problem.file_unreadable));

        let unknown = problem_for(&problems, "kube-system/settings");
        assert_eq!(
            (unknown.document, unknown.kind.as_deref()),
            (1, Some("ConfigMap"))
        );
        assert!(unknown.message.contains("unknown kind"), "{unknown}");

        let group = problem_for(&problems, "backend/wrong-group");
        assert_eq!(group.document, 2);
        assert!(group.message.contains("\"apps/v1\""), "{group}");

        let nameless = &problems[2];
        assert_eq!(
            (nameless.document, nameless.kind.as_deref()),
            (3, Some("Pod"))
        );
        assert!(nameless.message.contains("metadata.name"), "{nameless}");

        let container = problem_for(&problems, "backend/bad-container");
        assert_eq!(container.document, 4);
        assert!(
            container
                .message
                .starts_with("spec.containers[0].name: invalid type"),
            "{container}"
        );

        let cidr = problem_for(&problems, "bad-cidr");
        assert_eq!((cidr.document, cidr.kind.as_deref()), (5, Some("Node")));
        assert!(
            cidr.message.starts_with("spec.podCIDRs: invalid type"),
            "{cidr}"
        );

        let kindless = problem_for(&problems, "default/no-kind");
        assert_eq!(kindless.document, 6);
        assert!(kindless.message.contains("kind is missing"));

        assert_eq!(problems[6].document, 7);
        assert!(problems[6].message.contains("kind is missing"));
    }

    #[test]
    fn duplicate_object_later_wins_with_a_problem_naming_both_documents() {
        let text = "
apiVersion: v1
kind: Pod
metadata: {name: twin, labels: {version: one}}
---
apiVersion: v1
kind: Pod
metadata: {name: twin, namespace: default, labels: {version: two}}
";
        let (state, problems) = parse_cluster_file(text);
        let pod = &state.pods[&ObjectKey::new("default", "twin")];
        assert_eq!(
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("version"))
                .map(String::as_str),
            Some("two")
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].document, 2);
        assert_eq!(
            problems[0].to_string(),
            "document 2 Pod default/twin: duplicate: replaces the definition in document 1"
        );
    }

    #[test]
    fn empty_documents_and_empty_file_are_an_empty_cluster() {
        for text in ["", "---\n", "---\n---\n# only a comment\n"] {
            let (state, problems) = parse_cluster_file(text);
            assert_eq!(problems, [], "{text:?}");
            assert_eq!(state, ClusterState::default());
        }
    }

    #[test]
    fn text_that_is_not_yaml_is_one_file_unreadable_problem_and_no_objects() {
        let text = "
apiVersion: v1
kind: Pod
metadata: {name: fine}
---
apiVersion: v1
kind: Pod
metadata: {name: [unclosed
";
        let (state, problems) = parse_cluster_file(text);
        assert_eq!(state, ClusterState::default());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].file_unreadable);
        assert_eq!(problems[0].document, 2);
        assert!(
            problems[0].message.contains("not valid YAML"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].message.contains("line 8, column 18"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn document_numbers_count_empty_documents() {
        let empty = "\n---\n---\n# only a comment\n";
        let nameless = "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: backend}\n";
        let broken = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n";

        let (_, problems) = parse_cluster_file(&format!("{empty}{nameless}"));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].document, 3, "{}", problems[0]);
        assert!(!problems[0].file_unreadable);

        let (_, problems) = parse_cluster_file(&format!("{empty}{nameless}{broken}"));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].document, 4, "{}", problems[0]);
        assert!(problems[0].file_unreadable);
    }
}
