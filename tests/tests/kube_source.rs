//! `Source::kubernetes` against a small in-test API server.
//!
//! The server below speaks the real list+watch protocol over hand-written HTTP/1.1 for
//! the six collections the controller reads: a list returns the collection's
//! `resourceVersion`; a watch from that version streams (chunked, one JSON `WatchEvent`
//! per line) every later event of the collection, then a `BOOKMARK` if the client asked
//! for them; a merge patch on a pod bumps its `resourceVersion` and emits `MODIFIED`.
//! Resource versions come from one counter shared by all collections, as etcd's revision
//! does. Nothing else of the API server is imitated: no other paths, no field or label
//! selectors, no paging (a server may always return a list in one page). Errors carry the
//! API server's own `Status` bodies: a 403 names the user, verb, resource and API group
//! exactly as kube-apiserver's authorizer message does; a GET of a missing pod is a 404
//! `NotFound` with its details.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::signer::NODE_NAME_EXTRA;
use switchyard::source::kube::{Client, Config};
use switchyard::source::{Error, Kind, ObjectKey, POD_NETWORK_ANNOTATION, Source, kube_client};
use switchyard_tests::{pod_names, wait_for_state};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Far longer than anything here takes; only reached if something is broken.
const DEADLINE: Duration = Duration::from_secs(30);

/// A collection the server serves: its cluster-wide path and its type.
struct Collection {
    path: &'static str,
    kind: &'static str,
    api_version: &'static str,
    namespaced: bool,
}

const COLLECTIONS: &[Collection] = &[
    Collection {
        path: "/api/v1/nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
    },
    Collection {
        path: "/api/v1/namespaces",
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
    },
    Collection {
        path: "/api/v1/pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    Collection {
        path: "/api/v1/services",
        kind: "Service",
        api_version: "v1",
        namespaced: true,
    },
    Collection {
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        namespaced: true,
    },
    Collection {
        path: "/apis/networking.k8s.io/v1/networkpolicies",
        kind: "NetworkPolicy",
        api_version: "networking.k8s.io/v1",
        namespaced: true,
    },
    Collection {
        path: "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        kind: "CertificateSigningRequest",
        api_version: "certificates.k8s.io/v1",
        namespaced: false,
    },
    Collection {
        path: "/api/v1/secrets",
        kind: "Secret",
        api_version: "v1",
        namespaced: true,
    },
    Collection {
        path: "/api/v1/configmaps",
        kind: "ConfigMap",
        api_version: "v1",
        namespaced: true,
    },
];

/// Who a request comes from, as kube-apiserver's authenticator finds it in a bound
/// ServiceAccount token: the username and, for a pod-bound token, its node.
#[derive(Clone, Debug)]
struct Identity {
    username: String,
    node: Option<String>,
}

/// The six collections `Source::kubernetes` lists and watches (the first six; the others are
/// the signer's).
fn source_collections() -> &'static [Collection] {
    &COLLECTIONS[..6]
}

fn collection_of_kind(kind: &str) -> &'static Collection {
    COLLECTIONS
        .iter()
        .find(|collection| collection.kind == kind)
        .unwrap_or_else(|| panic!("the test server does not serve kind {kind}"))
}

/// One request as the server received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self, key: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

#[derive(Default)]
struct Store {
    revision: u64,
    /// (kind, namespace, name) → object (with kind/apiVersion and resourceVersion set).
    objects: BTreeMap<(&'static str, String, String), Value>,
    /// Every change ever made: (revision, kind, event type, object).
    log: Vec<(u64, &'static str, &'static str, Value)>,
    /// Kinds whose list/watch answers 403 Forbidden (RBAC not granted yet).
    forbidden: Vec<&'static str>,
    requests: Vec<Recorded>,
    /// Bearer token → identity; a request without a known token is [`USER`].
    tokens: BTreeMap<String, Identity>,
}

/// The in-test API server.
#[derive(Clone)]
struct ApiServer {
    store: Arc<Mutex<Store>>,
    /// The latest revision or request count, so watches and tests wake on changes.
    changes: watch::Sender<u64>,
    port: u16,
}

impl ApiServer {
    async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test API server");
        Self::serve_on(listener)
    }

