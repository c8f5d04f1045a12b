//! The deployment files: every example config passes `railgate check`, the YAML parses, and the
//! ports in the YAML agree with the configs they run, and the image leaves the demo out.

use serde_norway::Value as Yaml;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(railgate_tests::bins::path("railgate"));
    cmd.args(["check", "--config", config.to_str().expect("utf8")])
        .env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run check");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

fn toml_str(text: &str, key: &str) -> String {
    let t: toml::Table = text.parse().expect("toml");
    t[key].as_str().expect("string").to_owned()
}

#[test]
fn every_example_config_passes_check() {
    let dir = root().join("deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out) = check(
                &path,
                &[("AUTH_JWT_SIGNING", "x"), ("ENGINES_TICKET_SECRET", "y")],
            );
            assert_eq!(code, 0, "{}: {out}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "found {checked} example configs");
}

#[test]
fn a_broken_example_would_be_caught() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[registry]\nsource = \"file\"\nfile = \"missing.json\"\n",
    )
    .expect("write");
    let (code, out) = check(&p, &[]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("missing.json"), "{out}");
}

#[test]
fn compose_ports_agree_with_the_config_it_mounts() {
    let compose: Yaml = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/docker-compose.yml")).expect("read"),
    )
    .expect("yaml");
    let config = std::fs::read_to_string(root().join("deploy/examples/railgate.compose.toml"))
        .expect("read");
    let (listen, admin, upstream) = (
        port(&toml_str(&config, "listen")),
        port(&toml_str(&config, "admin_listen")),
        toml_str(&config, "upstream"),
    );
    let gw = &compose["services"]["railgate"];
    let ports: Vec<String> = gw["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    assert!(ports.contains(&format!("{listen}:{listen}")), "{ports:?}");
    assert!(ports.contains(&format!("{admin}:{admin}")), "{ports:?}");
    let mounts: Vec<&str> = gw["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./examples/railgate.compose.toml:")),
        "{mounts:?}"
    );
    let mock_cmd: Vec<&str> = compose["services"]["upstream-mock"]["command"]
        .as_sequence()
        .expect("cmd")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let mock_listen = mock_cmd[mock_cmd
        .iter()
        .position(|a| *a == "--listen")
        .expect("--listen")
        + 1];
    assert_eq!(
        upstream,
        format!("http://upstream-mock:{}", port(mock_listen))
    );
    let prom: Yaml = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).expect("read"),
    )
    .expect("yaml");
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .expect("target");
    assert_eq!(target, format!("railgate:{admin}"));
}

