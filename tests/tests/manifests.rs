//! The install manifests (deploy/kustomization.yaml and what it lists) against the code:
//! every document parses into its k8s-openapi type without losing a field, the RBAC grants
//! exactly the API calls the code makes (the lists next to it in the kube source), the
//! containers are locked down, the probes reach the port the controller's flag binds, and
//! every command line in them parses with the binary's own clap definition.
//!
//! No root, no network: files and the library only — except
//! `the_node_daemonsets_containers_run_as_a_runtime_runs_them`, which runs the node
//! DaemonSet's OVS and install containers as root in a network namespace of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;
use switchyard::cli::{Cli, Command};
use switchyard::source::k8s_openapi;
use switchyard::source::{ApiCall, CONTROLLER_API_CALLS, NODE_SETUP_API_CALLS};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};

/// What the manifests' downward-API fields stand for when a command line is expanded.
const FIELD_SAMPLES: &[(&str, &str)] = &[
    ("status.podIP", "192.0.2.10"),
    ("status.hostIP", "192.0.2.10"),
    ("spec.nodeName", "node-1"),
    ("metadata.name", "switchyard-controller-7d9f-abcde"),
    ("metadata.namespace", "switchyard"),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of every file the kustomization lists, typed.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    daemon_sets: Vec<DaemonSet>,
}

/// Parses `value` as `T`, then checks that serializing it gives `value` back: a field the
/// type does not have (a typo, a wrong indentation) would otherwise be dropped silently.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, value: &Value) -> T {
    let name = format!(
        "{file}: {} {}",
        value["kind"].as_str().unwrap_or("?"),
        value["metadata"]["name"].as_str().unwrap_or("?")
    );
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{name} does not parse into its Kubernetes type: {e}"));
    let back = serde_json::to_value(&object).expect("serialize");
    if let Some(path) = first_difference(value, &back, String::new()) {
        panic!("{name}: {path} is lost or changed parsing it (unknown field? wrong type?)");
    }
    object
}

/// Where `written` and `parsed` first differ, as a path (`.spec.template...`).
fn first_difference(written: &Value, parsed: &Value, path: String) -> Option<String> {
    match (written, parsed) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .find_map(|(k, v)| match b.get(k) {
                Some(w) => first_difference(v, w, format!("{path}.{k}")),
                None => Some(format!("{path}.{k}")),
            })
            .or_else(|| {
                b.keys()
                    .find(|k| !a.contains_key(*k))
                    .map(|k| format!("{path}.{k} (added)"))
            }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path} ({a} became {b})")),
    }
}

fn kustomization() -> Value {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml"))
        .expect("deploy/kustomization.yaml");
    serde_saphyr::from_str(&text).expect("kustomization.yaml is YAML")
}

fn resources() -> Vec<String> {
    kustomization()["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a resource path").to_owned())
        .collect()
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    for file in resources() {
        let text = std::fs::read_to_string(deploy_dir().join(&file))
            .unwrap_or_else(|e| panic!("deploy/{file}: {e}"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("deploy/{file} is not YAML: {e}"));
        for doc in docs.iter().filter(|d| !d.is_null()) {
            match doc["kind"].as_str().unwrap_or_default() {
                "Namespace" => m.namespaces.push(typed(&file, doc)),
                "ServiceAccount" => m.service_accounts.push(typed(&file, doc)),
                "ClusterRole" => m.cluster_roles.push(typed(&file, doc)),
                "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(&file, doc)),
                "Role" => m.roles.push(typed(&file, doc)),
                "RoleBinding" => m.role_bindings.push(typed(&file, doc)),
                "ConfigMap" => m.config_maps.push(typed(&file, doc)),
                "Deployment" => m.deployments.push(typed(&file, doc)),
                "DaemonSet" => m.daemon_sets.push(typed(&file, doc)),
                other => panic!("deploy/{file}: a {other:?} the test does not know"),
            }
        }
    }
    m
}

fn pod_spec_of_deployment(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec")
}

fn pod_spec_of_daemon_set(d: &DaemonSet) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec")
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

impl Manifests {
    fn controller(&self) -> &Deployment {
        assert_eq!(self.deployments.len(), 1, "one Deployment: the controller");
        &self.deployments[0]
    }

    fn node(&self) -> &DaemonSet {
        assert_eq!(self.daemon_sets.len(), 1, "one DaemonSet: the node");
        &self.daemon_sets[0]
    }

    fn config(&self, name: &str) -> &BTreeMap<String, String> {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .and_then(|c| c.data.as_ref())
            .unwrap_or_else(|| panic!("no ConfigMap {name} with data"))
    }