    /// The server on 127.0.0.1 inside the network namespace `netns` (where a controller
    /// runs whose CNI listener the node's shims reach on that namespace's loopback).
    async fn start_in(netns: &str) -> ApiServer {
        let path = format!("/run/netns/{netns}");
        let listener = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        })
        .join()
        .expect("bind in the namespace");
        Self::serve_on(TcpListener::from_std(listener).expect("tokio listener"))
    }

    fn serve_on(listener: TcpListener) -> ApiServer {
        let port = listener.local_addr().expect("local addr").port();
        let server = ApiServer {
            store: Arc::default(),
            changes: watch::channel(0).0,
            port,
        };
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(accepting.clone().serve(stream));
            }
        });
        server
    }

    fn client(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port)
            .parse()
            .expect("server URL");
        Client::try_from(Config::new(url)).expect("kube client")
    }

    /// A client presenting `token` (see [`ApiServer::add_token`]).
    fn client_as(&self, token: &str) -> Client {
        let url = format!("http://127.0.0.1:{}", self.port)
            .parse()
            .expect("server URL");
        let mut config = Config::new(url);
        config.auth_info.token = Some(token.to_owned().into());
        Client::try_from(config).expect("kube client")
    }

    /// Makes `token` authenticate as `username`, bound to `node` (a pod-bound token of a
    /// pod on that node).
    fn add_token(&self, token: &str, username: &str, node: Option<&str>) {
        self.lock().tokens.insert(
            token.to_owned(),
            Identity {
                username: username.to_owned(),
                node: node.map(str::to_owned),
            },
        );
    }

    fn identity(&self, request: &Recorded) -> Identity {
        let token = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        self.lock()
            .tokens
            .get(token)
            .cloned()
            .unwrap_or_else(|| Identity {
                username: USER.to_owned(),
                node: None,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock")
    }

    fn notify(&self) {
        self.changes.send_modify(|count| *count += 1);
    }

    /// Creates or replaces an object (as a `kubectl apply` would), logging the event.
    fn apply(&self, mut object: Value) {
        let kind = object["kind"].as_str().expect("object kind").to_owned();
        let collection = collection_of_kind(&kind);
        let namespace = if collection.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .expect("object name")
            .to_owned();
        {
            let mut store = self.lock();
            store.revision += 1;
            let revision = store.revision;
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            let key = (collection.kind, namespace, name);
            let event = if store.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            store.objects.insert(key, object.clone());
            store.log.push((revision, collection.kind, event, object));
        }
        self.notify();
    }

    fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let collection = collection_of_kind(kind);
        {
            let mut store = self.lock();
            let key = (collection.kind, namespace.to_owned(), name.to_owned());
            let Some(mut object) = store.objects.remove(&key) else {
                panic!("deleting {kind} {namespace}/{name}, which does not exist");
            };
            store.revision += 1;
            let revision = store.revision;
            object["metadata"]["resourceVersion"] = json!(revision.to_string());
            store
                .log
                .push((revision, collection.kind, "DELETED", object));
        }
        self.notify();
    }

    fn forbid(&self, kind: &'static str, forbidden: bool) {
        let mut store = self.lock();
        store.forbidden.retain(|k| *k != kind);
        if forbidden {
            store.forbidden.push(kind);
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Waits until the recorded requests satisfy `done`.
    async fn wait_for_requests(&self, what: &str, done: impl Fn(&[Recorded]) -> bool) {
        let mut changes = self.changes.subscribe();
        let waiting = async {
            loop {
                if done(&self.lock().requests) {
                    return;
                }
                changes.changed().await.expect("server alive");
            }
        };
        tokio::time::timeout(DEADLINE, waiting)
            .await
            .unwrap_or_else(|_| panic!("the server never saw: {what}"));
    }

    /// Serves one connection: requests one after another (HTTP/1.1 keep-alive).
    async fn serve(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let request = match read_request(&mut stream).await {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(error) => {
                    eprintln!("test API server: bad request: {error}");
                    return;
                }
            };
            self.lock().requests.push(request.clone());
            self.notify();
            let result = self.respond(&request, stream.get_mut()).await;
            if result.is_err() {
                return;
            }
        }
    }

    async fn respond(&self, request: &Recorded, stream: &mut TcpStream) -> std::io::Result<()> {
        let path = request.path();
        let parts: Vec<&str> = path.split('/').collect();
        // CertificateSigningRequests (cluster-scoped), as kube-apiserver serves them: POST
        // creates (spec.username, groups and extra set from the requester's identity,
        // whatever the body says), GET reads, PUT /approval changes only the conditions,
        // PUT /status only the certificate and the other conditions (a certificate only on an
        // Approved request); every PUT needs the current resourceVersion. The collection's
        // list and watch are below with the others.
        if let [
            "",
            "apis",
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            ref rest @ ..,
        ] = parts[..]
        {
            const CSR: &str = "CertificateSigningRequest";
            let reply = match (request.method.as_str(), rest) {
                ("POST", []) => Some(self.create(CSR, "", request)),
                ("GET", [name]) => Some(self.get(CSR, "", name)),
                ("PUT", [name, sub @ ("approval" | "status")]) => {
                    Some(self.replace(CSR, "", name, request, Some(sub)))
                }
                ("GET", []) => None,
                _ => Some(status_body(405, "MethodNotAllowed", "not served here")),
            };
            if let Some((code, body)) = reply {
                return write_json(stream, code, &body).await;
            }
        }
        // Secrets and ConfigMaps in a namespace: POST, GET; PUT of a ConfigMap.
        if let [
            "",
            "api",
            "v1",
            "namespaces",
            namespace,
            kind @ ("secrets" | "configmaps"),
            ref rest @ ..,
        ] = parts[..]
        {
            let kind = if kind == "secrets" {
                "Secret"
            } else {
                "ConfigMap"
            };
            let (code, body) = match (request.method.as_str(), rest) {
                ("POST", []) => self.create(kind, namespace, request),
                ("GET", [name]) => self.get(kind, namespace, name),
                ("PUT", [name]) if kind == "ConfigMap" => {
                    self.replace(kind, namespace, name, request, None)
                }
                _ => status_body(405, "MethodNotAllowed", "not served here"),
            };
            return write_json(stream, code, &body).await;
        }
        if let Some(collection) = COLLECTIONS.iter().find(|c| c.path == path) {
            if request.method != "GET" {
                return write_status(stream, 405, "MethodNotAllowed", "only GET here").await;
            }
            let watching = matches!(request.query("watch"), Some("true" | "1"));
            if self.lock().forbidden.contains(&collection.kind) {
                let verb = if watching { "watch" } else { "list" };
                return write_forbidden(stream, collection, verb).await;
            }
            return match request.query("watch") {
                Some("true" | "1") => self.watch(collection, request, stream).await,
                _ => self.list(collection, stream).await,
            };
        }
        // GET and PATCH /api/v1/namespaces/{namespace}/pods/{name}
        // GET /api/v1/nodes/{name}
        if let ["", "api", "v1", "nodes", name] = parts[..] {
            if request.method != "GET" {
                return write_status(stream, 405, "MethodNotAllowed", "only GET here").await;
            }
            let key = ("Node", String::new(), name.to_owned());
            let found = self.lock().objects.get(&key).cloned();
            return match found {
                Some(node) => write_json(stream, 200, &node).await,
                None => {
                    let message = format!("nodes \"{name}\" not found");
                    write_status(stream, 404, "NotFound", &message).await
                }
            };
        }
        // Leases, as kube-apiserver's generic registry serves them: POST creates (409
        // AlreadyExists if present), GET reads (404 if missing), PUT replaces only with the
        // current metadata.resourceVersion (409 Conflict otherwise); every write gets a new
        // resourceVersion.
        if let [
            "",
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            namespace,
            "leases",
            ref rest @ ..,
        ] = parts[..]
        {
            return self.lease(namespace, rest, request, stream).await;
        }
        if let ["", "api", "v1", "namespaces", namespace, "pods", name] = parts[..] {
            return match request.method.as_str() {
                "PATCH" => self.patch_pod(namespace, name, request, stream).await,
                "GET" => self.get_pod(namespace, name, stream).await,
                _ => write_status(stream, 405, "MethodNotAllowed", "only GET and PATCH here").await,
            };
        }
        write_status(
            stream,
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .await
    }

    async fn lease(
        &self,
        namespace: &str,
        rest: &[&str],
        request: &Recorded,
        stream: &mut TcpStream,
    ) -> std::io::Result<()> {
        let body: Option<Value> = serde_json::from_slice(&request.body).ok();
        let (code, answer) = {
            let mut store = self.lock();
            match (request.method.as_str(), rest) {
                ("GET", [name]) => {
                    let key = ("Lease", namespace.to_owned(), (*name).to_owned());
                    match store.objects.get(&key) {
                        Some(lease) => (200, Ok(lease.clone())),
                        None => (
                            404,
                            Err((
                                "NotFound",
                                format!("leases.coordination.k8s.io \"{name}\" not found"),
                            )),
                        ),
                    }
                }
                ("POST", []) => match body {
                    None => (400, Err(("BadRequest", "the body is no Lease".to_owned()))),
                    Some(mut lease) => {
                        let name = lease["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        let key = ("Lease", namespace.to_owned(), name.clone());
                        if store.objects.contains_key(&key) {
                            (
                                409,
                                Err((
                                    "AlreadyExists",
                                    format!("leases.coordination.k8s.io \"{name}\" already exists"),
                                )),
                            )
                        } else {
                            store.revision += 1;
                            lease["metadata"]["namespace"] = json!(namespace);
                            lease["metadata"]["resourceVersion"] =
                                json!(store.revision.to_string());
                            // Server-owned, as kube-apiserver sets them: the client's are
                            // ignored.
                            let created = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs());
                            lease["metadata"]["creationTimestamp"] =
                                json!(rfc3339_seconds(created));
                            lease["metadata"]["uid"] =
                                json!(format!("lease-{}-{}", store.revision, created));
                            lease["kind"] = json!("Lease");
                            lease["apiVersion"] = json!("coordination.k8s.io/v1");
                            store.objects.insert(key, lease.clone());
                            (201, Ok(lease))
                        }
                    }
                },
                ("PUT", [name]) => {
                    let key = ("Lease", namespace.to_owned(), (*name).to_owned());
                    match (body, store.objects.get(&key).cloned()) {
                        (None, _) => (400, Err(("BadRequest", "the body is no Lease".to_owned()))),
                        (_, None) => (
                            404,
                            Err((
                                "NotFound",
                                format!("leases.coordination.k8s.io \"{name}\" not found"),
                            )),
                        ),
                        (Some(mut lease), Some(current)) => {
                            if lease["metadata"]["resourceVersion"]
                                != current["metadata"]["resourceVersion"]
                            {
                                (
                                    409,
                                    Err((
                                        "Conflict",
                                        format!(
                                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                                        ),
                                    )),
                                )
                            } else {
                                store.revision += 1;
                                lease["metadata"]["resourceVersion"] =
                                    json!(store.revision.to_string());
                                for owned in ["creationTimestamp", "uid"] {
                                    lease["metadata"][owned] = current["metadata"][owned].clone();
                                }
                                lease["kind"] = json!("Lease");
                                lease["apiVersion"] = json!("coordination.k8s.io/v1");
                                store.objects.insert(key, lease.clone());
                                (200, Ok(lease))
                            }
                        }
                    }
                }
                _ => (
                    405,
                    Err((
                        "MethodNotAllowed",
                        "leases: GET/PUT on a name, POST on the collection".to_owned(),
                    )),
                ),
            }
        };
        self.notify();
        match answer {
            Ok(lease) => write_json(stream, code, &lease).await,
            Err((reason, message)) => write_status(stream, code, reason, &message).await,
        }
    }

    /// An object as the server holds it.
    fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let collection = collection_of_kind(kind);
        self.lock()
            .objects
            .get(&(collection.kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores a new version of an object and logs its event (the caller holds the lock).
    fn commit(
        store: &mut Store,
        kind: &'static str,
        key: (String, String),
        mut object: Value,
    ) -> Value {
        let collection = collection_of_kind(kind);
        store.revision += 1;
        let revision = store.revision;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        object["kind"] = json!(kind);
        object["apiVersion"] = json!(collection.api_version);
        let key = (collection.kind, key.0, key.1);
        let event = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(key, object.clone());
        store
            .log
            .push((revision, collection.kind, event, object.clone()));
        object
    }

    /// POST: 201 with the stored object, or 409 AlreadyExists.
    fn create(&self, kind: &'static str, namespace: &str, request: &Recorded) -> (u16, Value) {
        let Ok(mut object) = serde_json::from_slice::<Value>(&request.body) else {
            return status_body(400, "BadRequest", "the body is not JSON");
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status_body(422, "Invalid", "metadata.name: Required value");
        };
        let identity = self.identity(request);
        let reply = {
            let mut store = self.lock();
            let collection = collection_of_kind(kind);
            if store
                .objects
                .contains_key(&(collection.kind, namespace.to_owned(), name.clone()))
            {
                let message = format!("{} \"{name}\" already exists", qualified(collection));
                return status_body(409, "AlreadyExists", &message);
            }
            if !namespace.is_empty() {
                object["metadata"]["namespace"] = json!(namespace);
            }
            object["metadata"]["creationTimestamp"] = json!(
                switchyard::source::k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            );
            object["metadata"]["uid"] = json!(format!("{kind}-{}", store.revision + 1));
            if kind == "CertificateSigningRequest" {
                // The authenticator's word, never the client's.
                object["spec"]["username"] = json!(identity.username);
                object["spec"]["groups"] =
                    json!(["system:serviceaccounts", "system:authenticated"]);
                object["spec"]["extra"] = match &identity.node {
                    Some(node) => json!({ NODE_NAME_EXTRA: [node] }),
                    None => json!({}),
                };
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
            (
                201,
                Self::commit(&mut store, kind, (namespace.to_owned(), name), object),
            )
        };
        self.notify();
        reply
    }

    fn get(&self, kind: &'static str, namespace: &str, name: &str) -> (u16, Value) {
        match self.object(kind, namespace, name) {
            Some(object) => (200, object),
            None => {
                let message = format!(
                    "{} \"{name}\" not found",
                    qualified(collection_of_kind(kind))
                );
                status_body(404, "NotFound", &message)
            }
        }
    }

    /// PUT of the object or of its `approval` or `status` subresource.
    fn replace(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        request: &Recorded,
        subresource: Option<&str>,
    ) -> (u16, Value) {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return status_body(400, "BadRequest", "the body is not JSON");
        };
        let collection = collection_of_kind(kind);
        let reply = {
            let mut store = self.lock();
            let key = (collection.kind, namespace.to_owned(), name.to_owned());
            let Some(current) = store.objects.get(&key).cloned() else {
                let message = format!("{} \"{name}\" not found", qualified(collection));
                return status_body(404, "NotFound", &message);
            };
            if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                let message = format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    qualified(collection)
                );
                return status_body(409, "Conflict", &message);
            }
            let is_approval = |c: &Value| matches!(c["type"].as_str(), Some("Approved" | "Denied"));
            let conditions = |v: &Value| -> Vec<Value> {
                v["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            };
            let updated = match subresource {
                None => {
                    let mut updated = body.clone();
                    for owned in ["uid", "creationTimestamp", "namespace"] {
                        updated["metadata"][owned] = current["metadata"][owned].clone();
                    }
                    updated
                }
                Some("approval") => {
                    let new = conditions(&body);
                    let approved = new.iter().any(|c| c["type"] == "Approved");
                    let denied = new.iter().any(|c| c["type"] == "Denied");
                    if approved && denied {
                        return status_body(
                            422,
                            "Invalid",
                            "status.conditions: Approved and Denied conditions are mutually exclusive",
                        );
                    }
                    let mut updated = current.clone();
                    updated["status"]["conditions"] = json!(new);
                    updated
                }
                Some(_) => {
                    let old = conditions(&current);
                    let approved = old.iter().any(|c| c["type"] == "Approved");
                    let certificate = body["status"]["certificate"].clone();
                    if !certificate.is_null() && !approved {
                        return status_body(
                            422,
                            "Invalid",
                            "status.certificate: Forbidden: certificate can only be set on an approved request",
                        );
                    }
                    let mut merged: Vec<Value> =
                        old.into_iter().filter(|c| is_approval(c)).collect();
                    merged.extend(conditions(&body).into_iter().filter(|c| !is_approval(c)));
                    let mut updated = current.clone();
                    updated["status"]["conditions"] = json!(merged);
                    if !certificate.is_null() {
                        updated["status"]["certificate"] = certificate;
                    }
                    updated
                }
            };
            (
                200,
                Self::commit(
                    &mut store,
                    kind,
                    (namespace.to_owned(), name.to_owned()),
                    updated,
                ),
            )
        };
        self.notify();
        reply
    }

    /// The Lease as the server holds it.
    fn lease_object(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&("Lease", namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    async fn list(&self, collection: &Collection, stream: &mut TcpStream) -> std::io::Result<()> {
        let body = {
            let store = self.lock();
            // List items carry no kind/apiVersion: the real server leaves them out too.
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|((kind, _, _), _)| *kind == collection.kind)
                .map(|(_, object)| {
                    let mut item = object.clone();
                    if let Some(map) = item.as_object_mut() {
                        map.remove("kind");
                        map.remove("apiVersion");
                    }
                    item
                })
                .collect();
            json!({
                "kind": format!("{}List", collection.kind),
                "apiVersion": collection.api_version,
                "metadata": { "resourceVersion": store.revision.to_string() },
                "items": items,
            })
        };
        write_json(stream, 200, &body).await
    }

    async fn watch(
        &self,
        collection: &Collection,
        request: &Recorded,
        stream: &mut TcpStream,
    ) -> std::io::Result<()> {
        let mut cursor: u64 = request
            .query("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let bookmarks = request.query("allowWatchBookmarks") == Some("true");
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await?;
        let mut changes = self.changes.subscribe();
        loop {
            let (events, revision) = {
                let store = self.lock();
                let events: Vec<Value> = store
                    .log
                    .iter()
                    .filter(|(rv, kind, _, _)| *rv > cursor && *kind == collection.kind)
                    .map(|(_, _, event, object)| json!({ "type": event, "object": object }))
                    .collect();
                (events, store.revision)
            };
            let sent_any = !events.is_empty();
            for event in events {
                write_chunk(stream, &event).await?;
            }
            // Every event of this collection up to `revision` has now been sent, which is
            // exactly what a bookmark at `revision` promises.
            if bookmarks && (sent_any || cursor < revision) {
                let bookmark = json!({
                    "type": "BOOKMARK",
                    "object": {
                        "kind": collection.kind,
                        "apiVersion": collection.api_version,
                        "metadata": { "resourceVersion": revision.to_string() },
                    },
                });
                write_chunk(stream, &bookmark).await?;
            }
            cursor = revision;
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        stream: &mut TcpStream,
    ) -> std::io::Result<()> {
        let key = ("Pod", namespace.to_owned(), name.to_owned());
        let pod = self.lock().objects.get(&key).cloned();
        match pod {
            Some(pod) => write_json(stream, 200, &pod).await,
            None => {
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure",
                    "message": format!("pods \"{name}\" not found"),
                    "reason": "NotFound",
                    "details": { "name": name, "kind": "pods" },
                    "code": 404,
                });
                write_json(stream, 404, &status).await
            }
        }
    }

    async fn patch_pod(
        &self,
        namespace: &str,
        name: &str,
        request: &Recorded,
        stream: &mut TcpStream,
    ) -> std::io::Result<()> {
        if request.header("content-type") != Some("application/merge-patch+json") {
            return write_status(
                stream,
                415,
                "UnsupportedMediaType",
                "expected a merge patch",
            )
            .await;
        }
        let Ok(patch) = serde_json::from_slice::<Value>(&request.body) else {
            return write_status(stream, 400, "BadRequest", "patch body is not JSON").await;
        };
        let key = ("Pod", namespace.to_owned(), name.to_owned());
        let Some(mut pod) = self.lock().objects.get(&key).cloned() else {
            let message = format!("pods \"{name}\" not found");
            return write_status(stream, 404, "NotFound", &message).await;
        };
        merge_patch(&mut pod, &patch);
        self.apply(pod);
        let updated = self
            .lock()
            .objects
            .get(&key)
            .cloned()
            .unwrap_or(Value::Null);
        write_json(stream, 200, &updated).await
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> std::io::Result<Option<Recorded>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other(format!("request line {line:?}")));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(Some(Recorded {
        method,
        target,
        headers,
        body,
    }))
}

async fn write_json(stream: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        409 => "Conflict",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        _ => "Unsupported Media Type",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await
}

/// A collection's resource as error messages name it (`leases.coordination.k8s.io`).
fn qualified(collection: &Collection) -> String {
    let resource = collection.path.rsplit('/').next().unwrap_or_default();
    match collection
        .path
        .strip_prefix("/apis/")
        .and_then(|r| r.split('/').next())
    {
        Some(group) => format!("{resource}.{group}"),
        None => resource.to_owned(),
    }
}

/// A `metav1.Status` failure and its code.
fn status_body(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// A `metav1.Status` failure, as the API server sends for every error.
async fn write_status(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    message: &str,
) -> std::io::Result<()> {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    write_json(stream, code, &status).await
}

/// The service account the tests' controller would run as (deploy/kubernetes/rbac.yaml).
const USER: &str = "system:serviceaccount:switchyard:switchyard-controller";

/// kube-apiserver's answer to a request RBAC denies: `NewForbidden` with the authorizer's
/// message (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go).
async fn write_forbidden(
    stream: &mut TcpStream,
    collection: &Collection,
    verb: &str,
) -> std::io::Result<()> {
    let resource = collection.path.rsplit('/').next().unwrap_or_default();
    let group = collection
        .path
        .strip_prefix("/apis/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let mut details = json!({ "kind": resource });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure",
        "message": format!(
            "{qualified} is forbidden: User \"{USER}\" cannot {verb} resource \"{resource}\" \
             in API group \"{group}\" at the cluster scope"
        ),
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    });
    write_json(stream, 403, &status).await
}

/// One watch event: one line of JSON in one HTTP chunk.
async fn write_chunk(stream: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let line = format!("{event}\n");
    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
    stream.write_all(chunk.as_bytes()).await?;
    stream.flush().await
}

fn node(name: &str, cidr: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
        "status": { "addresses": [{ "type": "InternalIP", "address": ip }] },
    })
}

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

fn pod(namespace: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": name } },
        "spec": { "nodeName": node, "containers": [{ "name": "main", "image": "busybox" }] },
    })
}

/// A small cluster with one object of every kind the source reads.
fn populate(server: &ApiServer) {
    server.apply(node("node-1", "10.244.1.0/24", "192.168.77.11"));
    server.apply(node("node-2", "10.244.2.0/24", "192.168.77.12"));
    server.apply(namespace("frontend"));
    server.apply(namespace("backend"));
    server.apply(pod("frontend", "web-1", "node-1"));
    server.apply(pod("backend", "api-1", "node-2"));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "api", "namespace": "backend" },
        "spec": { "selector": { "app": "api-1" }, "clusterIP": "10.96.0.20",
                  "ports": [{ "port": 80, "targetPort": 8080, "protocol": "TCP" }] },
    }));
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "api-x1", "namespace": "backend",
                      "labels": { "kubernetes.io/service-name": "api" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.244.2.5"], "conditions": { "ready": true } }],
        "ports": [{ "port": 8080, "protocol": "TCP" }],
    }));
    server.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "api-ingress", "namespace": "backend" },
        "spec": { "podSelector": { "matchLabels": { "app": "api-1" } },
                  "policyTypes": ["Ingress"] },
    }));
}