#[test]
fn kubernetes_sidecar_ports_and_probes_agree_with_its_config() {
    let text =
        std::fs::read_to_string(root().join("deploy/k8s/railgate-sidecar.yaml")).expect("read");
    let docs: Vec<Yaml> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml doc"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["Secret", "ConfigMap", "Deployment", "Service"]);
    let config = docs[1]["data"]["railgate.toml"].as_str().expect("config");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("railgate.toml");
    std::fs::write(&path, config).expect("write");
    assert_eq!(check(&path, &[("AUTH_JWT_SIGNING", "x")]).0, 0);
    let (listen, admin, upstream) = (
        port(&toml_str(config, "listen")),
        port(&toml_str(config, "admin_listen")),
        port(&toml_str(config, "upstream")),
    );
    let containers = docs[2]["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let rg = containers
        .iter()
        .find(|c| c["name"] == "railgate")
        .expect("railgate container");
    let backend = containers
        .iter()
        .find(|c| c["name"] == "backend")
        .expect("backend container");
    let ports: Vec<u64> = rg["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(ports, vec![listen as u64, admin as u64]);
    assert_eq!(
        rg["livenessProbe"]["httpGet"]["port"].as_u64(),
        Some(admin as u64)
    );
    assert_eq!(
        rg["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        rg["readinessProbe"]["httpGet"]["port"].as_u64(),
        Some(admin as u64)
    );
    assert_eq!(
        rg["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        backend["ports"][0]["containerPort"].as_u64(),
        Some(upstream as u64)
    );
    assert_eq!(
        docs[3]["spec"]["ports"][0]["targetPort"].as_u64(),
        Some(listen as u64)
    );
    assert_eq!(
        rg["envFrom"][0]["secretRef"]["name"],
        docs[0]["metadata"]["name"]
    );
    let secret_keys: Vec<&str> = docs[0]["stringData"]
        .as_mapping()
        .expect("data")
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        secret_keys.contains(&"AUTH_JWT_SIGNING") && secret_keys.contains(&"ENGINES_TICKET_SECRET")
    );
    assert_pod_security_restricted(&docs[2]["spec"]["template"]["spec"]);
}

/// The Pod Security Standard "restricted" profile, for a pod spec and each of its containers:
/// non-root, no privilege escalation, every capability dropped, a RuntimeDefault (or Localhost)
/// seccomp profile; plus what we ask of our own container (read-only root filesystem) and of
/// every image (`IfNotPresent`).
fn assert_pod_security_restricted(pod: &Yaml) {
    let pod_sc = &pod["securityContext"];
    for c in pod["containers"].as_sequence().expect("containers") {
        let name = c["name"].as_str().expect("name");
        let sc = &c["securityContext"];
        let either = |key: &str| {
            if sc[key].is_null() {
                pod_sc[key].clone()
            } else {
                sc[key].clone()
            }
        };
        assert_eq!(either("runAsNonRoot").as_bool(), Some(true), "{name}");
        assert!(
            either("runAsUser").as_u64().is_none_or(|u| u != 0),
            "{name}: uid 0"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        let dropped: Vec<&str> = sc["capabilities"]["drop"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: capabilities.drop"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(dropped, vec!["ALL"], "{name}");
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name}: adds capabilities"
        );
        let seccomp = either("seccompProfile")["type"].as_str().map(str::to_owned);
        assert!(
            matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")),
            "{name}: seccomp {seccomp:?}"
        );
        assert_ne!(sc["privileged"].as_bool(), Some(true), "{name}");
        assert_eq!(
            c["imagePullPolicy"].as_str(),
            Some("IfNotPresent"),
            "{name}"
        );
        if name == "railgate" {
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
        }
    }
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
}

#[test]
fn the_deployed_gateway_is_built_without_the_demo_backend() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("cargo build --release --locked -p railgate --no-default-features"),
        "{dockerfile}"
    );
    let tree = |extra: &[&str]| {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "-q", "--locked", "-p", "railgate", "-e", "normal"])
            .args(["--prefix", "none"])
            .args(extra)
            .current_dir(root())
            .output()
            .expect("cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!tree(&["--no-default-features"]).contains("railgate-upstream-mock"));
    assert!(
        tree(&[]).contains("railgate-upstream-mock"),
        "the default build keeps the demo"
    );
}

#[test]
fn cluster_compose_balancer_and_kubernetes_example_agree_with_their_configs() {
    let compose: Yaml = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/docker-compose.cluster.yml")).expect("read"),
    )
    .expect("yaml");
    let config = std::fs::read_to_string(root().join("deploy/examples/railgate.cluster.toml"))
        .expect("read");
    let t: toml::Table = config.parse().expect("toml");
    let redis_url = t["cluster"]["redis_url"].as_str().expect("redis_url");
    assert_eq!(redis_url, "redis://redis:6379/0");
    assert!(compose["services"]["redis"].is_mapping(), "a redis service");
    let (listen, admin) = (
        port(&toml_str(&config, "listen")),
        port(&toml_str(&config, "admin_listen")),
    );
    let haproxy = std::fs::read_to_string(root().join("deploy/haproxy/haproxy.cfg")).expect("read");
    for n in 1..=3 {
        let svc = &compose["services"][format!("railgate-{n}").as_str()];
        assert!(svc.is_mapping(), "railgate-{n}");
        let server = format!("server railgate-{n} railgate-{n}:{listen} check port {admin}");
        assert!(haproxy.contains(&server), "{server}");
    }
    let anchor = &compose["x-railgate"];
    let mounts: Vec<&str> = anchor["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        mounts,
        ["./examples/railgate.cluster.toml:/etc/railgate/railgate.toml:ro"]
    );
    assert!(compose["services"]["balancer"]["volumes"][0]
        .as_str()
        .is_some_and(|v| v.starts_with("./haproxy/haproxy.cfg:")));

    let text =
        std::fs::read_to_string(root().join("deploy/k8s/railgate-cluster.yaml")).expect("read");
    let docs: Vec<Yaml> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml doc"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "Secret",
            "ConfigMap",
            "StatefulSet",
            "Service",
            "Deployment",
            "Service"
        ]
    );
    let config = docs[1]["data"]["railgate.toml"].as_str().expect("config");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("railgate.toml");
    std::fs::write(&path, config).expect("write");
    assert_eq!(check(&path, &[("AUTH_JWT_SIGNING", "x")]).0, 0);
    let t: toml::Table = config.parse().expect("toml");
    let host = docs[3]["metadata"]["name"].as_str().expect("redis service");
    assert_eq!(
        t["cluster"]["redis_url"].as_str(),
        Some(format!("redis://{host}:6379/0").as_str())
    );
    assert_eq!(docs[4]["spec"]["replicas"].as_u64(), Some(3));
}