    /// Every (group, resource, verb, resource name) the service account `sa` is granted
    /// (`None`: any name).
    fn granted(&self, namespace: &str, sa: &str) -> BTreeSet<Grant> {
        let is_subject = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_deref() == Some(namespace)
            })
        };
        let mut rules: Vec<&PolicyRule> = Vec::new();
        for b in &self.cluster_role_bindings {
            if !is_subject(&b.subjects) {
                continue;
            }
            assert_eq!(b.role_ref.kind, "ClusterRole");
            let role = self
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
                .unwrap_or_else(|| panic!("binding to a missing ClusterRole {}", b.role_ref.name));
            rules.extend(role.rules.iter().flatten());
        }
        // Namespaced grants (the leader-election Lease) must stay in the controller's own
        // namespace.
        for b in &self.role_bindings {
            if !is_subject(&b.subjects) {
                continue;
            }
            assert_eq!(
                b.metadata.namespace.as_deref(),
                Some(namespace),
                "a RoleBinding outside the service account's own namespace"
            );
            assert_eq!(b.role_ref.kind, "Role", "a RoleBinding to a ClusterRole");
            let role = self
                .roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                        && r.metadata.namespace.as_deref() == Some(namespace)
                })
                .unwrap_or_else(|| panic!("binding to a missing Role {}", b.role_ref.name));
            rules.extend(role.rules.iter().flatten());
        }
        let mut granted = BTreeSet::new();
        for rule in rules {
            assert!(
                rule.non_resource_urls.is_none(),
                "{rule:?}: only resource rules are expected"
            );
            let names: Vec<Option<String>> = match &rule.resource_names {
                None => vec![None],
                Some(names) => {
                    assert!(!names.is_empty(), "{rule:?}: empty resourceNames grant all");
                    names.iter().cloned().map(Some).collect()
                }
            };
            for list in [&rule.api_groups, &rule.resources] {
                assert!(
                    !list.iter().flatten().any(|s| s.contains('*')),
                    "{rule:?}: no wildcards"
                );
            }
            assert!(
                !rule.verbs.iter().any(|v| v == "*"),
                "{rule:?}: no wildcards"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        for name in &names {
                            granted.insert((
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                                name.clone(),
                            ));
                        }
                    }
                }
            }
        }
        granted
    }
}

/// One RBAC grant: (API group, resource, verb, resource name or any).
type Grant = (String, String, String, Option<String>);

fn calls(list: &[ApiCall]) -> BTreeSet<Grant> {
    list.iter()
        .map(|c| {
            (
                c.group.to_owned(),
                c.resource.to_owned(),
                c.verb.to_owned(),
                c.name.map(str::to_owned),
            )
        })
        .collect()
}

/// The container's command line (command + args) with every `$(VAR)` replaced as the
/// kubelet does: from its env (literal, ConfigMap key, downward-API field).
fn expanded_command_line(m: &Manifests, container: &Container) -> Vec<String> {
    expanded_with(container, &container_env(m, container, FIELD_SAMPLES))
}

/// The container's environment as the kubelet sets it: literals, ConfigMap keys and the
/// downward-API `fields`.
fn container_env(
    m: &Manifests,
    container: &Container,
    fields: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            v.clone()
        } else {
            let from = var.value_from.as_ref().expect("env value or valueFrom");
            if let Some(key) = &from.config_map_key_ref {
                m.config(&key.name)
                    .get(&key.key)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: env {} names ConfigMap key {} that does not exist",
                            container.name, var.name, key.key
                        )
                    })
                    .clone()
            } else if let Some(field) = &from.field_ref {
                fields
                    .iter()
                    .find(|(path, _)| *path == field.field_path)
                    .unwrap_or_else(|| panic!("no sample for field {}", field.field_path))
                    .1
                    .to_owned()
            } else {
                panic!("{}: env {}: unexpected valueFrom", container.name, var.name)
            }
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// The command line with `$(VAR)` replaced from `env`.
fn expanded_with(container: &Container, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut line: Vec<String> = container.command.iter().flatten().cloned().collect();
    line.extend(container.args.iter().flatten().cloned());
    line.iter()
        .map(|arg| {
            let mut out = arg.clone();
            for (name, value) in env {
                out = out.replace(&format!("$({name})"), value);
            }
            // What is left of `$(...)` is the shell's own command substitution; a variable
            // name there is one the container does not define (the kubelet would pass it on
            // verbatim).
            for (_, rest) in out.match_indices("$(").map(|(i, _)| out.split_at(i + 2)) {
                let name: String = rest.chars().take_while(|c| *c != ')').collect();
                let is_variable = !name.is_empty()
                    && name.len() < rest.len()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                assert!(
                    !is_variable,
                    "{}: {arg:?} names $({name}), which the container does not define",
                    container.name
                );
            }
            out
        })
        .collect()
}

/// The controller container's flags, parsed by the binary's clap definition.
fn controller_args(m: &Manifests) -> switchyard::cli::ControllerArgs {
    let spec = pod_spec_of_deployment(m.controller());
    assert_eq!(
        spec.containers.len(),
        1,
        "the controller pod runs one container"
    );
    let container = &spec.containers[0];
    assert!(
        container.command.is_none(),
        "the image's entrypoint is switchyard"
    );
    let mut line = vec!["switchyard".to_owned()];
    line.extend(expanded_command_line(m, container));
    match Cli::try_parse_from(&line) {
        Ok(Cli {
            command: Command::Controller(args),
        }) => *args,
        Ok(_) => panic!("the controller container does not run `switchyard controller`"),
        Err(e) => panic!("the controller container's flags: {e}\n{line:?}"),
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_no_cluster_file() {
    let listed: BTreeSet<String> = resources().into_iter().collect();
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(deploy_dir().join("kubernetes")).expect("deploy/kubernetes") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".yaml") {
            present.insert(format!("kubernetes/{name}"));
        }
    }
    assert_eq!(listed, present, "deploy/kustomization.yaml resources");
    // The demo's cluster files sit beside it and are not applied.
    for demo in ["cluster.yaml", "netpol-cluster.yaml"] {
        assert!(deploy_dir().join(demo).is_file(), "deploy/{demo} exists");
        assert!(
            !listed.contains(demo),
            "{demo} is a cluster file, not a manifest"
        );
    }
    // Every image the manifests name is one the kustomization tags.
    let tagged: BTreeSet<String> = kustomization()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["name"].as_str().expect("image name").to_owned())
        .collect();
    let m = load();
    let specs = [
        pod_spec_of_deployment(m.controller()),
        pod_spec_of_daemon_set(m.node()),
    ];
    for spec in specs {
        for c in all_containers(spec) {
            let image = c.image.as_deref().expect("an image");
            assert!(tagged.contains(image), "{}: image {image} untagged", c.name);
        }
    }
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type_without_losing_a_field() {
    let m = load();
    assert_eq!(m.namespaces.len(), 1);
    let ns = m.namespaces[0]
        .metadata
        .name
        .clone()
        .expect("namespace name");
    // Everything namespaced lives in that namespace.
    let namespaced = m
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(m.config_maps.iter().map(|o| &o.metadata))
        .chain(m.deployments.iter().map(|o| &o.metadata))
        .chain(m.daemon_sets.iter().map(|o| &o.metadata))
        .chain(m.roles.iter().map(|o| &o.metadata))
        .chain(m.role_bindings.iter().map(|o| &o.metadata));
    for meta in namespaced {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns.as_str()),
            "{:?}",
            meta.name
        );
    }
}