async fn start_source(server: &ApiServer) -> Source {
    tokio::time::timeout(DEADLINE, Source::kubernetes(server.client()))
        .await
        .expect("initial lists complete")
        .expect("kubernetes source starts")
}

#[tokio::test]
async fn lists_then_follows_watch_events() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    let source = start_source(&server).await;
    let mut receiver = source.subscribe();

    // The first state is the complete listing.
    let state = receiver.borrow_and_update().clone();
    assert_eq!(state.nodes.keys().collect::<Vec<_>>(), ["node-1", "node-2"]);
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        ["backend", "frontend"]
    );
    assert_eq!(pod_names(&state), ["backend/api-1", "frontend/web-1"]);
    let api = ObjectKey::new("backend", "api");
    assert_eq!(
        state.services[&api]
            .spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref()),
        Some("10.96.0.20")
    );
    assert_eq!(
        state.endpoint_slices[&ObjectKey::new("backend", "api-x1")].endpoints[0].addresses,
        ["10.244.2.5"]
    );
    assert!(
        state
            .network_policies
            .contains_key(&ObjectKey::new("backend", "api-ingress"))
    );
    let node2 = &state.nodes["node-2"];
    assert_eq!(
        node2
            .spec
            .as_ref()
            .and_then(|spec| spec.pod_cidr.as_deref()),
        Some("10.244.2.0/24")
    );

    // Every collection was listed, then watched from the list's resourceVersion.
    let requests = server.requests();
    for collection in source_collections() {
        let list = requests
            .iter()
            .find(|r| r.path() == collection.path && r.query("watch").is_none())
            .unwrap_or_else(|| panic!("no list of {}", collection.path));
        assert_eq!(list.method, "GET");
    }
    server
        .wait_for_requests("a watch of every collection", |requests| {
            source_collections().iter().all(|collection| {
                requests.iter().any(|r| {
                    r.path() == collection.path
                        && r.query("watch") == Some("true")
                        && r.query("resourceVersion").is_some()
                })
            })
        })
        .await;

    // ADDED
    server.apply(pod("backend", "db-1", "node-2"));
    let state = wait_for_state(DEADLINE, &mut receiver, "db-1 added", |state| {
        state.pods.contains_key(&ObjectKey::new("backend", "db-1"))
    })
    .await;
    assert_eq!(
        pod_names(&state),
        ["backend/api-1", "backend/db-1", "frontend/web-1"]
    );

    // DELETED
    server.delete("Pod", "frontend", "web-1");
    let state = wait_for_state(DEADLINE, &mut receiver, "web-1 deleted", |state| {
        !state
            .pods
            .contains_key(&ObjectKey::new("frontend", "web-1"))
    })
    .await;
    assert_eq!(pod_names(&state), ["backend/api-1", "backend/db-1"]);

    // Other kinds flow through the same way.
    server.delete("NetworkPolicy", "backend", "api-ingress");
    server.apply(node("node-3", "10.244.3.0/24", "192.168.77.13"));
    let state = wait_for_state(
        DEADLINE,
        &mut receiver,
        "policy deleted and node-3 added",
        |state| state.network_policies.is_empty() && state.nodes.contains_key("node-3"),
    )
    .await;
    assert_eq!(state.nodes.len(), 3);
}

