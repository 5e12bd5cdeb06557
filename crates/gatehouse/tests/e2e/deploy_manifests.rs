//! The Kubernetes manifests as `kubectl kustomize` renders them (deploy/k8s/overlays/example),
//! checked against each other and against the real binary: every ConfigMap, Secret and key a
//! workload names exists, every Service reaches a named container port of the pods it selects,
//! the listen addresses match the container ports, the gateway's upstream URLs name Services, and
//! the routes ConfigMap plus each Deployment's environment start the binary, whose probe paths
//! then answer. Skipped, saying so, where kubectl is not installed (CI installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::Process;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example overlay rendered, one document per resource, from a copy of deploy/k8s with the
/// example secrets in place (the real `secrets.env` is never committed).
fn rendered() -> Option<Vec<Yaml>> {
    if std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl is not installed, so the manifests are not rendered here");
        return None;
    }
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .args(["-r"])
        .arg(repository().join("deploy/k8s"))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let overlay = copy.path().join("k8s/overlays/example");
    std::fs::copy(
        overlay.join("secrets.env.example"),
        overlay.join("secrets.env"),
    )
    .unwrap();
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(YamlLoader::load_from_str(&String::from_utf8(output.stdout).unwrap()).unwrap())
}

fn text(yaml: &Yaml) -> &str {
    yaml.as_str().unwrap_or_default()
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map_or(&[], Vec::as_slice)
}

fn of_kind<'a>(documents: &'a [Yaml], kinds: &[&str]) -> Vec<&'a Yaml> {
    documents
        .iter()
        .filter(|document| kinds.contains(&text(&document["kind"])))
        .collect()
}

fn name(document: &Yaml) -> &str {
    text(&document["metadata"]["name"])
}