#[test]
fn rbac_grants_exactly_the_api_calls_the_code_makes() {
    let m = load();
    let ns = m.namespaces[0].metadata.name.clone().expect("namespace");
    let controller_sa = pod_spec_of_deployment(m.controller())
        .service_account_name
        .clone()
        .expect("the controller's service account");
    let node_sa = pod_spec_of_daemon_set(m.node())
        .service_account_name
        .clone()
        .expect("the node's service account");
    assert_ne!(controller_sa, node_sa, "one service account per component");
    for sa in [&controller_sa, &node_sa] {
        assert!(
            m.service_accounts
                .iter()
                .any(|s| s.metadata.name.as_deref() == Some(sa.as_str())),
            "service account {sa} is in the manifests"
        );
    }
    assert_eq!(
        m.granted(&ns, &controller_sa),
        calls(CONTROLLER_API_CALLS),
        "the controller's RBAC (deploy/kubernetes/rbac.yaml) against CONTROLLER_API_CALLS"
    );
    assert_eq!(
        m.granted(&ns, &node_sa),
        calls(NODE_SETUP_API_CALLS),
        "the node's RBAC against NODE_SETUP_API_CALLS"
    );
}

#[test]
fn containers_run_without_root_capabilities_or_a_writable_root() {
    let m = load();
    let controller = m.controller();
    // Two replicas, one leader (the Lease): the standby programs nothing.
    assert_eq!(controller.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let spec = pod_spec_of_deployment(controller);
    assert_eq!(
        spec.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true),
        "the controller pod runs as non-root"
    );
    for c in all_containers(spec) {
        let sc = c.security_context.as_ref().expect("a securityContext");
        assert_eq!(sc.run_as_non_root, Some(true), "{}: runAsNonRoot", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{}",
            c.name
        );
        assert!(caps.add.is_none(), "{}: no capability added", c.name);
    }
    // The node's containers: a read-only root everywhere; every capability dropped and only
    // the datapath's added back; privileged only where the host's /proc/sys is written.
    let allowed_caps = ["NET_ADMIN", "NET_RAW", "SYS_NICE", "SYS_MODULE"];
    let mut privileged = BTreeSet::new();
    for c in all_containers(pod_spec_of_daemon_set(m.node())) {
        let sc = c.security_context.as_ref().expect("a securityContext");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        if sc.privileged == Some(true) {
            privileged.insert(c.name.clone());
            continue;
        }
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{}",
            c.name
        );
        for cap in caps.add.iter().flatten() {
            assert!(
                allowed_caps.contains(&cap.as_str()),
                "{}: adds {cap}",
                c.name
            );
        }
    }
    assert_eq!(
        privileged,
        BTreeSet::from(["node-setup".to_owned()]),
        "privileged containers"
    );
    // Every container has requests and a memory limit.
    let specs = [spec, pod_spec_of_daemon_set(m.node())];
    for c in specs.into_iter().flat_map(all_containers) {
        let r = c.resources.as_ref().expect("resources");
        assert!(r.requests.is_some(), "{}: requests", c.name);
        assert!(
            r.limits.as_ref().is_some_and(|l| l.contains_key("memory")),
            "{}: a memory limit",
            c.name
        );
    }
}

#[test]
fn probes_ask_healthz_and_readyz_on_the_metrics_flags_address() {
    let m = load();
    let args = controller_args(&m);
    let metrics = switchyard::admin::metrics::MetricsConfig::new(
        &args.metrics_listen,
        args.metrics_allow_remote,
    )
    .expect("--metrics-listen is valid");
    let spec = pod_spec_of_deployment(m.controller());
    // In the host network, the kubelet reaches the host's loopback.
    assert_eq!(spec.host_network, Some(true));
    let c = &spec.containers[0];
    for (probe, path) in [
        (c.liveness_probe.as_ref(), "/healthz"),
        (c.readiness_probe.as_ref(), "/readyz"),
    ] {
        let http = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an httpGet probe for {path}"));
        assert_eq!(http.path.as_deref(), Some(path));
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        assert_eq!(
            http.port,
            IntOrString::Int(i32::from(metrics.listen.port())),
            "{path}: the port --metrics-listen binds"
        );
        assert_eq!(
            http.host.as_deref(),
            Some(metrics.listen.ip().to_string().as_str()),
            "{path}: the address --metrics-listen binds"
        );
    }
}