#[tokio::test]
async fn annotate_pod_sends_a_merge_patch_and_the_change_comes_back_through_the_watch() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    let source = start_source(&server).await;
    let mut receiver = source.subscribe();
    let key = ObjectKey::new("backend", "api-1");
    let value = r#"{"ip":"10.244.2.5/24","mac":"0a:58:0a:f4:02:05"}"#;

    source
        .annotate_pod(&key, POD_NETWORK_ANNOTATION, value)
        .await
        .expect("annotate pod");

    let requests = server.requests();
    let patches: Vec<&Recorded> = requests.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    let patch = patches[0];
    assert_eq!(patch.path(), "/api/v1/namespaces/backend/pods/api-1");
    assert_eq!(
        patch.header("content-type"),
        Some("application/merge-patch+json")
    );
    let body: Value = serde_json::from_slice(&patch.body).expect("patch body is JSON");
    assert_eq!(
        body,
        json!({ "metadata": { "annotations": { "switchyard.io/pod-network": value } } })
    );

    let state = wait_for_state(DEADLINE, &mut receiver, "annotation visible", |state| {
        state.pods[&key]
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(POD_NETWORK_ANNOTATION))
    })
    .await;
    let annotations = state.pods[&key]
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(annotations[POD_NETWORK_ANNOTATION], value);
    // The merge patch touched nothing else.
    assert_eq!(
        state.pods[&key].metadata.labels.clone().unwrap_or_default()["app"],
        "api-1"
    );
}

#[tokio::test]
async fn annotate_pod_errors_name_the_pod() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    let source = start_source(&server).await;

    let missing = ObjectKey::new("backend", "gone");
    let error = source
        .annotate_pod(&missing, POD_NETWORK_ANNOTATION, "{}")
        .await
        .expect_err("patching a missing pod fails");
    assert!(matches!(error, Error::Kube { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("backend/gone"), "{message}");
    assert!(message.contains("not found"), "{message}");

    let error = source
        .annotate_pod(
            &ObjectKey::new("backend", "api-1"),
            POD_NETWORK_ANNOTATION,
            "{oops",
        )
        .await
        .expect_err("a value that is not JSON is refused");
    assert!(
        matches!(error, Error::AnnotationNotJson { .. }),
        "{error:?}"
    );
    let patches = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(
        patches, 1,
        "only the missing pod's patch reached the server"
    );
}

#[tokio::test]
async fn a_failing_list_is_retried_and_the_source_becomes_ready_once_it_succeeds() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    // As when the controller starts before its ClusterRole is bound.
    server.forbid("Pod", true);
    let starting = tokio::spawn({
        let client = server.client();
        async move { Source::kubernetes(client).await }
    });
    server
        .wait_for_requests("the pod list tried twice", |requests| {
            requests
                .iter()
                .filter(|r| r.path() == "/api/v1/pods" && r.query("watch").is_none())
                .count()
                >= 2
        })
        .await;
    assert!(!starting.is_finished(), "ready before pods were listed");

    server.forbid("Pod", false);
    let source = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("ready after the list succeeds")
        .expect("start task")
        .expect("kubernetes source starts");
    let state = source.subscribe().borrow().clone();
    assert_eq!(pod_names(&state), ["backend/api-1", "frontend/web-1"]);
}

#[tokio::test]
async fn a_kubeconfig_file_selects_the_server() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {{server: 'http://127.0.0.1:{}'}}
users:
  - name: test
    user: {{}}
contexts:
  - name: test
    context: {{cluster: test, user: test}}
current-context: test
",
        server.port
    );
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");

    let client = kube_client(Some(&path))
        .await
        .expect("client from kubeconfig");
    let source = tokio::time::timeout(DEADLINE, Source::kubernetes(client))
        .await
        .expect("initial lists complete")
        .expect("kubernetes source starts");
    let state = source.subscribe().borrow().clone();
    assert_eq!(pod_names(&state), ["backend/api-1", "frontend/web-1"]);

    let missing = dir.path().join("no-such-kubeconfig");
    match kube_client(Some(&missing)).await {
        Err(error @ Error::Kubeconfig { .. }) => {
            assert!(
                error.to_string().contains(&*missing.to_string_lossy()),
                "{error}"
            );
        }
        Err(other) => panic!("expected a kubeconfig error, got {other}"),
        Ok(_) => panic!("a missing kubeconfig gave a client"),
    }
}

#[tokio::test]
async fn a_forbidden_kind_that_is_not_required_does_not_hold_the_start() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    // The ClusterRole lacks networkpolicies: the source starts without them.
    server.forbid("NetworkPolicy", true);
    let source = start_source(&server).await;
    let state = source.subscribe().borrow().clone();
    assert_eq!(pod_names(&state), ["backend/api-1", "frontend/web-1"]);
    assert!(state.network_policies.is_empty());
    let sync = source.sync_status();
    let policies = &sync[&Kind::NetworkPolicy];
    assert!(!policies.synced, "{sync:?}");
    let error = policies.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("networkpolicies.networking.k8s.io is forbidden"),
        "{error}"
    );
    for kind in [Kind::Node, Kind::Pod, Kind::Namespace, Kind::Service] {
        assert!(sync[&kind].in_sync(), "{kind}: {sync:?}");
    }

    // Granted later: the policies arrive, the kind is in sync.
    let mut receiver = source.subscribe();
    server.forbid("NetworkPolicy", false);
    wait_for_state(DEADLINE, &mut receiver, "the policy listed", |state| {
        state
            .network_policies
            .contains_key(&ObjectKey::new("backend", "api-ingress"))
    })
    .await;
    let waiting = async {
        while !source.sync_status()[&Kind::NetworkPolicy].in_sync() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("NetworkPolicy in sync once listed");
}

/// The controller process against this server, with networkpolicies forbidden: a pod is
/// still attached through the real CNI plugin and gets its flows; /readyz, yardctl status
/// and the log name the kind that waits; once granted, /readyz turns ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_networkpolicies_permission_pods_are_still_attached_and_readyz_names_the_kind() {
    use switchyard_tests::cni_node::{CniNode, NODE, POD_CIDR};
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    server.apply(node(NODE, POD_CIDR, "192.0.2.10"));
    server.apply(namespace("x"));
    server.apply(pod("x", "a", NODE));
    server.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "deny-a", "namespace": "x" },
        "spec": { "podSelector": { "matchLabels": { "app": "a" } },
                  "policyTypes": ["Ingress"] },
    }));
    server.forbid("NetworkPolicy", true);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(server.port)).expect("write kubeconfig");

    let node = tokio::task::spawn_blocking(move || {
        let path = kubeconfig.display().to_string();
        CniNode::start_with_source(&["--kubeconfig", &path])
    })
    .await
    .expect("the controller starts and reports the node ready");

    let node = tokio::task::spawn_blocking(move || {
        // CNI ADD through the real plugin: the pod gets its address and its port.
        let netns = node.pod_netns();
        let out = node.shim_run(
            "ADD",
            "x/a",
            "c-a",
            &netns.path().display().to_string(),
            &[],
        );
        assert!(
            out.success,
            "ADD failed: {} {}\ncontroller log:\n{}",
            out.stdout,
            out.stderr,
            node.controller_log()
        );
        let ip = out.json()["ips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let cidr: ipnet::Ipv4Net = POD_CIDR.parse().expect("pod CIDR");
        let address: ipnet::Ipv4Net = ip.parse().expect("an address with its prefix");
        assert!(cidr.contains(&address.addr()), "{ip} in {POD_CIDR}");
        assert_eq!(node.ports().len(), 1, "the pod's port on br-int");
        let flows = node.ovs.ofctl("dump-flows", "br-int", &["--no-stats"]);
        assert!(
            flows.contains(&address.addr().to_string()),
            "the pod's flows on br-int:\n{flows}"
        );

        // /readyz: not ready, naming the kind, the API server's reason and what waits.
        let (code, body) = node.metrics_get("/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("kind NetworkPolicy: not in sync"), "{body}");
        assert!(body.contains("is forbidden"), "{body}");
        assert!(body.contains("NetworkPolicy enforcement"), "{body}");
        assert!(!body.contains("kind Pod"), "{body}");

        // Status (yardctl status --json): per kind.
        let yardctl = switchyard_tests::workspace_binary("yardctl");
        let server_addr = format!("unix:{}/admin.sock", node.dir().display());
        let status = switchyard_tests::run(
            yardctl.to_str().expect("path"),
            &["status", "--server", &server_addr, "--json"],
        );
        let status: Value = serde_json::from_str(&status).expect("status JSON");
        let kinds = status["kinds"].as_array().expect("kinds");
        let kind = |name: &str| {
            kinds
                .iter()
                .find(|k| k["kind"] == name)
                .unwrap_or_else(|| panic!("{name} in {status}"))
                .clone()
        };
        assert_eq!(kind("NetworkPolicy")["synced"], false, "{status}");
        assert!(
            kind("NetworkPolicy")["error"]
                .as_str()
                .is_some_and(|e| e.contains("forbidden")),
            "{status}"
        );
        assert_eq!(kind("Pod")["synced"], true, "{status}");
        assert_eq!(kind("Pod")["error"], "", "{status}");

        // The log: one warning naming the kind.
        let log = node.controller_log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot list NetworkPolicy"))
            .collect();
        assert!(!warnings.is_empty(), "no warning naming the kind:\n{log}");
        node
    })
    .await
    .expect("attached while networkpolicies are forbidden");

    // Granted: the kind syncs and the controller is ready.
    server.forbid("NetworkPolicy", false);
    tokio::task::spawn_blocking(move || {
        let ready = switchyard_tests::wait_for(DEADLINE, || node.metrics_get("/readyz").0 == 200);
        assert!(
            ready.is_some(),
            "not ready after the grant: {:?}\n{}",
            node.metrics_get("/readyz"),
            node.controller_log()
        );
        // Repeated failures while forbidden were logged at warn once, not per retry.
        let log = node.controller_log();
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot list NetworkPolicy"))
            .count();
        assert_eq!(warnings, 1, "{log}");
        assert!(log.contains("NetworkPolicy listed; in sync"), "{log}");
    })
    .await
    .expect("ready after the grant");
}

fn kubeconfig_for(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {{server: 'http://127.0.0.1:{port}'}}
users:
  - name: test
    user: {{}}
contexts:
  - name: test
    context: {{cluster: test, user: test}}
current-context: test
"
    )
}