/// A workload's one container.
fn container(workload: &Yaml) -> &Yaml {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

/// The container's environment as written (`valueFrom` entries left out).
fn env(workload: &Yaml) -> BTreeMap<String, String> {
    list(&container(workload)["env"])
        .iter()
        .filter_map(|variable| {
            let value = variable["value"].as_str()?;
            Some((text(&variable["name"]).to_owned(), value.to_owned()))
        })
        .collect()
}

/// The container's ports by name.
fn ports(workload: &Yaml) -> BTreeMap<String, i64> {
    list(&container(workload)["ports"])
        .iter()
        .map(|port| {
            (
                text(&port["name"]).to_owned(),
                port["containerPort"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn port_of(address: &str) -> i64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn every_configmap_secret_and_key_a_workload_names_exists() {
    let Some(documents) = rendered() else { return };
    let config_maps: BTreeSet<&str> = of_kind(&documents, &["ConfigMap"])
        .into_iter()
        .map(name)
        .collect();
    let secrets: BTreeMap<&str, BTreeSet<String>> = of_kind(&documents, &["Secret"])
        .into_iter()
        .map(|secret| {
            let keys = secret["data"]
                .as_hash()
                .unwrap()
                .keys()
                .map(|key| text(key).to_owned())
                .collect();
            (name(secret), keys)
        })
        .collect();
    let workloads = of_kind(&documents, &["Deployment", "StatefulSet"]);
    assert_eq!(
        workloads.len(),
        6,
        "gateway, users, orders, clock, postgres, redis"
    );
    for workload in workloads {
        let pod = &workload["spec"]["template"]["spec"];
        for volume in list(&pod["volumes"]) {
            if let Some(config_map) = volume["configMap"]["name"].as_str() {
                assert!(
                    config_maps.contains(config_map),
                    "{} mounts ConfigMap {config_map}, which is not rendered",
                    name(workload)
                );
            }
        }
        for variable in list(&container(workload)["env"]) {
            let reference = &variable["valueFrom"]["secretKeyRef"];
            if reference.is_badvalue() {
                continue;
            }
            let (secret, key) = (text(&reference["name"]), text(&reference["key"]));
            let keys = secrets
                .get(secret)
                .unwrap_or_else(|| panic!("{} names Secret {secret}", name(workload)));
            assert!(
                keys.contains(key),
                "{} reads key {key} of Secret {secret}, which has {keys:?}",
                name(workload)
            );
        }
    }
}

#[test]
fn services_reach_named_ports_and_addresses_match_the_containers() {
    let Some(documents) = rendered() else { return };
    let workloads = of_kind(&documents, &["Deployment", "StatefulSet"]);
    let services = of_kind(&documents, &["Service"]);
    let mut reachable = BTreeMap::new();
    for service in &services {
        let selector = service["spec"]["selector"]["app.kubernetes.io/name"]
            .as_str()
            .unwrap();
        let workload = workloads
            .iter()
            .find(|workload| {
                text(&workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])
                    == selector
            })
            .unwrap_or_else(|| panic!("Service {} selects no workload", name(service)));
        for port in list(&service["spec"]["ports"]) {
            let target = text(&port["targetPort"]);
            assert!(
                ports(workload).contains_key(target),
                "Service {} targets port {target}, which {} does not name",
                name(service),
                name(workload)
            );
            reachable.insert(
                format!("{}:{}", name(service), port["port"].as_i64().unwrap()),
                ports(workload)[target],
            );
        }
    }
    for workload in &workloads {
        let (env, ports) = (env(workload), ports(workload));
        for (variable, port) in [
            ("GATEHOUSE_LISTEN", "http"),
            ("GATEHOUSE_ADMIN_LISTEN", "admin"),
        ] {
            if let Some(address) = env.get(variable) {
                assert_eq!(
                    port_of(address),
                    ports[port],
                    "{}: {variable} and container port {port}",
                    name(workload)
                );
            }
        }
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let port = &container(workload)[probe]["httpGet"]["port"];
            if let Some(port) = port.as_str() {
                assert!(ports.contains_key(port), "{} {probe}", name(workload));
            }
        }
        // Every http:// URL a part is given names a Service and one of its ports.
        for (variable, value) in &env {
            if let Some(rest) = value.strip_prefix("http://") {
                let host_port = rest.split('/').next().unwrap();
                assert!(
                    reachable.contains_key(host_port),
                    "{}: {variable}={value} names no Service port (have {:?})",
                    name(workload),
                    reachable.keys()
                );
            }
        }
    }
}

/// Starts `gatehouse ARGS` with a workload's environment as rendered, but listening on port 0
/// and keeping data under `folder` (SQLite, memory state): the manifests' own values, run here.
fn start_as_deployed(workload: &Yaml, routes: &Path, folder: &Path) -> Process {
    // Created by the binary, 0700, as it requires of a folder holding secrets.
    let data = folder.join("data");
    let mut env = env(workload);
    for variable in ["GATEHOUSE_LISTEN", "GATEHOUSE_ADMIN_LISTEN"] {
        env.insert(variable.to_owned(), "127.0.0.1:0".to_owned());
    }
    env.insert("GATEHOUSE_CONFIG".to_owned(), routes.display().to_string());
    env.insert(
        "GATEHOUSE_STORE".to_owned(),
        format!("sqlite://{}/gateway.db", data.display()),
    );
    env.insert("GATEHOUSE_STATE".to_owned(), "memory".to_owned());
    env.insert(
        "GATEHOUSE_DATABASE_URL".to_owned(),
        format!("sqlite://{}/{}.db", data.display(), name(workload)),
    );
    let args: Vec<&str> = list(&container(workload)["args"])
        .iter()
        .map(text)
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Process::start(&args, &env)
}

#[tokio::test]
async fn the_routes_configmap_and_each_deployments_environment_start_the_binary_whose_probes_answer(
) {
    let Some(documents) = rendered() else { return };
    let routes_map = of_kind(&documents, &["ConfigMap"])
        .into_iter()
        .find(|map| name(map) == "gateway-routes")
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let routes = data.path().join("gateway.yaml");
    std::fs::write(&routes, text(&routes_map["data"]["gateway.yaml"])).unwrap();
    let http = crate::harness::client();
    for workload in of_kind(&documents, &["Deployment"]) {
        let process = start_as_deployed(workload, &routes, data.path());
        let listening = if name(workload) == "gateway" {
            "gateway listening"
        } else {
            "listening"
        };
        let address = process.listening(listening).await;
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let Some(path) = container(workload)[probe]["httpGet"]["path"].as_str() else {
                continue;
            };
            let status = http
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            // Ready or not (the gateway's upstreams are not running here), but served.
            assert!(
                status == 200 || status == 503,
                "{} {probe} {path}: {status}\n{}",
                name(workload),
                process.log()
            );
        }
    }
}