#[test]
fn every_command_line_parses_with_the_binarys_flags() {
    let m = load();
    // The controller: clap accepts it, and the listeners and admin flags validate as the
    // controller validates them at start.
    let args = controller_args(&m);
    switchyard::admin::AdminConfig::new(&args.admin_listen, None).expect("--admin-listen");
    assert!(
        args.cluster_file.is_none(),
        "the manifests use the API server"
    );
    // The node's switchyard containers: the certificate first (an init container), then
    // the host network setup, which keeps the certificate renewed.
    let node = pod_spec_of_daemon_set(m.node());
    let setup: Vec<&Container> = all_containers(node)
        .filter(|c| {
            c.command
                .iter()
                .flatten()
                .next()
                .is_some_and(|p| p.ends_with("/switchyard"))
        })
        .collect();
    let names: Vec<&str> = setup.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["certificate", "node-setup"],
        "the node's switchyard containers"
    );
    for container in setup {
        let line = expanded_command_line(&m, container);
        let args = match Cli::try_parse_from(&line) {
            Ok(Cli {
                command: Command::NodeSetup(args),
            }) => args,
            Ok(_) => panic!("{}: does not run node-setup", container.name),
            Err(e) => panic!("{}: node-setup's flags: {e}\n{line:?}", container.name),
        };
        assert_eq!(
            args.node.as_deref(),
            Some("node-1"),
            "--node from spec.nodeName"
        );
        assert!(
            args.request_certificate,
            "{}: --request-certificate",
            container.name
        );
        assert_eq!(
            args.ca_namespace, "switchyard",
            "the controller's namespace"
        );
        if container.name == "certificate" {
            assert!(args.cluster_cidr.is_none(), "the certificate only");
        } else {
            assert!(args.reapply_every > 0, "it keeps the setup in place");
            assert!(
                args.cluster_cidr
                    .expect("--cluster-cidr")
                    .contains(&"10.244.1.0".parse::<std::net::Ipv4Addr>().unwrap())
            );
        }
    }
    // Every ConfigMap key is read by some container: no setting that does nothing.
    let mut used = BTreeSet::new();
    let specs = [pod_spec_of_deployment(m.controller()), node];
    for c in specs.into_iter().flat_map(all_containers) {
        for var in c.env.iter().flatten() {
            if let Some(key) = var
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            {
                used.insert(key.key.clone());
            }
        }
    }
    let keys: BTreeSet<String> = m.config("switchyard-config").keys().cloned().collect();
    assert_eq!(
        keys, used,
        "ConfigMap keys against the keys containers read"
    );
}

#[test]
fn the_node_installs_the_plugin_and_a_conflist_the_plugin_accepts() {
    let m = load();
    let spec = pod_spec_of_daemon_set(m.node());
    let install = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .expect("an install-cni init container");
    let mounts: BTreeMap<String, String> = install
        .volume_mounts
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.mount_path.clone()))
        .collect();
    let host_path = |volume: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
            .unwrap_or_else(|| panic!("volume {volume} is a hostPath"))
    };
    let mut host_dirs = BTreeMap::new();
    for (volume, path) in &mounts {
        host_dirs.insert(host_path(volume), path.clone());
    }
    let bin = &host_dirs["/opt/cni/bin"];
    let conf = &host_dirs["/etc/cni/net.d"];
    let script = install.command.as_ref().expect("a command").join(" ");
    assert!(
        script.contains(&format!("{bin}/switchyard-cni")),
        "{script}"
    );
    assert!(
        script.contains(&format!("{conf}/10-switchyard.conflist")),
        "{script}"
    );
    // The conflist between `<<CONF` and `CONF`, with the env the container gets.
    let body = script
        .split_once("<<CONF\n")
        .and_then(|(_, rest)| rest.split_once("\nCONF\n"))
        .map(|(body, _)| body.to_owned())
        .expect("the conflist heredoc");
    let mut body = body;
    let env: Vec<(String, String)> = install
        .env
        .iter()
        .flatten()
        .map(|var| {
            let line = expanded_command_line(
                &m,
                &Container {
                    name: install.name.clone(),
                    args: Some(vec![format!("$({})", var.name)]),
                    env: install.env.clone(),
                    ..Container::default()
                },
            );
            (var.name.clone(), line[0].clone())
        })
        .collect();
    for (name, value) in &env {
        body = body.replace(&format!("${name}"), value);
    }
    let conflist: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the conflist is not JSON ({e}):\n{body}"));
    let plugin = &conflist["plugins"][0];
    let netconf: switchyard_cni::plugin::NetConf = serde_json::from_value(json_with_version(
        plugin,
        &conflist["cniVersion"],
        &conflist["name"],
    ))
    .unwrap_or_else(|e| panic!("the plugin entry is not the plugin's configuration: {e}"));
    assert_eq!(netconf.plugin_type, "switchyard-cni");
    assert_eq!(netconf.node_name.as_deref(), Some("node-1"));
    // The node's CNI identity for an ssl: controller.
    let tls = netconf
        .tls
        .as_ref()
        .expect("the conflist names the node's CNI TLS files");
    assert!(tls.cert.is_absolute() && tls.key.is_absolute() && tls.ca.is_absolute());
    assert_eq!(
        netconf.controller,
        m.config("switchyard-config")["SWITCHYARD_CONTROLLER_CNI"]
    );
}