/// A node whose OVSDB cannot be reached is logged at warn once per reason, naming the node
/// and the target; the retries in between only at debug. A new reason is a new warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_logged_at_warn_once_per_reason_with_node_and_target() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    server.apply(node("far-node", "10.253.1.0/24", "127.0.0.1"));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(server.port)).expect("write kubeconfig");
    // A port nobody listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = format!("tcp:127.0.0.1:{port}");
    let log_path = dir.path().join("controller.log");
    let log = std::fs::File::create(&log_path).expect("controller.log");
    let d = dir.path().display();
    let mut controller =
        std::process::Command::new(switchyard_tests::workspace_binary("switchyard"))
            .args([
                "controller",
                "--kubeconfig",
                &kubeconfig.display().to_string(),
            ])
            .args(["--ovsdb-template", &target])
            .args(["--openflow-listen", &format!("punix:{d}/of.sock")])
            .args(["--openflow-target", &format!("unix:{d}/of.sock")])
            .args(["--cni-listen", &format!("unix:{d}/cni.sock")])
            .args(["--admin-listen", &format!("unix:{d}/admin.sock")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,switchyard::agent=debug")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the controller");
    let read_log = move || std::fs::read_to_string(&log_path).unwrap_or_default();
    let warnings = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot reach its OVSDB"))
            .map(str::to_owned)
            .collect()
    };
    let retries = |log: &str| log.matches("OVSDB still not reachable").count();

    let outcome = tokio::task::spawn_blocking(move || {
        // Several refused attempts: one warning.
        let retried = switchyard_tests::wait_for(DEADLINE, || retries(&read_log()) >= 2);
        let log = read_log();
        assert!(retried.is_some(), "the agent did not retry:\n{log}");
        let first = warnings(&log);
        assert_eq!(first.len(), 1, "{log}");
        assert!(first[0].contains("node=far-node"), "{}", first[0]);
        assert!(first[0].contains(&target), "{}", first[0]);
        assert!(first[0].to_lowercase().contains("refused"), "{}", first[0]);

        // Something answers now and closes at once: a new reason, a new warning.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        let changed = switchyard_tests::wait_for(DEADLINE, || warnings(&read_log()).len() >= 2);
        let log = read_log();
        assert!(changed.is_some(), "no warning for the new reason:\n{log}");
        let second = &warnings(&log)[1];
        assert!(
            second.contains("node=far-node") && second.contains(&target),
            "{second}"
        );
        assert!(!second.to_lowercase().contains("refused"), "{second}");
    })
    .await;
    let _ = controller.kill();
    let _ = controller.wait();
    outcome.expect("warnings once per reason");
}

/// br-int that cannot connect to the controller (vswitchd's `status:last_error` in the
/// Controller row) is logged at warn once, naming the node and the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_br_int_that_cannot_reach_the_controller_is_logged_at_warn_once_with_node_and_target() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    server.apply(node("lonely-node", "10.253.2.0/24", "192.0.2.10"));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(server.port)).expect("write kubeconfig");
    let ovs = switchyard_tests::OvsSandbox::start();
    // br-int is told to connect where nothing listens (in the node's own namespace).
    let target = "tcp:127.0.0.1:9";
    let log_path = dir.path().join("controller.log");
    let log = std::fs::File::create(&log_path).expect("controller.log");
    let d = dir.path().display();
    let mut controller =
        std::process::Command::new(switchyard_tests::workspace_binary("switchyard"))
            .args([
                "controller",
                "--kubeconfig",
                &kubeconfig.display().to_string(),
            ])
            .args(["--ovsdb-template", &ovs.db_target()])
            .args(["--openflow-listen", &format!("punix:{d}/of.sock")])
            .args(["--openflow-target", target])
            .args(["--cni-listen", &format!("unix:{d}/cni.sock")])
            .args(["--admin-listen", &format!("unix:{d}/admin.sock")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the controller");
    let outcome = tokio::task::spawn_blocking(move || {
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let warnings = |log: &str| -> Vec<String> {
            log.lines()
                .filter(|l| l.contains("WARN") && l.contains("br-int cannot connect"))
                .map(str::to_owned)
                .collect()
        };
        let seen = switchyard_tests::wait_for(DEADLINE, || !warnings(&read_log()).is_empty());
        assert!(seen.is_some(), "no warning:\n{}", read_log());
        // vswitchd keeps retrying with the same reason: after more refused attempts
        // (its own log), still one warning.
        let vswitchd_log = ovs.dir().join("ovs-vswitchd.log");
        let attempts = || {
            std::fs::read_to_string(&vswitchd_log)
                .unwrap_or_default()
                .matches("127.0.0.1:9: connection failed")
                .count()
        };
        let before = attempts();
        let retried = switchyard_tests::wait_for(DEADLINE, || attempts() > before);
        assert!(retried.is_some(), "{}", ovs.log_tail("ovs-vswitchd"));
        let log = read_log();
        let found = warnings(&log);
        assert_eq!(found.len(), 1, "{log}");
        assert!(found[0].contains("node=lonely-node"), "{}", found[0]);
        assert!(found[0].contains(target), "{}", found[0]);
        assert!(found[0].to_lowercase().contains("refused"), "{}", found[0]);
    })
    .await;
    let _ = controller.kill();
    let _ = controller.wait();
    outcome.expect("one warning for br-int's failing connection");
}

/// `node-setup --node NAME` reads the Node's pod CIDR with one GET; a Node without one, or
/// none at all, is an error naming it.
#[tokio::test]
async fn node_setup_reads_the_pod_cidr_of_its_node() {
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    populate(&server);
    server.apply(json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "bare" } }));
    let cidr = switchyard::source::node_pod_cidr(server.client(), "node-2")
        .await
        .expect("node-2's pod CIDR");
    assert_eq!(cidr.to_string(), "10.244.2.0/24");
    let gets: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/api/v1/nodes/node-2")
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].method, "GET");

    let error = switchyard::source::node_pod_cidr(server.client(), "bare")
        .await
        .expect_err("no podCIDR");
    assert!(matches!(error, Error::NodePodCidr { .. }), "{error:?}");
    assert!(error.to_string().contains("node bare"), "{error}");
    let error = switchyard::source::node_pod_cidr(server.client(), "nowhere")
        .await
        .expect_err("no such node");
    assert!(error.to_string().contains("get node nowhere"), "{error}");
    assert!(error.to_string().contains("not found"), "{error}");
}