/// TLS on every channel by default: the controller listens on pssl:/ssl: only (no
/// --insecure-listen), reaches ovsdb-server over ssl:, and issues its own certificate from
/// its CA; the node requests its certificate before anything else, gives it to OVS with
/// `ovs-vsctl set-ssl` and to the CNI shim in the conflist's "tls", which checks a name the
/// controller's certificate carries.
#[test]
fn every_channel_is_tls_with_the_provisioned_certificates() {
    let m = load();
    let args = controller_args(&m);
    assert!(!args.insecure_listen, "no --insecure-listen");
    assert!(
        args.openflow_listen.starts_with("pssl:"),
        "{}",
        args.openflow_listen
    );
    assert!(
        args.openflow_target.starts_with("ssl:"),
        "{}",
        args.openflow_target
    );
    assert!(args.cni_listen.starts_with("ssl:"), "{}", args.cni_listen);
    assert!(args.node_certificates, "--node-certificates=true");
    assert!(
        args.switch_tls_ca.is_none() && args.cni_tls_ca.is_none(),
        "no certificate files to provide: the controller issues its own"
    );
    let config = m.config("switchyard-config");
    assert!(config["SWITCHYARD_OVSDB_TEMPLATE"].starts_with("ssl:"));
    assert!(config["SWITCHYARD_CONTROLLER_CNI"].starts_with("ssl:"));
    assert_eq!(
        args.ca_secret,
        switchyard::source::DEFAULT_CA_NAME,
        "the RBAC's resourceName"
    );
    assert_eq!(
        format!(
            "system:serviceaccount:switchyard:{}",
            args.node_service_account
        ),
        format!(
            "system:serviceaccount:switchyard:{}",
            pod_spec_of_daemon_set(m.node())
                .service_account_name
                .as_deref()
                .expect("the node's service account")
        ),
        "the signer approves the node DaemonSet's ServiceAccount"
    );
    // The controller's certificate directory is writable (the root filesystem is not).
    let spec = pod_spec_of_deployment(m.controller());
    let mounts = spec.containers[0].volume_mounts.iter().flatten();
    assert!(
        mounts
            .into_iter()
            .any(|v| args.certificate_dir.starts_with(&v.mount_path) && v.read_only != Some(true)),
        "{} is on a writable volume",
        args.certificate_dir.display()
    );
    // The node: the certificate init container comes first.
    let node = pod_spec_of_daemon_set(m.node());
    let init: Vec<&str> = node
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init.first(), Some(&"certificate"), "{init:?}");
    let dir = "/etc/switchyard/tls";
    let vswitchd = node
        .containers
        .iter()
        .find(|c| c.name == "ovs-vswitchd")
        .expect("ovs-vswitchd");
    let script = vswitchd
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let flat: Vec<&str> = script.split_whitespace().filter(|w| *w != "\\").collect();
    assert!(
        flat.join(" ")
            .contains(&format!("set-ssl {dir}/tls.key {dir}/tls.crt {dir}/ca.crt")),
        "{script}"
    );
    let ovsdb = node
        .containers
        .iter()
        .find(|c| c.name == "ovsdb-server")
        .expect("ovsdb-server");
    let script = ovsdb
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(script.contains("--remote=pssl:6640"), "{script}");
    assert!(!script.contains("ptcp:"), "no plaintext remote: {script}");
    // The conflist's "tls" is that directory, and its serverName a controller name.
    let install = node
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .expect("install-cni");
    let script = install
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(script.contains(&format!("\"{dir}/{file}\"")), "{script}");
    }
    let names: Vec<String> = args
        .certificate_names
        .iter()
        .map(|n| n.replace("$(POD_NAMESPACE)", "switchyard"))
        .collect();
    assert!(
        names.iter().any(|n| script.contains(&format!(
            "\"serverName\": \"{}\"",
            n.replace("switchyard.svc", "$POD_NAMESPACE.svc")
        ))),
        "the conflist's serverName is one of {names:?}: {script}"
    );
}

/// A plugin entry as the runtime hands it to the plugin: with the list's cniVersion and name.
fn json_with_version(plugin: &Value, version: &Value, name: &Value) -> Value {
    let mut v = plugin.clone();
    v["cniVersion"] = version.clone();
    v["name"] = name.clone();
    v
}

// --- The node DaemonSet's containers, run as a container runtime runs them -------------

/// Sets up one container and execs its command (`"$@"`, run chrooted): the host's root
/// filesystem stands for the image, as an overlay whose upper layer is a tmpfs of this mount
/// namespace (nothing the container writes reaches the host); the node's /proc, /dev and
/// /sys; every volume bound at its mountPath, resolved inside the root (/var/run is a
/// symlink to /run there, and following it outside would land on the host's /run); then
/// the root made read-only when readOnlyRootFilesystem says so.
/// SY_SCRATCH: an empty directory; SY_MOUNTS: lines `SOURCE TARGET rw|ro`;
/// SY_READ_ONLY_ROOT: yes or no.
const CONTAINER_SETUP: &str = r#"set -eu
root=$SY_SCRATCH/root
mount -t tmpfs container "$SY_SCRATCH"
mkdir "$SY_SCRATCH/upper" "$SY_SCRATCH/work" "$root"
mount -t overlay container -o "lowerdir=/,upperdir=$SY_SCRATCH/upper,workdir=$SY_SCRATCH/work" "$root"
for d in proc dev sys; do mount --rbind "/$d" "$root/$d"; done
echo "$SY_MOUNTS" | while read -r source target mode; do
  [ -n "$source" ] || continue
  at=$root$(chroot "$root" realpath -m "$target")
  if [ -d "$source" ]; then mkdir -p "$at"; else mkdir -p "${at%/*}"; [ -e "$at" ] || : > "$at"; fi
  mount --bind "$source" "$at"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$at"; fi
done
if [ "$SY_READ_ONLY_ROOT" = yes ]; then mount -o remount,ro "$root"; fi
exec chroot "$root" "$@"
"#;

/// The image's binaries, from this workspace's build.
const IMAGE_BINARIES: &[&str] = &["switchyard", "switchyard-cni", "yardctl"];

/// A node for the DaemonSet: a network namespace with the node's address (hostNetwork),
/// and a directory standing for the node's filesystem, where each hostPath volume lives.
struct TestNode {
    netns: switchyard_tests::Netns,
    dir: tempfile::TempDir,
    ip: &'static str,
}

/// One container started from the manifest; stopped by PID on drop.
struct RunningContainer {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl RunningContainer {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `secs` for `condition`; panics with the container's log if it does not
    /// hold by then. `Err` with the exit status if the container exits first.
    fn watch(
        &mut self,
        what: &str,
        secs: u64,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), std::process::ExitStatus> {
        let mut exited = None;
        let child = &mut self.child;
        let done = switchyard_tests::wait_for(std::time::Duration::from_secs(secs), || {
            exited = child.try_wait().expect("wait");
            condition() || exited.is_some()
        });
        if done.is_none() {
            panic!("{}: not {what} in {secs} s:\n{}", self.name, self.log());
        }
        exited.map_or(Ok(()), Err)
    }

    /// [`RunningContainer::watch`] for 30 s; the container exiting first is a failure.
    fn wait_for(&mut self, what: &str, condition: impl FnMut() -> bool) {
        if let Err(status) = self.watch(what, 30, condition) {
            panic!("{}: {status} before {what}:\n{}", self.name, self.log());
        }
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        // The process is the container's command itself (every step before it execs): as
        // the runtime stops a container, SIGTERM, then SIGKILL after a grace period.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let stopped = switchyard_tests::wait_for(std::time::Duration::from_secs(5), || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if stopped.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl TestNode {
    fn new(tag: &str, ip: &'static str) -> TestNode {
        let netns = switchyard_tests::Netns::new(tag);
        // The node's address (no dummy devices on this machine's kernel: on loopback).
        netns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        TestNode {
            netns,
            dir: tempfile::tempdir().expect("tempdir"),
            ip,
        }
    }

    /// Where the node's `path` is: under the test's directory, except the node's kernel
    /// interfaces (/dev/net/tun) and its modules (none on this machine: an empty directory).
    fn host_path(&self, path: &str) -> PathBuf {
        match path {
            "/dev/net/tun" => path.into(),
            _ => self
                .dir
                .path()
                .join("host")
                .join(path.trim_start_matches('/')),
        }
    }

    /// Starts `container` of `spec` as the kubelet and a runtime would: its volumes, its
    /// environment (downward API for node-1 on this node, the ConfigMap, then `overrides`)
    /// and nothing else, its securityContext (capability bounding set, no_new_privs, uid,
    /// read-only root), in the node's network namespace.
    fn start(
        &self,
        m: &Manifests,
        spec: &PodSpec,
        container: &Container,
        overrides: &[(&str, &str)],
    ) -> RunningContainer {
        let mut mounts = String::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("{}: no volume {}", container.name, mount.name));
            if volume.empty_dir.is_some() {
                // One per pod, shared by its containers, empty when the pod starts.
                let source = self.dir.path().join("empty-dirs").join(&volume.name);
                std::fs::create_dir_all(&source).expect("mkdir the emptyDir");
                mounts += &format!("{} {} rw\n", source.display(), mount.mount_path);
                continue;
            }
            let host = volume
                .host_path
                .as_ref()
                .unwrap_or_else(|| panic!("volume {} is a hostPath or an emptyDir", volume.name));
            let source = self.host_path(&host.path);
            match host.type_.as_deref() {
                Some("FileOrCreate") if !source.exists() => {
                    std::fs::create_dir_all(source.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&source, "").expect("create the file");
                }
                Some("CharDevice") => assert!(source.exists(), "{} exists", source.display()),
                _ => std::fs::create_dir_all(&source).expect("mkdir the hostPath"),
            }
            let mode = if mount.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            mounts += &format!("{} {} {mode}\n", source.display(), mount.mount_path);
        }
        for binary in IMAGE_BINARIES {
            let built = switchyard_tests::workspace_binary(binary);
            mounts += &format!("{} /usr/local/bin/{binary} ro\n", built.display());
        }