/// Two replicas' elections against the server's Leases: exactly one leads; when the leader
/// dies (its task aborted: no release, as kill -9) the other takes the Lease once it has
/// expired, with a higher `leaseTransitions`; a write with a stale `resourceVersion` (what
/// the dead leader would send) is refused with 409; a released Lease (SIGTERM) is taken at
/// the next try.
#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    use switchyard::leader::{self, Leadership, LeaseConfig};
    let server = ApiServer::start().await;
    // Each replica advertises its CNI address (replica-c none); the holder's is written
    // into the Lease, and its standby learns it from there.
    let address = |identity: &str| match identity {
        "replica-a" => Some("ssl:10.0.0.1:6654".to_owned()),
        "replica-b" => Some("ssl:10.0.0.2:6654".to_owned()),
        _ => None,
    };
    let config = |identity: &str| LeaseConfig {
        name: "switchyard-controller".into(),
        namespace: "switchyard".into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
        cni_address: address(identity),
    };
    let start = |identity: &str| {
        let (tx, rx) = watch::channel(Leadership::default());
        let (cni_tx, cni_rx) = watch::channel(None);
        let task = tokio::spawn(leader::run(server.client(), config(identity), tx, cni_tx));
        (task, rx, cni_rx)
    };
    let annotated = |lease: &Value| {
        lease["metadata"]["annotations"][leader::LEADER_CNI_ANNOTATION]
            .as_str()
            .map(str::to_owned)
    };
    let (task_a, mut a, cni_a) = start("replica-a");
    let (task_b, mut b, cni_b) = start("replica-b");
    let deadline = Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        loop {
            if a.borrow().leader || b.borrow().leader {
                return;
            }
            tokio::select! { _ = a.changed() => {}, _ = b.changed() => {} }
        }
    })
    .await
    .expect("a leader within 30 s");
    // Let both try again a few times: still exactly one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(
        a.borrow().leader,
        b.borrow().leader,
        "exactly one replica leads"
    );
    let lease = server
        .lease_object("switchyard", "switchyard-controller")
        .expect("the Lease exists");
    let (leader_task, leader_name, mut standby, standby_task, standby_name) = if a.borrow().leader {
        (task_a, "replica-a", b, task_b, "replica-b")
    } else {
        (task_b, "replica-b", a, task_a, "replica-a")
    };
    let (leader_cni, standby_cni) = if leader_name == "replica-a" {
        (cni_a, cni_b)
    } else {
        (cni_b, cni_a)
    };
    assert_eq!(lease["spec"]["holderIdentity"], leader_name, "{lease}");
    assert_eq!(annotated(&lease), address(leader_name), "{lease}");
    assert_eq!(
        *standby_cni.borrow(),
        address(leader_name),
        "the standby knows where the leader's CNI listener is"
    );
    assert_eq!(*leader_cni.borrow(), None, "the leader forwards nowhere");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3, "{lease}");
    let first_transitions = lease["spec"]["leaseTransitions"].as_u64().unwrap_or(0);
    let stale_version = lease["metadata"]["resourceVersion"].clone();

    // kill -9 of the leader: it renews no more and releases nothing.
    leader_task.abort();
    let killed = std::time::Instant::now();
    tokio::time::timeout(deadline, async {
        while !standby.borrow().leader {
            standby.changed().await.expect("election running");
        }
    })
    .await
    .expect("the standby takes over");
    let takeover = killed.elapsed();
    eprintln!("takeover after the leader's kill: {takeover:?} (lease duration 3 s)");
    let lease = server
        .lease_object("switchyard", "switchyard-controller")
        .expect("the Lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], standby_name, "{lease}");
    assert_eq!(
        annotated(&lease),
        address(standby_name),
        "the new holder's CNI address replaces the old one: {lease}"
    );
    assert_eq!(
        *standby_cni.borrow(),
        None,
        "a replica that took the Lease forwards nowhere"
    );
    let transitions = lease["spec"]["leaseTransitions"].as_u64().unwrap_or(0);
    assert_eq!(transitions, first_transitions + 1, "{lease}");
    // The switches' master generation: the Lease's creation second over its transitions,
    // so it grows with every takeover (and with a Lease deleted and made anew).
    let created = lease["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| {
            t.parse::<switchyard::source::k8s_openapi::jiff::Timestamp>()
                .ok()
        })
        .map(|t| t.as_second() as u64)
        .expect("the server set creationTimestamp");
    let generation = standby.borrow().generation.expect("a leader's generation");
    assert_eq!(generation, (created << 24) | transitions, "{lease}");
    assert!(generation > (created << 24) | first_transitions);

    // The old leader's renewal, as it would have sent it: refused with 409.
    let api: switchyard::source::kube::Api<
        switchyard::source::k8s_openapi::api::coordination::v1::Lease,
    > = switchyard::source::kube::Api::namespaced(server.client(), "switchyard");
    let mut old: switchyard::source::k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(lease.clone()).expect("a Lease");
    old.metadata.resource_version = stale_version.as_str().map(str::to_owned);
    old.spec.as_mut().expect("spec").holder_identity = Some(leader_name.into());
    match api
        .replace("switchyard-controller", &Default::default(), &old)
        .await
    {
        Err(switchyard::source::kube::Error::Api(status)) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(status.is_conflict(), "{status:?}");
        }
        other => panic!("a stale renewal must be refused: {other:?}"),
    }
    assert_eq!(
        server
            .lease_object("switchyard", "switchyard-controller")
            .expect("lease")["spec"]["holderIdentity"],
        standby_name
    );

    // SIGTERM of the new leader: it stops, then releases the Lease; a third replica takes it
    // at its first try, long before the duration would have let it.
    standby_task.abort();
    assert!(
        leader::release(server.client(), &config(standby_name))
            .await
            .expect("release"),
        "the holder releases"
    );
    let lease = server
        .lease_object("switchyard", "switchyard-controller")
        .expect("the Lease exists");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    let (task_c, mut c, _cni_c) = start("replica-c");
    let released = std::time::Instant::now();
    tokio::time::timeout(deadline, async {
        while !c.borrow().leader {
            c.changed().await.expect("election running");
        }
    })
    .await
    .expect("a third replica takes the released Lease");
    eprintln!(
        "takeover after a release: {:?} (lease duration 3 s)",
        released.elapsed()
    );
    let lease = server
        .lease_object("switchyard", "switchyard-controller")
        .expect("the Lease exists");
    assert_eq!(
        annotated(&lease),
        None,
        "a holder that advertises no CNI address leaves none of an earlier holder's: {lease}"
    );
    // Only the holder releases.
    assert!(
        !leader::release(server.client(), &config("replica-a"))
            .await
            .expect("release")
    );
    task_c.abort();
}

/// A leader whose Lease another holder took (written by someone else with the current
/// resourceVersion) steps down at its next renewal: it never goes on believing it leads.
#[tokio::test]
async fn a_leader_whose_lease_was_taken_steps_down() {
    use switchyard::leader::{self, Leadership, LeaseConfig};
    use switchyard::source::k8s_openapi::api::coordination::v1::Lease;
    let server = ApiServer::start().await;
    let (tx, mut rx) = watch::channel(Leadership::default());
    let task = tokio::spawn(leader::run(
        server.client(),
        LeaseConfig {
            name: "l".into(),
            namespace: "switchyard".into(),
            identity: "replica-a".into(),
            duration: Duration::from_secs(3),
            cni_address: None,
        },
        tx,
        watch::channel(None).0,
    ));
    let deadline = Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        while !rx.borrow().leader {
            rx.changed().await.expect("election running");
        }
    })
    .await
    .expect("leads");
    let mut lease: Lease =
        serde_json::from_value(server.lease_object("switchyard", "l").expect("lease"))
            .expect("a Lease");
    lease.spec.as_mut().expect("spec").holder_identity = Some("intruder".into());
    let api: switchyard::source::kube::Api<Lease> =
        switchyard::source::kube::Api::namespaced(server.client(), "switchyard");
    api.replace("l", &Default::default(), &lease)
        .await
        .expect("replace with the current version");
    tokio::time::timeout(deadline, async {
        while rx.borrow().leader {
            rx.changed().await.expect("election running");
        }
    })
    .await
    .expect("the leader steps down");
    assert_eq!(
        server.lease_object("switchyard", "l").expect("lease")["spec"]["holderIdentity"],
        "intruder"
    );
    task.abort();
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days, proleptic Gregorian).
fn rfc3339_seconds(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Two controller processes against this API server, one node on real OVS, two pods
/// pinging each other: the first leads (it takes the Lease), the second is the standby
/// (CNI changes refused with code 11; br-int's connection to it kept). The leader is
/// SIGKILLed right after a NetworkPolicy arrives, in the middle of realising it: the standby
/// takes the Lease after its duration, becomes br-int's master on the connection it kept,
/// and finishes the realisation; no ping is lost; a new pod is attached through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_process_takes_over_from_a_killed_leader_without_losing_a_ping() {
    use switchyard_tests::cni_node::{CniNode, NODE, POD_CIDR};
    switchyard_tests::skip_unless_root!();
    let server = ApiServer::start().await;
    server.apply(node(NODE, POD_CIDR, "192.0.2.10"));
    server.apply(namespace("x"));
    for p in ["a", "b", "c", "d"] {
        server.apply(pod("x", p, NODE));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_for(server.port)).expect("write kubeconfig");
    let path = kubeconfig.display().to_string();
    let mut node = tokio::task::spawn_blocking(move || {
        CniNode::start_replicated(
            &["--kubeconfig", &path],
            &["--lease-duration", "3"],
            &["unix:{ovs}/standby.sock".to_owned()],
        )
    })
    .await
    .expect("the leader starts");
    let kubeconfig = dir.path().join("kubeconfig").display().to_string();
    let server_handle = server.clone();
    tokio::task::spawn_blocking(move || {
        let api = server_handle;
        let add = |node: &CniNode, pod: &str, extra: &[(&str, Value)]| {
            let netns = node.pod_netns();
            let out = node.shim_run(
                "ADD",
                &format!("x/{pod}"),
                &format!("c-{pod}"),
                &netns.path().display().to_string(),
                extra,
            );
            (netns, out)
        };
        let address = |out: &switchyard_tests::cni_node::ShimOutput| -> String {
            let ip = out.json()["ips"][0]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            ip.split('/').next().unwrap_or_default().to_owned()
        };
        let pings = |from: &switchyard_tests::Netns, to: &str| {
            from.exec_output(&["ping", "-c", "1", "-W", "1", to])
                .status
                .success()
        };
        // ADD `pod` (it must succeed: `why` and `log` say more), then ping it from `from`
        // until it answers; its namespace and address.
        let attach_and_reach = |node: &CniNode,
                                pod: &str,
                                extra: &[(&str, Value)],
                                from: &switchyard_tests::Netns,
                                why: &str,
                                log: &dyn Fn() -> String| {
            let (netns, out) = add(node, pod, extra);
            assert!(
                out.success,
                "ADD {pod} {why}: {} {}\n{}",
                out.stdout,
                out.stderr,
                log()
            );
            let ip = address(&out);
            assert!(
                switchyard_tests::wait_for(DEADLINE, || pings(from, &ip)).is_some(),
                "{pod}, attached {why}, never answered a ping"
            );
            (netns, ip)
        };
        let (netns_a, out) = add(&node, "a", &[]);
        assert!(out.success, "ADD a: {} {}", out.stdout, out.stderr);
        let (_netns_b, ip_b) =
            attach_and_reach(&node, "b", &[], &netns_a, "by the leader", &String::new);

        // The standby: the same flags but its own sockets, listening where br-int's
        // Controller table (written by the leader) already points.
        let ovs = node.ovs.dir().display().to_string();
        let standby_dir = tempfile::tempdir().expect("temp dir");
        let sd = standby_dir.path().display().to_string();
        let log = std::fs::File::create(standby_dir.path().join("controller.log")).expect("log");
        let mut standby =
            std::process::Command::new(switchyard_tests::workspace_binary("switchyard"))
                .args([
                    "controller",
                    "--kubeconfig",
                    &kubeconfig,
                    "--lease-duration",
                    "3",
                ])
                .args(["--ovsdb-template", &format!("unix:{ovs}/db.sock")])
                .args(["--openflow-listen", &format!("punix:{ovs}/standby.sock")])
                .args([
                    "--openflow-target",
                    &format!("unix:{ovs}/controller.sock,unix:{ovs}/standby.sock"),
                ])
                .args([
                    "--cni-listen",
                    &format!("unix:{sd}/cni.sock"),
                    "--cni-timeout",
                    "10",
                ])
                .args(["--admin-listen", &format!("unix:{sd}/admin.sock")])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start the standby");
        let standby_log = || {
            std::fs::read_to_string(standby_dir.path().join("controller.log")).unwrap_or_default()
        };
        assert!(
            switchyard_tests::wait_for(DEADLINE, || standby_log().contains("kept for a takeover"))
                .is_some(),
            "the standby never got br-int's connection:\n{}",
            standby_log()
        );
        assert!(
            standby_log().contains("leader election: standby"),
            "{}",
            standby_log()
        );
        // A shim that reached the standby is handed on to the leader (its CNI address is
        // in the Lease): the pod is attached by the leader and reachable.
        let via_standby = [("controller", json!(format!("unix:{sd}/cni.sock")))];
        let (_netns_c, ip_c) = attach_and_reach(
            &node,
            "c",
            &via_standby,
            &netns_a,
            "through the standby, handed on to the leader",
            &standby_log,
        );

        // 300 pings, one every 50 ms (15 s), across the takeover.
        let mut ping = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns_a.name(),
                "ping",
                "-i",
                "0.05",
                "-c",
                "300",
            ])
            .args(["-W", "1", &ip_b])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ping");
        let conj = |node: &CniNode| {
            node.ovs
                .ofctl("dump-flows", "br-int", &["--no-stats"])
                .contains("conjunction(")
        };
        assert!(!conj(&node), "no policy yet");
        // A policy (every pod of x may reach every pod of x: traffic unchanged, flows not),
        // and the leader dies while it realises it.
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": "within-x", "namespace": "x" },
            "spec": { "podSelector": {}, "policyTypes": ["Ingress"],
                      "ingress": [{ "from": [{ "podSelector": {} }] }] },
        }));
        std::thread::sleep(Duration::from_millis(20));
        node.stop_controller();
        let killed = std::time::Instant::now();

        assert!(
            switchyard_tests::wait_for(DEADLINE, || {
                let log = standby_log();
                log.contains("took the Lease")
                    && log.contains("taking over the br-int connection kept while standby")
                    && log.contains("this controller is its OpenFlow master")
            })
            .is_some(),
            "the standby did not take over:\n{}",
            standby_log()
        );
        eprintln!(
            "takeover: {:?} after the kill (lease duration 3 s)",
            killed.elapsed()
        );
        assert!(
            switchyard_tests::wait_for(DEADLINE, || conj(&node)).is_some(),
            "the new leader never finished realising the policy:\n{}",
            standby_log()
        );
        assert!(
            ping.try_wait().expect("ping").is_none(),
            "the takeover outlasted the pings: they prove nothing"
        );
        let out = ping.wait_with_output().expect("ping ends");
        let stats = String::from_utf8_lossy(&out.stdout);
        let line = stats
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("{stats}"))
            .to_owned();
        eprintln!("pings across the takeover: {line}");
        assert!(
            line.starts_with("300 packets transmitted, 300 received"),
            "{stats}"
        );

        // The new leader attaches pods itself; the policy lets a reach d and c.
        let _d = attach_and_reach(
            &node,
            "d",
            &via_standby,
            &netns_a,
            "through the new leader",
            &standby_log,
        );
        assert!(
            pings(&netns_a, &ip_c),
            "c, attached by the old leader, still reachable"
        );
        let _ = standby.kill();
        let _ = standby.wait();
    })
    .await
    .expect("takeover");
    drop(server);
}