        let security = container.security_context.clone().unwrap_or_default();
        assert_ne!(
            security.privileged,
            Some(true),
            "{}: a privileged container is not run here",
            container.name
        );
        let mut exec = vec!["setpriv".to_owned()];
        let capabilities = security.capabilities.unwrap_or_default();
        if capabilities.drop.iter().flatten().any(|c| c == "ALL") {
            let added: String = capabilities
                .add
                .iter()
                .flatten()
                .map(|c| format!(",+{}", c.to_lowercase()))
                .collect();
            exec.push(format!("--bounding-set=-all{added}"));
            exec.push("--inh-caps=-all".into());
        }
        if security.allow_privilege_escalation == Some(false) {
            exec.push("--no-new-privs".into());
        }
        if let Some(uid) = security.run_as_user.filter(|uid| *uid != 0) {
            exec.extend([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ]);
        }
        let fields = [
            ("spec.nodeName", "node-1"),
            ("metadata.namespace", "switchyard"),
            ("status.hostIP", self.ip),
            ("status.podIP", self.ip),
        ];
        let mut env = container_env(m, container, &fields);
        for (name, value) in overrides {
            env.insert((*name).into(), (*value).into());
        }
        exec.extend(["env".into(), "-i".into()]);
        exec.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        exec.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        exec.extend(expanded_with(container, &env));

        let scratch = self.dir.path().join(format!("scratch-{}", container.name));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).expect("scratch");
        let log = self.dir.path().join(format!("{}.log", container.name));
        let out = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", self.netns.name()])
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", CONTAINER_SETUP, "container-setup"])
            .args(&exec)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SY_SCRATCH", &scratch)
            .env("SY_MOUNTS", mounts)
            .env(
                "SY_READ_ONLY_ROOT",
                if security.read_only_root_filesystem == Some(true) {
                    "yes"
                } else {
                    "no"
                },
            )
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start the container");
        RunningContainer {
            name: container.name.clone(),
            child,
            log,
        }
    }

    /// Runs an init container to its end (60 s at most); its status and output.
    fn run_to_completion(
        &self,
        m: &Manifests,
        spec: &PodSpec,
        container: &Container,
    ) -> (std::process::ExitStatus, String) {
        let mut running = self.start(m, spec, container, &[]);
        match running.watch("finished", 60, || false) {
            Err(status) => (status, running.log()),
            Ok(()) => unreachable!("the condition never holds"),
        }
    }
}

fn container_named<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("the node DaemonSet has no container {name}"))
}

/// The node DaemonSet's scripts, run whole: `install-cni` leaves the built plugin and a
/// conflist the plugin accepts (and can run again); `ovsdb-server` creates its database and
/// serves it on its unix socket and, with the certificate `ovs-vswitchd` sets from the node's
/// TLS directory, over TLS on the node's address; `ovs-vswitchd` names the Open_vSwitch row
/// after the node and runs a bridge; node TLS files renewed in place (switched as
/// node-setup switches them) are taken up without a restart; a restarted `ovsdb-server`
/// keeps all of it; with `SWITCHYARD_OVS=host` both only wait and create nothing. Each
/// runs with the manifest's volumes, environment and securityContext (capability bounding
/// set, no_new_privs, read-only root) on an overlay of this machine's root. Not run here: the
/// `certificate` init container and `node-setup` (they need the API server; the kube source
/// tests run their code against the in-test one) — the node's certificate is written where
/// and as `certificate` leaves it.
#[test]
fn the_node_daemonsets_containers_run_as_a_runtime_runs_them() {
    switchyard_tests::skip_unless_root!();
    let m = load();
    let spec = pod_spec_of_daemon_set(m.node());
    assert_eq!(
        spec.host_network,
        Some(true),
        "the node pod is in the host network"
    );
    let node = TestNode::new("nds", "10.251.0.11");

    // Where the certificate init container leaves the node's identity, written as it
    // writes it (the `..data` layout).
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = switchyard_tests::pki::Pki::new(pki_dir.path(), "n");
    let (identity, controller) = (pki.issue("node-1"), pki.issue("controller"));
    let tls = node.host_path("/etc/switchyard/tls");
    std::fs::create_dir_all(&tls).expect("mkdir");
    let write_tls = |who: &switchyard_tests::pki::Identity| {
        let read = |p: &Path| std::fs::read_to_string(p).expect("read a PEM file");
        switchyard::node_certificate::write_identity(
            &tls,
            read(&who.key),
            read(&who.cert),
            read(&who.ca),
        )
        .expect("write the node's TLS files");
    };
    write_tls(&identity);

    // install-cni, twice (a restarted pod runs its init containers again).
    let install = container_named(
        spec.init_containers.as_deref().unwrap_or_default(),
        "install-cni",
    );
    for run in 1..=2 {
        let (status, log) = node.run_to_completion(&m, spec, install);
        assert!(status.success(), "install-cni run {run}: {status}\n{log}");
        assert!(log.contains("installed"), "{log}");
    }
    let plugin = node.host_path("/opt/cni/bin").join("switchyard-cni");
    assert!(
        std::fs::read(&plugin).expect("the installed plugin")
            == std::fs::read(switchyard_tests::workspace_binary("switchyard-cni")).expect("built"),
        "the installed plugin is the image's"
    );
    let conf_dir = node.host_path("/etc/cni/net.d");
    for dir in [plugin.parent().expect("dir"), conf_dir.as_path()] {
        let names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "no temporary file left in {}: {names:?}",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(conf_dir.join("10-switchyard.conflist")).expect("conflist");
    let conflist: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    let entry = json_with_version(
        &conflist["plugins"][0],
        &conflist["cniVersion"],
        &conflist["name"],
    );
    let netconf: switchyard_cni::plugin::NetConf = serde_json::from_value(entry.clone())
        .unwrap_or_else(|e| panic!("the installed conflist's plugin entry: {e}\n{text}"));
    assert_eq!(netconf.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        netconf.controller,
        m.config("switchyard-config")["SWITCHYARD_CONTROLLER_CNI"]
    );
    // The runtime's first call to a plugin it finds.
    let mut version = std::process::Command::new(&plugin)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the installed plugin");
    use std::io::Write as _;
    version
        .stdin
        .take()
        .expect("stdin")
        .write_all(entry.to_string().as_bytes())
        .expect("write the configuration");
    let out = version.wait_with_output().expect("VERSION");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("VERSION answers JSON");
    assert!(
        answer["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&conflist["cniVersion"])),
        "{answer}"
    );

    // The OVS containers. SWITCHYARD_DATAPATH=netdev: this machine's datapath.
    let ovsdb_server = container_named(&spec.containers, "ovsdb-server");
    let vswitchd = container_named(&spec.containers, "ovs-vswitchd");
    let run_dir = node.host_path("/var/run/openvswitch");
    let db = format!("--db=unix:{}", run_dir.join("db.sock").display());
    let vsctl = |args: &[&str]| {
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        switchyard_tests::testbed::output("ovs-vsctl", &all).expect("run ovs-vsctl")
    };
    // SWITCHYARD_OVS=host: both stay up, idle, and leave the node's OVS files alone.
    for container in [ovsdb_server, vswitchd] {
        let mut idle = node.start(&m, spec, container, &[("SWITCHYARD_OVS", "host")]);
        let says = format!("using the node's own {}", container.name);
        let (log, pid) = (idle.log.clone(), idle.child.id());
        // It said so and went on to wait (`exec sleep infinity`), not exited.
        idle.wait_for("idling in host mode", || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&says)) && comm.trim() == "sleep"
        });
    }
    assert!(
        !node.host_path("/etc/openvswitch").join("conf.db").exists(),
        "host mode creates no database"
    );
    let mut server = node.start(&m, spec, ovsdb_server, &[]);
    server.wait_for("serving db.sock", || {
        vsctl(&["--no-wait", "show"]).status.success()
    });
    let mut switch = node.start(&m, spec, vswitchd, &[("SWITCHYARD_DATAPATH", "netdev")]);
    // The script names the node, then sets the SSL table, then starts the daemon.
    let tls_files = ["tls.key", "tls.crt", "ca.crt"].map(|f| format!("/etc/switchyard/tls/{f}"));
    switch.wait_for("setting the SSL table to the node's TLS files", || {
        let ssl = String::from_utf8_lossy(&vsctl(&["get-ssl"]).stdout).into_owned();
        tls_files.iter().all(|f| ssl.contains(f.as_str()))
    });
    let id = vsctl(&["get", "Open_vSwitch", ".", "external_ids:system-id"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim().trim_matches('"'),
        "node-1",
        "the Open_vSwitch row is named after the node"
    );
    // Without --no-wait: answers once ovs-vswitchd has the bridge running.
    let added = vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "Bridge",
        "br-int",
        "datapath_type=netdev",
    ]);
    assert!(
        added.status.success(),
        "ovs-vswitchd runs br-int: {}\n{}",
        String::from_utf8_lossy(&added.stderr),
        switch.log()
    );
    let ofport = vsctl(&["get", "Interface", "br-int", "ofport"]);
    assert_eq!(String::from_utf8_lossy(&ofport.stdout).trim(), "65534");

    // The controller's side: ovsdb-server on the node's address, over TLS only.
    let list_dbs = |target: String, options: Option<switchyard_tests::pki::Identity>| {
        switchyard_tests::pod_servers::in_netns(node.netns.path(), async move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let tls = options.as_ref().map(|who| who.ovsdb_options("node-1"));
                let r = switchyard_tests::pki::list_dbs(&target, tls.unwrap_or_default());
                match r.await {
                    Ok(dbs) => break Ok(dbs),
                    // Plaintext: one try (it gets no answer).
                    Err(e) if options.is_none() || std::time::Instant::now() > deadline => {
                        break Err(e);
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        })
        .join()
        .expect("client thread")
    };
    let over_tls = format!("ssl:{}:6640", node.ip);
    let dbs = list_dbs(over_tls.clone(), Some(controller.clone())).unwrap_or_else(|e| {
        panic!(
            "the controller reaches ovsdb-server over TLS: {e}\n{}",
            server.log()
        )
    });
    assert!(dbs.contains(&"Open_vSwitch".to_owned()), "{dbs:?}");
    list_dbs(format!("tcp:{}:6640", node.ip), None)
        .expect_err("no plaintext OVSDB on the node's address");

    // Renewed (here from another CA, so that only the new files can let the client in):
    // OVS takes the switched files up without a restart.
    let renewed_pki = switchyard_tests::pki::Pki::new(pki_dir.path(), "m");
    write_tls(&renewed_pki.issue("node-1"));
    let renewed_controller = renewed_pki.issue("controller");
    list_dbs(over_tls.clone(), Some(renewed_controller.clone())).unwrap_or_else(|e| {
        panic!(
            "ovsdb-server presents and trusts the renewed files: {e}\n{}",
            server.log()
        )
    });

    // ovsdb-server restarted (the kubelet restarts a container that died): the same
    // database, the same TLS, the bridge still there.
    drop(server);
    let server = node.start(&m, spec, ovsdb_server, &[]);
    list_dbs(over_tls, Some(renewed_controller))
        .unwrap_or_else(|e| panic!("TLS after a restart: {e}\n{}", server.log()));
    let bridges = vsctl(&["list-br"]);
    assert_eq!(String::from_utf8_lossy(&bridges.stdout).trim(), "br-int");
    drop(switch);
    drop(server);
}