/// The node DaemonSet's ServiceAccount (deploy/kubernetes/rbac.yaml), as kube-apiserver names
/// its requests.
const NODE_SA: &str = "system:serviceaccount:switchyard:switchyard-node";

fn kubeconfig_with_token(port: u16, token: &str) -> String {
    kubeconfig_for(port).replace("user: {}", &format!("user: {{token: {token}}}"))
}

fn signer_config() -> switchyard::signer::SignerConfig {
    switchyard::signer::SignerConfig {
        namespace: "switchyard".into(),
        ca_name: "switchyard-ca".into(),
        policy: switchyard::signer::SignerPolicy {
            requester: NODE_SA.into(),
        },
        validity: Duration::from_secs(86400),
        unknown_node_grace: Duration::ZERO,
    }
}

/// A PEM PKCS#10 request with common name `cn` and DNS names `sans`, made by a new P-256
/// key; with `tamper`, one bit of its signature flipped.
fn certificate_request(cn: &str, sans: &[&str], tamper: bool) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let mut der = params
        .serialize_request(&key)
        .expect("request")
        .der()
        .to_vec();
    if tamper {
        let last = der.len() - 1;
        der[last] ^= 1;
    }
    let b64 = base64(&der);
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
}

/// POSTs a CertificateSigningRequest of signer switchyard.io/node through `client` (whose
/// token decides spec.username and spec.extra), then waits for the signer's verdict:
/// the condition's (type, reason, message).
async fn verdict(
    server: &ApiServer,
    client: Client,
    name: &str,
    request: String,
    usages: &[&str],
) -> (String, String, String) {
    use switchyard::source::k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let api: switchyard::source::kube::Api<CertificateSigningRequest> =
        switchyard::source::kube::Api::all(client);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": base64(request.as_bytes()),
            "signerName": "switchyard.io/node",
            "usages": usages,
            // What a client claims here is overwritten by the API server.
            "username": NODE_SA,
            "extra": { NODE_NAME_EXTRA: ["node-1"] },
        },
    }))
    .expect("a CSR");
    api.create(&Default::default(), &csr)
        .await
        .expect("create the CSR");
    let mut changes = server.changes.subscribe();
    let waiting = async {
        loop {
            let object = server
                .object("CertificateSigningRequest", "", name)
                .expect("the CSR");
            if let Some(c) = object["status"]["conditions"]
                .as_array()
                .and_then(|c| c.first())
            {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                return (text("type"), text("reason"), text("message"));
            }
            changes.changed().await.expect("server alive");
        }
    };
    tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap_or_else(|_| panic!("no verdict on {name}"))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The signer against the server's CertificateSigningRequests: the CA is made once (a
/// second start reads it), node-setup's request for its own node is approved through
/// /approval and signed through /status, and every request that fails a check is Denied
/// with a reason naming the check and a message naming both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_are_signed_only_for_the_node_that_asks() {
    use switchyard::node_certificate::{self, NodeCertificateConfig, Outcome};
    use switchyard::signer;
    let server = ApiServer::start().await;
    populate(&server);
    server.add_token("node-1", NODE_SA, Some("node-1"));
    server.add_token("node-9", NODE_SA, Some("node-9"));
    server.add_token(
        "intruder",
        "system:serviceaccount:default:intruder",
        Some("node-1"),
    );
    server.add_token("unbound", NODE_SA, None);
    let config = signer_config();
    let ca = signer::ensure_ca(server.client(), &config)
        .await
        .expect("the CA");
    let again = signer::ensure_ca(server.client(), &config)
        .await
        .expect("the CA again");
    assert_eq!(again.certificate_pem, ca.certificate_pem, "one CA");
    let published = server
        .object("ConfigMap", "switchyard", "switchyard-ca")
        .expect("the CA ConfigMap");
    assert_eq!(published["data"]["ca.crt"], ca.certificate_pem.as_str());
    let secret = server
        .object("Secret", "switchyard", "switchyard-ca")
        .expect("the CA Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert!(
        published.to_string().find("PRIVATE KEY").is_none(),
        "the key is not published"
    );
    let ca_pem = ca.certificate_pem.clone();

    let source = start_source(&server).await;
    let (_leader, leadership) = watch::channel(switchyard::leader::Leadership::sole());
    let signing = tokio::spawn(signer::run(
        server.client(),
        Arc::new(ca),
        config,
        leadership,
        source.subscribe(),
    ));

    // node-1 asks for itself: signed; the key stays in the directory, 0600.
    let dir = tempfile::tempdir().expect("dir");
    let node_config = |node: &str| NodeCertificateConfig {
        node: node.into(),
        dir: dir.path().join(node),
        ca_namespace: "switchyard".into(),
        ca_name: "switchyard-ca".into(),
        timeout: Duration::from_secs(20),
    };
    let outcome = node_certificate::ensure(server.client_as("node-1"), &node_config("node-1"))
        .await
        .expect("node-1's certificate");
    let Outcome::Issued(csr_name) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        csr_name.starts_with("switchyard-node-node-1-"),
        "{csr_name}"
    );
    let files = node_certificate::files(&dir.path().join("node-1"));
    let cert = std::fs::read(&files.certificate).expect("tls.crt");
    switchyard_tls::verify_issued(&cert, ca_pem.as_bytes(), "node-1")
        .expect("chains, names node-1");
    assert!(switchyard_tls::verify_issued(&cert, ca_pem.as_bytes(), "node-2").is_err());
    assert_eq!(std::fs::read_to_string(&files.ca).expect("ca.crt"), ca_pem);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files.private_key)
        .expect("tls.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let csr = server
        .object("CertificateSigningRequest", "", &csr_name)
        .expect("the CSR");
    assert_eq!(csr["spec"]["username"], NODE_SA, "{csr}");
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
    let puts: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path().contains(&csr_name))
        .map(|r| r.path().rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(puts, ["approval", "status"], "approved, then signed");
    // Again: nothing to do.
    let outcome = node_certificate::ensure(server.client_as("node-1"), &node_config("node-1"))
        .await
        .expect("node-1 again");
    assert_eq!(outcome, Outcome::Unchanged);

    // node-1 asks for node-2's name.
    let usages = [
        "digital signature",
        "key encipherment",
        "client auth",
        "server auth",
    ];
    let (condition, reason, message) = verdict(
        &server,
        server.client_as("node-1"),
        "as-node-2",
        certificate_request("node-2", &["node-2"], false),
        &usages,
    )
    .await;
    assert_eq!(
        (condition.as_str(), reason.as_str()),
        ("Denied", "SwitchyardNodeNameMismatch"),
        "{message}"
    );
    assert!(
        message.contains("\"node-1\"") && message.contains("\"node-2\""),
        "{message}"
    );
    // Someone else's ServiceAccount.
    let (condition, reason, message) = verdict(
        &server,
        server.client_as("intruder"),
        "intruder",
        certificate_request("node-1", &["node-1"], false),
        &usages,
    )
    .await;
    assert_eq!(
        (condition.as_str(), reason.as_str()),
        ("Denied", "SwitchyardWrongRequester")
    );
    assert!(
        message.contains("intruder") && message.contains(NODE_SA),
        "{message}"
    );
    // A token bound to no node (what the client wrote in spec.extra does not count).
    let (_, reason, message) = verdict(
        &server,
        server.client_as("unbound"),
        "unbound",
        certificate_request("node-1", &["node-1"], false),
        &usages,
    )
    .await;
    assert_eq!(reason, "SwitchyardNotBoundToOneNode", "{message}");
    // A signature that does not verify.
    let (_, reason, message) = verdict(
        &server,
        server.client_as("node-1"),
        "tampered",
        certificate_request("node-1", &["node-1"], true),
        &usages,
    )
    .await;
    assert_eq!(reason, "SwitchyardBadSignature", "{message}");
    // More usages than a node certificate has.
    let (_, reason, message) = verdict(
        &server,
        server.client_as("node-1"),
        "code-signing",
        certificate_request("node-1", &["node-1"], false),
        &[
            "digital signature",
            "key encipherment",
            "client auth",
            "server auth",
            "code signing",
        ],
    )
    .await;
    assert_eq!(reason, "SwitchyardWrongUsages", "{message}");
    assert!(message.contains("code signing"), "{message}");
    // A node the cluster does not have: node-setup's error names the request and why.
    let error = node_certificate::ensure(server.client_as("node-9"), &node_config("node-9"))
        .await
        .expect_err("node-9 does not exist");
    let text = error.to_string();
    assert!(
        text.contains("switchyard-node-node-9-")
            && text.contains("Denied")
            && text.contains("SwitchyardUnknownNode")
            && text.contains("node-9"),
        "{text}"
    );
    assert!(
        !dir.path().join("node-9").join("tls.key").exists(),
        "nothing written"
    );
    signing.abort();
}

/// The flags both replicas of the CNI-over-TLS leader tests run with: node certificates
/// signed by the leader, a short Lease, the controller's certificate name.
const ELECTED_SIGNER_FLAGS: &[&str] = &[
    "--node-certificates=true",
    "--leader-elect=true",
    "--lease-duration=3",
    "--lease-namespace=switchyard",
    "--certificate-name=switchyard-controller",
];

/// End to end on real OVS: the controller (`--node-certificates=true`) makes the CA and its
/// own certificate, `switchyard node-setup --request-certificate` gets the node's through a
/// CertificateSigningRequest, and the controller's ssl: CNI listener then accepts that
/// certificate for the node's own pods and refuses it for a pod on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_setup_requests_a_certificate_that_the_cni_listener_accepts_for_its_pods() {
    use switchyard_tests::cni_node::{CniNode, NODE, POD_CIDR};
    switchyard_tests::skip_unless_root!();
    let dir = tempfile::tempdir().expect("temp dir");
    let tls_dir = dir.path().join("node-tls");
    let controller_kubeconfig = dir.path().join("controller.kubeconfig");
    let node_kubeconfig = dir.path().join("node.kubeconfig");
    let port = 16000 + (std::process::id() % 1000) as u16;
    let listen = format!("ssl:127.0.0.1:{port}");
    let listen_first = listen.clone();
    let s = |p: &std::path::Path| p.display().to_string();
    let tls = json!({
        "ca": tls_dir.join("ca.crt"), "cert": tls_dir.join("tls.crt"),
        "key": tls_dir.join("tls.key"), "serverName": "switchyard-controller",
    });
    let controller_dir = dir.path().join("controller-tls");
    let (kc, cd) = (s(&controller_kubeconfig), s(&controller_dir));
    let mut cni_node = tokio::task::spawn_blocking(move || {
        CniNode::unstarted(
            &["--kubeconfig", &kc],
            &listen,
            &[ELECTED_SIGNER_FLAGS, &["--certificate-dir", &cd]].concat(),
            &[("tls", tls)],
        )
    })
    .await
    .expect("OVS starts");
    let server = ApiServer::start_in(cni_node.ovs.netns.name()).await;
    server.apply(node(NODE, POD_CIDR, "192.0.2.10"));
    server.apply(node("node-2", "10.244.99.0/24", "192.0.2.11"));
    // Only this node's agent reaches its OVSDB (node-2's finds no socket).
    let ovs_dir = cni_node.ovs.dir().to_owned();
    std::os::unix::fs::symlink(
        ovs_dir.join("db.sock"),
        ovs_dir.join(format!("{NODE}-db.sock")),
    )
    .expect("symlink");
    cni_node.set_ovsdb_template(&format!("unix:{}/{{node}}-db.sock", ovs_dir.display()));
    server.apply(namespace("x"));
    server.apply(pod("x", "a", NODE));
    server.apply(pod("x", "far", "node-2"));
    server.add_token("controller", USER, None);
    server.add_token("node", NODE_SA, Some(NODE));
    std::fs::write(
        &controller_kubeconfig,
        kubeconfig_with_token(server.port, "controller"),
    )
    .expect("kubeconfig");
    std::fs::write(&node_kubeconfig, kubeconfig_with_token(server.port, "node"))
        .expect("kubeconfig");

    // node-setup first, as the DaemonSet's init container: it waits for the CA and the
    // signature while the controller starts.
    let netns = cni_node.ovs.netns.name().to_owned();
    let (td, nk) = (s(&tls_dir), s(&node_kubeconfig));
    let setup = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(switchyard_tests::workspace_binary("switchyard"))
            .args([
                "node-setup",
                "--node",
                NODE,
                "--request-certificate",
                "--certificates-dir",
                &td,
                "--kubeconfig",
                &nk,
                "--ca-namespace",
                "switchyard",
                "--certificate-timeout",
                "60",
            ])
            .output()
            .expect("run node-setup")
    });
    let node = tokio::task::spawn_blocking(move || {
        // Returns once a STATUS through the ssl: listener with the node's certificate works.
        cni_node.start_controller();
        cni_node
    })
    .await
    .expect("the controller serves the node over TLS");
    let out = setup.join().expect("node-setup");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "node-setup: {stdout}\n{stderr}");
    assert!(stdout.contains("wrote a new certificate"), "{stdout}");
    let ca = server
        .object("ConfigMap", "switchyard", "switchyard-ca")
        .expect("the published CA");
    let ca = ca["data"]["ca.crt"].as_str().expect("ca.crt").to_owned();
    let cert = std::fs::read(tls_dir.join("tls.crt")).expect("tls.crt");
    switchyard_tls::verify_issued(&cert, ca.as_bytes(), NODE)
        .expect("chains to the CA, names the node");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls_dir.join("tls.key"))
        .expect("tls.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second replica, the standby: its own certificate from the same CA, its own ssl:
    // listener. What a shim sends it goes on to the leader unopened, so the leader checks
    // the node's certificate itself.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).expect("second dir");
    let second_listen = format!("ssl:127.0.0.1:{}", port + 1);
    let ovs = ovs_dir.display().to_string();
    let log = std::fs::File::create(second_dir.join("controller.log")).expect("log");
    let mut second = std::process::Command::new("ip")
        .args(["netns", "exec", node.ovs.netns.name()])
        .arg(switchyard_tests::workspace_binary("switchyard"))
        .args(["controller", "--kubeconfig", &s(&controller_kubeconfig)])
        .args(["--ovsdb-template", &format!("unix:{ovs}/{{node}}-db.sock")])
        .args(["--openflow-listen", &format!("punix:{ovs}/standby.sock")])
        .args(["--openflow-target", &format!("unix:{ovs}/controller.sock")])
        .args(["--cni-listen", &second_listen, "--cni-timeout", "10"])
        .args([
            "--admin-listen",
            &format!("unix:{}/admin.sock", s(&second_dir)),
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(ELECTED_SIGNER_FLAGS)
        .args(["--certificate-dir", &s(&second_dir.join("tls"))])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the second replica");
    let second_log =
        move || std::fs::read_to_string(second_dir.join("controller.log")).unwrap_or_default();

    tokio::task::spawn_blocking(move || {
        assert!(
            switchyard_tests::wait_for(DEADLINE, || node
                .controller_log()
                .contains("took the Lease"))
            .is_some(),
            "the first replica never led:\n{}",
            node.controller_log()
        );
        assert!(
            switchyard_tests::wait_for(DEADLINE, || second_log()
                .contains(&format!("leader_cni=Some(\"{listen_first}\")")))
            .is_some(),
            "the second replica never learnt the leader's CNI address:\n{}",
            second_log()
        );
        let via_second = [("controller", json!(second_listen))];
        let pod = node.pod_netns();
        let path = pod.path().display().to_string();
        let out = node.shim_run("ADD", "x/a", "c-a", &path, &via_second);
        assert!(
            out.success,
            "ADD of the node's own pod, through the standby: {} {}\n{}\n{}",
            out.stdout,
            out.stderr,
            node.controller_log(),
            second_log()
        );
        let other = node.pod_netns();
        let path = other.path().display().to_string();
        let out = node.shim_run("ADD", "x/far", "c-far", &path, &via_second);
        assert!(
            !out.success,
            "ADD of node-2's pod with {NODE}'s certificate: {}",
            out.stdout
        );
        let reply = format!("{} {}", out.stdout, out.stderr);
        assert!(
            reply.contains("117") && reply.contains("node-2") && reply.contains(NODE),
            "{reply}"
        );
        let log = node.controller_log();
        assert!(log.contains("approved and signed"), "{log}");
        let log = second_log();
        assert!(
            !log.contains("approved and signed"),
            "only the leader signs: {log}"
        );
        let _ = second.kill();
        let _ = second.wait();
    })
    .await
    .expect("CNI over TLS with the provisioned certificate");
}
