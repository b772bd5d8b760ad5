//! Checks that what `deploy/` tells an operations engineer to run is what
//! qzx accepts: every `QZX_*` variable the compose file and the Kubernetes
//! manifests set is a contract name or a key of `config/qzx.toml`, the
//! effective configuration of every process loads and validates, events and
//! actions are co-partitioned, every pod is probed on `/readyz` and given
//! longer than the drain to stop, and the dashboards only chart metrics that
//! exist. A typo here is found in CI, not during a night shift.
//!
//! The last test runs `deploy/local-cluster.sh` and proves the scale-out
//! and a router's SIGKILL hand-over on this machine; it starts eight
//! processes, so it runs only under `scripts/test.sh` (`TEST_STACK=1`).
//!
//! These tests read files only; they must never start containers or touch
//! a cluster (except the local-cluster test, which starts processes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bus::{Config, Topic, Topics};
use serde::Deserialize as _;
use serde_yaml_ng::Value as Yaml;

/// The contract's fixed environment names and the configuration keys they
/// set (CONTRACT.md, "Configuration").
const FIXED_ENV: [(&str, &str); 7] = [
    ("QZX_KAFKA_BROKERS", "kafka.brokers"),
    ("QZX_REDIS_URL", "redis.url"),
    ("QZX_TOPIC_PREFIX", "kafka.topic_prefix"),
    ("QZX_JWT_SECRET", "auth.jwt_secret"),
    ("QZX_LISTEN", "api.listen"),
    ("QZX_INGEST_LISTEN", "ingest.listen"),
    ("QZX_MQTT_URL", "mqtt.url"),
];

/// The one-service commands; the topology runs two replicas of each.
const SERVICES: [&str; 3] = ["ingest", "router", "api"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file, `<<` merge keys applied, empty ones skipped.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let mut doc = Yaml::deserialize(de).unwrap_or_else(|e| panic!("{} document {i}: {e}", path.display()));
        doc.apply_merge()
            .unwrap_or_else(|e| panic!("{} document {i}: merge keys: {e}", path.display()));
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    docs
}

fn yaml_str(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn get_str(v: &Yaml, path: &[&str]) -> Option<String> {
    get(v, path).and_then(yaml_str)
}

fn get_i64(v: &Yaml, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(|v| match v {
        Yaml::Number(n) => n.as_i64(),
        Yaml::String(s) => s.parse().ok(),
        _ => None,
    })
}

fn seq(v: Option<&Yaml>) -> Vec<Yaml> {
    v.and_then(Yaml::as_sequence).cloned().unwrap_or_default()
}

fn defaults() -> toml::Table {
    read(&repo().join("config/qzx.toml"))
        .parse()
        .expect("config/qzx.toml is TOML")
}

/// A `QZX_*` name → the configuration key path it sets, or why it is not one.
fn config_path(name: &str) -> Result<Vec<String>, String> {
    if let Some((_, path)) = FIXED_ENV.iter().find(|(fixed, _)| *fixed == name) {
        return Ok(path.split('.').map(str::to_owned).collect());
    }
    let Some(rest) = name.strip_prefix("QZX_") else {
        return Err(format!("{name} is not a QZX_ variable"));
    };
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.len() < 2 || path.iter().any(String::is_empty) {
        return Err(format!(
            "{name} is neither a fixed name of the contract nor QZX_SECTION__KEY"
        ));
    }
    Ok(path)
}

/// Does `path` name a key of the compiled-in configuration? Optional keys
/// that the file leaves commented out (e.g. `kafka.brokers`) are set through
/// the fixed names, so a `SECTION__KEY` must name a key that is written.
fn key_in(table: &toml::Table, path: &[String]) -> bool {
    let mut cur = table;
    for (i, key) in path.iter().enumerate() {
        match cur.get(key) {
            Some(toml::Value::Table(t)) if i + 1 < path.len() => cur = t,
            Some(_) if i + 1 == path.len() => return true,
            _ => return false,
        }
    }
    false
}

/// A variable's value as figment's environment provider reads it: a TOML
/// scalar where it parses as one (`12`, `true`), else the string.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path.split_last().expect("a path has a key");
    let mut cur = table;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cur = entry.as_table_mut().expect("made a table above");
    }
    cur.insert(last.clone(), value);
}

/// Deep merge of `over` into `base`, as figment's `merge` layers files.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The configuration a process starts with: compiled-in defaults ← `file`
/// ← `env`, checked the way `Config::load` checks it (unknown keys, types,
/// relations). Every `QZX_*` name must be a contract name or name a key
/// written in config/qzx.toml.
fn effective_config(origin: &str, file: Option<&str>, env: &BTreeMap<String, String>) -> Result<Config, String> {
    let defaults = defaults();
    let mut table = defaults.clone();
    if let Some(file) = file {
        let over: toml::Table = file
            .parse()
            .map_err(|e| format!("{origin}: the configuration file is not TOML: {e}"))?;
        merge(&mut table, over);
    }
    for (name, raw) in env.iter().filter(|(n, _)| n.starts_with("QZX_")) {
        let path = config_path(name).map_err(|e| format!("{origin}: {e}"))?;
        let fixed = FIXED_ENV.iter().any(|(f, _)| f == name);
        if !fixed && !key_in(&defaults, &path) {
            return Err(format!(
                "{origin}: {name} sets {}, which is not a key of config/qzx.toml",
                path.join(".")
            ));
        }
        set_path(&mut table, &path, env_value(raw));
    }
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e| format!("{origin}: the effective configuration does not load: {e}"))?;
    config.validate().map_err(|e| format!("{origin}: {e}"))?;
    Ok(config)
}

/// The port of a `host:port` listen address.
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("listen address {listen} has no port"))
}

/// The address the binary listens on for a one-service command: a separate
/// ingest on `ingest.listen`, everything else on `api.listen` (src/main.rs).
fn listen_port(config: &Config, command: &str) -> u16 {
    if command == "ingest" {
        port_of(&config.ingest.listen)
    } else {
        port_of(&config.api.listen)
    }
}

/// The qzx command among a container's arguments.
fn qzx_command(args: &[String]) -> Option<&str> {
    args.iter()
        .map(String::as_str)
        .find(|a| SERVICES.contains(a) || ["all", "demo"].contains(a))
}

fn strings(v: Option<&Yaml>) -> Vec<String> {
    seq(v).iter().filter_map(yaml_str).collect()
}

// ---------------------------------------------------------------- compose

struct ComposeService {
    name: String,
    command: String,
    env: BTreeMap<String, String>,
    stop_grace_s: Option<u64>,
}

fn compose() -> Yaml {
    let mut docs = yaml_docs(&repo().join("deploy/compose.yaml"));
    assert_eq!(docs.len(), 1, "compose.yaml is one document");
    docs.remove(0)
}

/// `environment:` as a map or as a list of `NAME=value`; compose's
/// `${VAR:?message}` interpolation stands for a value set at `up` time.
fn compose_env(service: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Yaml::Mapping(m)) => {
            for (k, v) in m {
                let k = yaml_str(k).expect("environment names are strings");
                env.insert(k, yaml_str(v).unwrap_or_default());
            }
        }
        Some(Yaml::Sequence(items)) => {
            for item in items.iter().filter_map(yaml_str) {
                let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => {}
    }
    for v in env.values_mut() {
        if v.contains("${") {
            *v = "interpolated-at-up".to_owned();
        }
    }
    env
}

fn compose_duration_s(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Some(m) = v.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| m * 60);
    }
    v.strip_suffix('s').unwrap_or(v).parse().ok()
}

fn compose_qzx_services(compose: &Yaml) -> Vec<ComposeService> {
    let services = compose
        .get("services")
        .and_then(Yaml::as_mapping)
        .expect("compose.yaml has services");
    let mut out = Vec::new();
    for (name, svc) in services {
        let name = yaml_str(name).expect("service names are strings");
        let image = get_str(svc, &["image"]).unwrap_or_default();
        if !image.starts_with("qzx") {
            continue;
        }
        let args = strings(svc.get("command"));
        let command = qzx_command(&args)
            .unwrap_or_else(|| panic!("compose service {name} runs no qzx command: {args:?}"))
            .to_owned();
        out.push(ComposeService {
            env: compose_env(svc),
            stop_grace_s: get_str(svc, &["stop_grace_period"]).and_then(|v| compose_duration_s(&v)),
            name,
            command,
        });
    }
    out
}

#[test]
fn compose_qzx_variables_exist_in_the_contract_and_config() {
    let compose = compose();
    let services = compose_qzx_services(&compose);
    assert!(!services.is_empty(), "compose.yaml runs no qzx service");
    for svc in &services {
        let names: Vec<&String> = svc.env.keys().filter(|k| k.starts_with("QZX_")).collect();
        assert!(!names.is_empty(), "{} sets no QZX_ variable", svc.name);
        let config = effective_config(&format!("compose service {}", svc.name), None, &svc.env)
            .unwrap_or_else(|e| panic!("{e}"));
        // A multi-process deployment needs a real broker, Redis and a secret:
        // `qzx ingest|router|api` refuse to start without them.
        assert!(config.kafka.brokers.is_some(), "{}: QZX_KAFKA_BROKERS unset", svc.name);
        assert!(config.redis.url.is_some(), "{}: QZX_REDIS_URL unset", svc.name);
        if svc.command != "router" {
            assert!(config.auth.jwt_secret.is_some(), "{}: QZX_JWT_SECRET unset", svc.name);
        }
    }
}

#[test]
fn compose_runs_two_replicas_of_each_service_that_agree_and_stop_after_the_drain() {
    let compose = compose();
    let services = compose_qzx_services(&compose);
    for command in SERVICES {
        let n = services.iter().filter(|s| s.command == command).count();
        assert_eq!(
            n, 2,
            "compose.yaml runs {n} `qzx {command}` replicas, the topology has 2"
        );
    }
    // Replicas that disagree on these split into two deployments that do not
    // see each other's topics or tokens.
    for shared in [
        "QZX_TOPIC_PREFIX",
        "QZX_JWT_SECRET",
        "QZX_KAFKA_BROKERS",
        "QZX_REDIS_URL",
        "QZX_KAFKA__PARTITIONS",
    ] {
        let values: BTreeSet<Option<&String>> = services.iter().map(|s| s.env.get(shared)).collect();
        assert_eq!(values.len(), 1, "replicas disagree on {shared}: {values:?}");
    }
    for svc in &services {
        let config = effective_config(&svc.name, None, &svc.env).unwrap_or_else(|e| panic!("{e}"));
        let drain_s = config.kafka.drain_timeout_ms.div_ceil(1000);
        let grace = svc
            .stop_grace_s
            .unwrap_or_else(|| panic!("{}: no stop_grace_period (compose's default 10 s is a guess)", svc.name));
        assert!(
            grace > drain_s,
            "{}: stop_grace_period {grace}s is not longer than the drain ({drain_s}s)",
            svc.name
        );
    }
}

#[test]
fn compose_kafka_is_three_kraft_brokers_with_replication_three_and_min_isr_two() {
    let compose = compose();
    let services = compose.get("services").and_then(Yaml::as_mapping).expect("services");
    let mut node_ids = BTreeSet::new();
    let mut voters = BTreeSet::new();
    for (name, svc) in services {
        let image = get_str(svc, &["image"]).unwrap_or_default();
        if !image.starts_with("apache/kafka") {
            continue;
        }
        let name = yaml_str(name).expect("name");
        let env = compose_env(svc);
        let want = [
            ("KAFKA_PROCESS_ROLES", "broker,controller"),
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{name}: {k}");
        }
        node_ids.insert(env.get("KAFKA_NODE_ID").cloned().expect("KAFKA_NODE_ID"));
        voters.insert(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS").cloned().expect("voters"));
        let advertised = env.get("KAFKA_ADVERTISED_LISTENERS").expect("advertised listeners");
        assert!(
            advertised.contains(&name),
            "{name} advertises {advertised}, not its own name"
        );
    }
    assert_eq!(node_ids.len(), 3, "three brokers with distinct node ids");
    assert_eq!(voters.len(), 1, "every broker names the same controller quorum");
    let voters = voters.into_iter().next().unwrap_or_default();
    assert_eq!(voters.split(',').count(), 3, "the quorum has three voters: {voters}");

    // And qzx asks for the replication the cluster offers.
    for svc in compose_qzx_services(&compose) {
        let config = effective_config(&svc.name, None, &svc.env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.kafka.replication, 3, "{}: kafka.replication", svc.name);
        let brokers = config.kafka.brokers.unwrap_or_default();
        assert_eq!(
            brokers.split(',').count(),
            3,
            "{}: bootstraps from every broker: {brokers}",
            svc.name
        );
    }
}

#[test]
fn prometheus_scrapes_every_replica_on_its_listen_port_and_the_proxy_reaches_them() {
    let compose = compose();
    let prometheus = yaml_docs(&repo().join("deploy/prometheus/prometheus.yml"))
        .pop()
        .expect("prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in seq(prometheus.get("scrape_configs")) {
        for sc in seq(job.get("static_configs")) {
            targets.extend(strings(sc.get("targets")));
        }
    }
    let nginx = read(&repo().join("deploy/nginx/nginx.conf"));
    for svc in compose_qzx_services(&compose) {
        let config = effective_config(&svc.name, None, &svc.env).unwrap_or_else(|e| panic!("{e}"));
        let target = format!("{}:{}", svc.name, listen_port(&config, &svc.command));
        assert!(
            targets.contains(&target),
            "prometheus does not scrape {target}: {targets:?}"
        );
        if svc.command != "router" {
            let server = format!("server {target}");
            assert!(nginx.contains(&server), "nginx.conf has no `{server}`");
        }
    }
    assert!(nginx.contains("location /v1/"), "nginx routes /v1/ to ingest");
    assert!(
        nginx.contains("proxy_set_header Upgrade $http_upgrade"),
        "nginx passes WebSocket upgrades through"
    );
}

/// Every `qzx_*` name bus/src/metrics.rs declares.
fn declared_metrics() -> BTreeSet<String> {
    let src = read(&repo().join("bus/src/metrics.rs"));
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("qzx_"))
        .map(str::to_owned)
        .collect()
}

/// Every `qzx_*` metric name used in `text`, without the suffixes
/// Prometheus adds to histograms and summaries.
fn used_metrics(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("qzx_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        let name = &text[start..end];
        if boundary {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            used.insert(base.to_owned());
        }
        i = end.max(start + 4);
    }
    used
}

#[test]
fn dashboards_and_alerts_chart_only_metrics_qzx_exports() {
    let declared = declared_metrics();
    assert!(
        declared.len() > 10,
        "bus/src/metrics.rs lists the metrics: {declared:?}"
    );
    let dashboard = read(&repo().join("deploy/grafana/dashboards/qzx.json"));
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("qzx.json is JSON");
    let mut exprs = String::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    let alerts = read(&repo().join("deploy/prometheus/alerts.yml"));
    for (origin, text) in [("qzx.json", &exprs), ("alerts.yml", &alerts)] {
        let used = used_metrics(text);
        assert!(!used.is_empty(), "{origin} uses no qzx metric");
        let unknown: Vec<&String> = used.difference(&declared).collect();
        assert!(
            unknown.is_empty(),
            "{origin} uses metrics bus/src/metrics.rs does not declare: {unknown:?}"
        );
    }
    // The panels the issue asks for.
    for needed in [
        bus::metrics::INGEST_EVENTS_RECEIVED_TOTAL,
        bus::metrics::ROUTER_SLA_MET_TOTAL,
        bus::metrics::ROUTER_SLA_BREACHED_TOTAL,
        bus::metrics::API_WS_CONNECTIONS,
        bus::metrics::API_WS_PUSHES_TOTAL,
        bus::metrics::INGEST_DEADLETTER_TOTAL,
        bus::metrics::KAFKA_PRODUCE_SECONDS,
        "kafka_consumergroup_lag",
    ] {
        assert!(exprs.contains(needed), "the dashboard has no panel on {needed}");
    }
    // The datasource the panels name is the one provisioned.
    let ds = read(&repo().join("deploy/grafana/provisioning/datasources/prometheus.yml"));
    assert!(
        ds.contains("uid: qzx-prometheus"),
        "datasource uid qzx-prometheus is provisioned"
    );
}

// ------------------------------------------------------------- kubernetes

fn k8s_docs() -> Vec<(String, Yaml)> {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let file = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        for doc in yaml_docs(&f) {
            docs.push((file.clone(), doc));
        }
    }
    docs
}

fn kind_is(doc: &Yaml, kind: &str) -> bool {
    get_str(doc, &["kind"]).as_deref() == Some(kind)
}

fn name_of(doc: &Yaml) -> String {
    get_str(doc, &["metadata", "name"]).unwrap_or_default()
}

fn find<'a>(docs: &'a [(String, Yaml)], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| kind_is(d, kind) && name_of(d) == name)
}

/// One container of a Deployment, with what it is started with resolved:
/// its environment (env values, ConfigMap and Secret references) and the
/// configuration file it mounts.
struct Pod {
    deployment: String,
    command: String,
    env: BTreeMap<String, String>,
    config_file: Option<String>,
    container: Yaml,
    spec: Yaml,
    replicas: i64,
}

fn k8s_pods(docs: &[(String, Yaml)]) -> Vec<Pod> {
    let mut pods = Vec::new();
    for (file, d) in docs.iter().filter(|(_, d)| kind_is(d, "Deployment")) {
        let name = name_of(d);
        let spec = get(d, &["spec", "template", "spec"])
            .cloned()
            .unwrap_or_else(|| panic!("{file}: {name} has no pod spec"));
        let containers = seq(spec.get("containers"));
        assert_eq!(containers.len(), 1, "{file}: {name} runs one container");
        let c = containers[0].clone();
        let args: Vec<String> = strings(c.get("command"))
            .into_iter()
            .chain(strings(c.get("args")))
            .collect();
        let command = qzx_command(&args)
            .unwrap_or_else(|| panic!("{file}: {name} runs no qzx command: {args:?}"))
            .to_owned();

        let mut env = BTreeMap::new();
        for from in seq(c.get("envFrom")) {
            if let Some(cm) = get_str(&from, &["configMapRef", "name"]) {
                let cm_doc = find(docs, "ConfigMap", &cm).unwrap_or_else(|| panic!("{name}: no ConfigMap {cm}"));
                for (k, v) in get(cm_doc, &["data"]).and_then(Yaml::as_mapping).into_iter().flatten() {
                    env.insert(yaml_str(k).unwrap_or_default(), yaml_str(v).unwrap_or_default());
                }
            }
            if let Some(s) = get_str(&from, &["secretRef", "name"]) {
                let s_doc = find(docs, "Secret", &s).unwrap_or_else(|| panic!("{name}: no Secret {s}"));
                for key in ["stringData", "data"] {
                    for (k, v) in get(s_doc, &[key]).and_then(Yaml::as_mapping).into_iter().flatten() {
                        env.insert(yaml_str(k).unwrap_or_default(), yaml_str(v).unwrap_or_default());
                    }
                }
            }
        }
        for e in seq(c.get("env")) {
            let k = get_str(&e, &["name"]).expect("env name");
            let v = if let Some(v) = get_str(&e, &["value"]) {
                v
            } else if let Some(s) = get_str(&e, &["valueFrom", "secretKeyRef", "name"]) {
                let key = get_str(&e, &["valueFrom", "secretKeyRef", "key"]).unwrap_or_default();
                let s_doc = find(docs, "Secret", &s).unwrap_or_else(|| panic!("{name}: {k} from missing Secret {s}"));
                get_str(s_doc, &["stringData", &key])
                    .or_else(|| get_str(s_doc, &["data", &key]))
                    .unwrap_or_else(|| panic!("{name}: {k}: Secret {s} has no key {key}"))
            } else if let Some(cm) = get_str(&e, &["valueFrom", "configMapKeyRef", "name"]) {
                let key = get_str(&e, &["valueFrom", "configMapKeyRef", "key"]).unwrap_or_default();
                let cm_doc = find(docs, "ConfigMap", &cm).unwrap_or_else(|| panic!("{name}: no ConfigMap {cm}"));
                get_str(cm_doc, &["data", &key]).unwrap_or_else(|| panic!("{name}: ConfigMap {cm} has no {key}"))
            } else {
                String::new()
            };
            env.insert(k, v);
        }

        // `--config PATH`, PATH inside a mounted ConfigMap.
        let config_file = args.iter().position(|a| a == "--config").map(|i| {
            let path = args
                .get(i + 1)
                .unwrap_or_else(|| panic!("{name}: --config without a file"));
            let (dir, base) = path
                .rsplit_once('/')
                .unwrap_or_else(|| panic!("{name}: --config {path}"));
            let mount = seq(c.get("volumeMounts"))
                .into_iter()
                .find(|m| get_str(m, &["mountPath"]).as_deref() == Some(dir))
                .unwrap_or_else(|| panic!("{name}: nothing is mounted at {dir}"));
            let vol_name = get_str(&mount, &["name"]).unwrap_or_default();
            let vol = seq(spec.get("volumes"))
                .into_iter()
                .find(|v| get_str(v, &["name"]).as_deref() == Some(vol_name.as_str()))
                .unwrap_or_else(|| panic!("{name}: no volume {vol_name}"));
            let cm =
                get_str(&vol, &["configMap", "name"]).unwrap_or_else(|| panic!("{name}: {vol_name} is no ConfigMap"));
            let cm_doc = find(docs, "ConfigMap", &cm).unwrap_or_else(|| panic!("{name}: no ConfigMap {cm}"));
            get_str(cm_doc, &["data", base]).unwrap_or_else(|| panic!("{name}: ConfigMap {cm} has no {base}"))
        });

        pods.push(Pod {
            deployment: name,
            command,
            env,
            config_file,
            replicas: get_i64(d, &["spec", "replicas"]).unwrap_or(1),
            container: c,
            spec,
        });
    }
    pods
}

fn pod_config(pod: &Pod) -> Config {
    effective_config(
        &format!("Deployment {}", pod.deployment),
        pod.config_file.as_deref(),
        &pod.env,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn k8s_qzx_variables_and_config_file_exist_in_the_contract_and_config() {
    let docs = k8s_docs();
    let pods = k8s_pods(&docs);
    let commands: BTreeSet<&str> = pods.iter().map(|p| p.command.as_str()).collect();
    assert_eq!(
        commands,
        SERVICES.into_iter().collect(),
        "a Deployment for each of ingest, router, api"
    );
    for pod in &pods {
        let config = pod_config(pod);
        assert!(
            config.kafka.brokers.is_some(),
            "{}: QZX_KAFKA_BROKERS unset",
            pod.deployment
        );
        assert!(config.redis.url.is_some(), "{}: QZX_REDIS_URL unset", pod.deployment);
        if pod.command != "router" {
            let secret_ref = seq(pod.container.get("env")).iter().any(|e| {
                get_str(e, &["name"]).as_deref() == Some("QZX_JWT_SECRET")
                    && get(e, &["valueFrom", "secretKeyRef"]).is_some()
            });
            assert!(secret_ref, "{}: QZX_JWT_SECRET comes from a Secret", pod.deployment);
        }
        // Pods are reached from outside their own network namespace.
        let listen = if pod.command == "ingest" {
            &config.ingest.listen
        } else {
            &config.api.listen
        };
        assert!(
            listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
            "{}: listens on {listen}",
            pod.deployment
        );
    }
}

#[test]
fn k8s_every_deployment_is_ready_on_readyz_and_outlives_its_drain() {
    let docs = k8s_docs();
    for pod in k8s_pods(&docs) {
        let config = pod_config(&pod);
        let name = &pod.deployment;
        let port = listen_port(&config, &pod.command);
        let ports = seq(pod.container.get("ports"));
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let got = get_str(&pod.container, &[probe, "httpGet", "path"]);
            assert_eq!(got.as_deref(), Some(path), "{name}: {probe} path");
            // The probe's port, by name or number, is the one qzx listens on.
            let probe_port = get(&pod.container, &[probe, "httpGet", "port"])
                .and_then(yaml_str)
                .unwrap_or_default();
            let number = ports
                .iter()
                .find(|p| get_str(p, &["name"]).as_deref() == Some(probe_port.as_str()))
                .and_then(|p| get_i64(p, &["containerPort"]))
                .or_else(|| probe_port.parse().ok());
            assert_eq!(
                number,
                Some(i64::from(port)),
                "{name}: {probe} port {probe_port} is not the listen port {port}"
            );
        }
        let grace = get_i64(&pod.spec, &["terminationGracePeriodSeconds"])
            .unwrap_or_else(|| panic!("{name}: no terminationGracePeriodSeconds (the default 30 s is a guess)"));
        let pre_stop: i64 = strings(get(&pod.container, &["lifecycle", "preStop", "exec", "command"]))
            .iter()
            .skip_while(|a| *a != "sleep")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .or_else(|| get_i64(&pod.container, &["lifecycle", "preStop", "sleep", "seconds"]))
            .unwrap_or(0);
        let drain_s = i64::try_from(config.kafka.drain_timeout_ms.div_ceil(1000)).unwrap_or(i64::MAX);
        assert!(
            grace > drain_s,
            "{name}: terminationGracePeriodSeconds {grace} is not longer than kafka.drain_timeout_ms ({drain_s}s)"
        );
        assert!(
            grace > pre_stop + drain_s,
            "{name}: terminationGracePeriodSeconds {grace} does not cover preStop {pre_stop}s + drain {drain_s}s"
        );
    }
}

#[test]
fn k8s_topics_are_every_qzx_topic_with_events_and_actions_co_partitioned() {
    let docs = k8s_docs();
    let pods = k8s_pods(&docs);
    let config = pod_config(pods.first().expect("a Deployment"));
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let mut partitions = BTreeMap::new();
    for topic in Topic::ALL {
        let name = topics.name(topic);
        let doc = docs
            .iter()
            .map(|(_, d)| d)
            .find(|d| {
                kind_is(d, "KafkaTopic") && get_str(d, &["spec", "topicName"]).unwrap_or_else(|| name_of(d)) == name
            })
            .unwrap_or_else(|| panic!("no KafkaTopic for {name}"));
        assert!(
            get_str(doc, &["metadata", "labels", "strimzi.io/cluster"]).is_some(),
            "{name}: strimzi.io/cluster label"
        );
        let p = get_i64(doc, &["spec", "partitions"]).unwrap_or_else(|| panic!("{name}: partitions"));
        assert!(p >= 1, "{name}: {p} partitions");
        assert!(
            get_i64(doc, &["spec", "replicas"]).unwrap_or(0) >= 3,
            "{name}: replicas 3"
        );
        assert_eq!(
            get_i64(doc, &["spec", "config", "min.insync.replicas"]),
            Some(2),
            "{name}: min.insync.replicas"
        );
        let policy = get_str(doc, &["spec", "config", "cleanup.policy"]).unwrap_or_else(|| "delete".to_owned());
        assert_eq!(
            policy.contains("compact"),
            topic.compacted(),
            "{name}: cleanup.policy {policy}"
        );
        partitions.insert(topic.suffix(), p);
    }
    let events = partitions["events"];
    assert_eq!(
        events, partitions["actions"],
        "events and actions partitions differ: {partitions:?}"
    );
    // qzx is told the same count, so topics it creates agree with these.
    for pod in &pods {
        let c = pod_config(pod);
        assert_eq!(
            i64::from(c.kafka.partitions),
            events,
            "{}: kafka.partitions",
            pod.deployment
        );
        assert_eq!(
            c.kafka.topic_prefix, config.kafka.topic_prefix,
            "{}: topic prefix",
            pod.deployment
        );
    }
    let topic_count = docs.iter().filter(|(_, d)| kind_is(d, "KafkaTopic")).count();
    assert_eq!(topic_count, Topic::ALL.len(), "one KafkaTopic per qzx topic");
}

#[test]
fn k8s_routers_never_outnumber_partitions_and_everything_scales_and_survives_drains() {
    let docs = k8s_docs();
    let pods = k8s_pods(&docs);
    for pod in &pods {
        let deployment = find(&docs, "Deployment", &pod.deployment).expect("the Deployment");
        let pod_labels = get(deployment, &["spec", "template", "metadata", "labels"])
            .and_then(Yaml::as_mapping)
            .cloned()
            .unwrap_or_default();
        // A PodDisruptionBudget selecting this Deployment's pods.
        let pdb = docs.iter().map(|(_, d)| d).find(|d| {
            kind_is(d, "PodDisruptionBudget")
                && get(d, &["spec", "selector", "matchLabels"])
                    .and_then(Yaml::as_mapping)
                    .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
        });
        assert!(
            pdb.is_some(),
            "{}: no PodDisruptionBudget selects its pods",
            pod.deployment
        );
        assert!(
            pod.replicas >= 2,
            "{}: {} replica(s); one node loss must not stop it",
            pod.deployment,
            pod.replicas
        );
    }

    let router = pods
        .iter()
        .find(|p| p.command == "router")
        .expect("a router Deployment");
    let partitions = i64::from(pod_config(router).kafka.partitions);
    assert!(
        router.replicas <= partitions,
        "{} routers for {partitions} partitions: the rest would sit idle",
        router.replicas
    );
    let hpa_for = |deployment: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| {
                kind_is(d, "HorizontalPodAutoscaler")
                    && get_str(d, &["spec", "scaleTargetRef", "name"]).as_deref() == Some(deployment)
            })
            .unwrap_or_else(|| panic!("no HorizontalPodAutoscaler for {deployment}"))
    };
    let router_hpa = hpa_for(&router.deployment);
    let max = get_i64(router_hpa, &["spec", "maxReplicas"]).expect("maxReplicas");
    assert!(
        max <= partitions,
        "router autoscaler goes to {max} replicas for {partitions} partitions"
    );
    let on_lag = seq(get(router_hpa, &["spec", "metrics"])).iter().any(|m| {
        get_str(m, &["type"]).as_deref() == Some("External")
            && get_str(m, &["external", "metric", "name"]).is_some_and(|n| n.contains("lag"))
    });
    assert!(
        on_lag,
        "the router autoscaler scales on consumer lag (an External metric)"
    );

    let api = pods.iter().find(|p| p.command == "api").expect("an api Deployment");
    let api_hpa = hpa_for(&api.deployment);
    let metrics: Vec<String> = seq(get(api_hpa, &["spec", "metrics"]))
        .iter()
        .filter_map(|m| get_str(m, &["pods", "metric", "name"]).or_else(|| get_str(m, &["resource", "name"])))
        .collect();
    assert!(
        metrics
            .iter()
            .any(|m| m == bus::metrics::API_WS_CONNECTIONS || m == "cpu"),
        "the api autoscaler scales on connections or CPU: {metrics:?}"
    );
}

#[test]
fn k8s_kustomization_lists_every_manifest() {
    let dir = repo().join("deploy/k8s");
    let kustomization = yaml_docs(&dir.join("kustomization.yaml"))
        .pop()
        .expect("kustomization.yaml");
    let listed: BTreeSet<String> = strings(kustomization.get("resources")).into_iter().collect();
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml resources and the files in deploy/k8s differ"
    );
}

// -------------------------------------------------------- the test of tests

#[test]
fn the_checks_catch_what_they_are_for() {
    let ok = BTreeMap::from([("QZX_KAFKA__PARTITIONS".to_owned(), "12".to_owned())]);
    assert_eq!(effective_config("t", None, &ok).map(|c| c.kafka.partitions), Ok(12));
    for (name, value) in [
        ("QZX_KAFKA__PARTITONS", "12"),      // typo in the key
        ("QZX_KAFKA_PARTITIONS", "12"),      // single underscore: not a fixed name
        ("QZX_NOPE__X", "1"),                // no such section
        ("QZX_KAFKA__PARTITIONS", "twelve"), // wrong type
        ("QZX_JWT", "s"),                    // not a contract name
    ] {
        let env = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        assert!(effective_config("t", None, &env).is_err(), "{name}={value} passed");
    }
    assert!(effective_config("t", Some("[kafka]\nparttions = 3\n"), &BTreeMap::new()).is_err());
    let fixed = BTreeMap::from([("QZX_REDIS_URL".to_owned(), "redis://r:6379/0".to_owned())]);
    assert_eq!(
        effective_config("t", None, &fixed).map(|c| c.redis.url),
        Ok(Some("redis://r:6379/0".to_owned()))
    );
    assert_eq!(
        used_metrics("rate(qzx_kafka_produce_duration_seconds_bucket[1m]) + qzx_api_ws_connections"),
        BTreeSet::from([
            "qzx_kafka_produce_duration_seconds".to_owned(),
            "qzx_api_ws_connections".to_owned()
        ])
    );
}

// ---------------------------------------------------------- local cluster

/// The binary the local cluster runs: `QZX_BIN`, else the one cargo built
/// for this test, else the release build.
fn qzx_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("QZX_BIN") {
        return PathBuf::from(bin);
    }
    option_env!("CARGO_BIN_EXE_qzx").map_or_else(|| repo().join("target/release/qzx"), PathBuf::from)
}

/// The local cluster's session timeout, unless the caller sets one: tansu
/// notices a dead member only after it, so it bounds the hand-over. The
/// drain must stay below it.
const LOCAL_SESSION_TIMEOUT: [(&str, &str); 2] = [
    ("QZX_KAFKA__SESSION_TIMEOUT_MS", "4000"),
    ("QZX_KAFKA__DRAIN_TIMEOUT_MS", "2000"),
];

/// `deploy/local-cluster.sh` running in its own state directory; stopped
/// when dropped, whether the test passed or not.
struct LocalCluster {
    dir: PathBuf,
    state: BTreeMap<String, String>,
}

impl LocalCluster {
    fn script(&self, args: &[&str]) {
        let mut command = std::process::Command::new("bash");
        command
            .arg(repo().join("deploy/local-cluster.sh"))
            .args(args)
            .env("LOCAL_CLUSTER_DIR", &self.dir)
            .env("QZX_BIN", qzx_bin())
            .env("LOCAL_PARTITIONS", "10");
        if std::env::var_os(LOCAL_SESSION_TIMEOUT[0].0).is_none() {
            command.envs(LOCAL_SESSION_TIMEOUT);
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("running local-cluster.sh {args:?}: {e}"));
        assert!(status.success(), "local-cluster.sh {args:?} failed: {status}");
    }

    fn start() -> LocalCluster {
        let dir = std::env::temp_dir().join(format!("qzx-local-cluster-{}", bus::model::new_id()));
        let mut cluster = LocalCluster {
            dir,
            state: BTreeMap::new(),
        };
        cluster.script(&["start"]);
        cluster.read_state();
        cluster
    }

    fn read_state(&mut self) {
        self.state = read(&self.dir.join("env"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    }

    fn get(&self, key: &str) -> String {
        self.state
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is not in the local cluster's state"))
    }

    /// Sends `signal` (`KILL` or `TERM`) to one process by name (`router-1`).
    fn kill(&self, name: &str, signal: &str) {
        self.script(&["kill", name, signal]);
    }

    /// Starts a process again on its port (`redis`: an empty one).
    fn restart(&mut self, name: &str) {
        self.script(&["restart", name]);
        self.read_state();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::env::var_os("LOCAL_CLUSTER_KEEP").is_some() {
            eprintln!(
                "LOCAL_CLUSTER_KEEP: the cluster keeps running; state in {}",
                self.dir.display()
            );
            return;
        }
        let stopped = std::process::Command::new("bash")
            .arg(repo().join("deploy/local-cluster.sh"))
            .arg("stop")
            .env("LOCAL_CLUSTER_DIR", &self.dir)
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!(
                "local-cluster.sh stop failed ({stopped:?}); state in {}",
                self.dir.display()
            );
        } else if std::thread::panicking() {
            // The logs are what a failure is diagnosed from.
            eprintln!("the local cluster's logs are in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a WebSocket client saw: `(which api, the push)`.
type Seen = tokio::sync::mpsc::Sender<(String, serde_json::Value)>;

/// Connects to `base`'s `/ws`, sends `hello`, and forwards every push to
/// `seen` until the socket closes.
async fn terminal(label: String, base: &str, token: &str, hello: Vec<serde_json::Value>, seen: Seen) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/ws?token={token}", base.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("{label}: websocket: {e}"));
    for msg in hello {
        ws.send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{label}: send: {e}"));
    }
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                continue;
            };
            if v["type"] == "error" {
                eprintln!("{label}: {v}");
            }
            if v["type"] == "push" && seen.send((label.clone(), v)).await.is_err() {
                return;
            }
        }
    });
}

/// The events a router has handled, from its `/metrics`.
async fn router_events(http: &reqwest::Client, router: &str) -> f64 {
    let text = http
        .get(format!("{router}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics");
    metric_sum(&text, bus::metrics::ROUTER_EVENTS_TOTAL)
}

/// The sum of every series of `metric` in a Prometheus text page.
fn metric_sum(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every record of `topics` under `prefix` from the beginning, read until
/// nothing new arrives for a few seconds.
async fn read_topics(brokers: &str, prefix: &str, topics: &[Topic]) -> Vec<(Topic, serde_json::Value)> {
    let mut config = Config::defaults();
    config.kafka.brokers = Some(brokers.to_owned());
    let group = format!("deploy-test-reader-{}", bus::model::new_id());
    let consumer = bus::Consumer::new(
        &bus::Brokers::External(brokers.to_owned()),
        &config.kafka,
        Topics::new(prefix.to_owned()),
        &group,
        topics,
    )
    .expect("a reader on the cluster's topics");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    let idle = std::time::Duration::from_secs(5);
    while let Ok(next) = tokio::time::timeout(idle, consumer.next(&shutdown)).await {
        let Some(record) = next.expect("reading the topics") else {
            break;
        };
        if let Ok(v) = record.json::<serde_json::Value>() {
            out.push((record.topic, v));
        }
    }
    out
}

/// The "done when", on this machine: two ingest, two router and two
/// api processes on the real broker and Redis (deploy/local-cluster.sh).
///
/// - events posted to either ingest reach unit terminals connected to
///   either api, and both boards see every incident;
/// - the two routers share the jurisdictions (each handles some events);
/// - SIGKILL a router three times, each right after a burst of events (in
///   flight when it dies), starting it again later: the other takes its
///   jurisdictions, every accepted event ends in exactly one incident, no
///   incident version is published with two contents, no task is issued
///   twice (one task per incident and unit), no unit holds two open tasks,
///   every open task is on its incident's latest version, and no unit in
///   the Store is held by a task that is not open; the first hand-over
///   time is printed (on tansu the survivor gets the dead router's
///   partitions only through the consumer's lone-member watchdog,
///   bus/src/kafka/rejoin.rs);
/// - restart Redis empty: no open incident is lost, read from the Store
///   itself (the restarted router rebuilds it from the topics,
///   router/src/rebuild.rs).
///
/// Runs under `scripts/test.sh`, with the debug `qzx` cargo built for the
/// tests; alone: `TEST_STACK=1 cargo test --test deploy -- --nocapture
/// local_cluster` (tansu and redis-server installed; `QZX_BIN` picks
/// another binary). `LOCAL_CLUSTER_KILL=TERM` stops the router gracefully
/// instead (it leaves the group); `LOCAL_CLUSTER_KEEP=1` leaves the cluster
/// running to inspect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_cluster_scales_out_and_hands_over() {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use bus::auth::TokenKeys;
    use bus::model::{Incident, Role, Task};
    use serde_json::json;

    const EVENTS: usize = 120;
    const KILL_AFTER: usize = 40;
    /// When router-1, killed first, is started again.
    const RESTART_FIRST: usize = 60;
    /// Later kills, each right after a burst, and when the killed router
    /// is started again: (kill at, router, restart at).
    const LATER_KILLS: [(usize, &str, usize); 2] = [(75, "router-2", 85), (95, "router-1", 105)];
    /// Events posted back to back just before each kill: in flight when the
    /// router dies.
    const BURST: usize = 12;
    const DEADLINE: Duration = Duration::from_secs(90);

    if !bus::testing::stack_required() {
        println!(
            "skipped: the local cluster test starts tansu, redis-server and six qzx processes; \
             it runs under scripts/test.sh (TEST_STACK=1)"
        );
        return;
    }
    // KILL is the test; TERM (a graceful leave) separates a broker that does
    // not expire dead group members from a qzx fault (README.md, local cluster).
    let signal = std::env::var("LOCAL_CLUSTER_KILL").unwrap_or_else(|_| "KILL".to_owned());
    let mut cluster = tokio::task::block_in_place(LocalCluster::start);
    let config = Config::defaults();
    let keys = TokenKeys::new(&cluster.get("JWT_SECRET"));
    let all = ["*".to_owned()];
    let day = Duration::from_secs(24 * 3600);
    let source = keys.mint("deploy-test", Role::Source, &all, None, day).expect("token");
    let admin = keys
        .mint("deploy-test-admin", Role::Admin, &all, None, day)
        .expect("token");
    let apis = [("api-1", cluster.get("API_1_URL")), ("api-2", cluster.get("API_2_URL"))];
    let ingests = [cluster.get("INGEST_1_URL"), cluster.get("INGEST_2_URL")];

    // A board on each api, and every roster unit on duty at home, its
    // terminal on api-1 or api-2 alternately.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(100_000);
    let mut api_of_unit = HashMap::new();
    for (label, base) in &apis {
        let hello = vec![json!({"op": "subscribe", "id": "b", "channel": "board"})];
        terminal(format!("{label} board"), base, &admin, hello, seen_tx.clone()).await;
    }
    for (i, unit) in config.units.iter().enumerate() {
        let (label, base) = &apis[i % 2];
        let token = keys
            .mint(
                &unit.id,
                Role::Unit,
                std::slice::from_ref(&unit.jurisdiction),
                Some(&unit.id),
                day,
            )
            .expect("token");
        let hello = vec![
            json!({"op": "subscribe", "id": "s", "channel": format!("unit:{}", unit.id)}),
            json!({"op": "status", "id": "a", "status": "available", "lat": unit.home[0], "lon": unit.home[1]}),
        ];
        terminal(format!("{label} unit"), base, &token, hello, seen_tx.clone()).await;
        api_of_unit.insert(unit.id.clone(), *label);
    }
    drop(seen_tx);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Events spread over every jurisdiction, posted to the two ingests in
    // turn; one router is killed a third of the way in.
    let places: Vec<(String, [f64; 2])> = config
        .city
        .jurisdictions
        .iter()
        .filter(|j| !j.area.is_empty())
        .map(|j| (j.id.clone(), j.centre))
        .collect();
    // Where ingest places each event (a jittered call may fall into a
    // neighbouring station area, or none).
    let city = bus::geo::CityMap::new(&config);
    let http = reqwest::Client::new();
    let mut posted: HashMap<String, (Instant, usize, String)> = HashMap::new();
    let mut killed_at = None;
    let mut dead_owned = BTreeSet::new();
    let mut after_kill: Vec<(String, String)> = Vec::new();
    let mut watch = Watch::default();
    let mut kills = 1;
    for i in 0..EVENTS {
        if i == KILL_AFTER {
            watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
            let routers = [cluster.get("ROUTER_1_URL"), cluster.get("ROUTER_2_URL")];
            for page in &routers {
                let handled = router_events(&http, page).await;
                assert!(
                    handled > 0.0,
                    "router at {page} handled no event: the routers do not share the jurisdictions"
                );
                println!("router {page} handled {handled} events before the kill");
            }
            // Which jurisdictions router-1 handles: one probe event each, and
            // the router whose event counter moved.
            for (jurisdiction, [lat, lon]) in &places {
                let before = [
                    router_events(&http, &routers[0]).await,
                    router_events(&http, &routers[1]).await,
                ];
                let event = json!({
                    "source": "call110",
                    "source_id": format!("deploy-test-probe-{jurisdiction}"),
                    "kind": "theft",
                    "location": {"lat": lat, "lon": lon},
                    "text": format!("local cluster probe for {jurisdiction}"),
                });
                let id = post_event(&http, &ingests[0], &source, &event).await;
                posted.insert(id, (Instant::now(), 0, format!("probe {jurisdiction}")));
                watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
                let moved = [
                    router_events(&http, &routers[0]).await > before[0],
                    router_events(&http, &routers[1]).await > before[1],
                ];
                assert_eq!(
                    moved.iter().filter(|m| **m).count(),
                    1,
                    "the probe for {jurisdiction} moved the event counters of routers {moved:?}"
                );
                if moved[0] {
                    dead_owned.insert(city.place(*lat, *lon).jurisdiction);
                }
            }
            assert!(
                !dead_owned.is_empty() && dead_owned.len() < places.len(),
                "router-1 handles {dead_owned:?} of {} jurisdictions: they are not shared",
                places.len()
            );
            println!("router-1 handles {dead_owned:?}");
            burst(&http, &ingests, &source, &places, "first", BURST, &mut posted).await;
            tokio::task::block_in_place(|| cluster.kill("router-1", &signal));
            killed_at = Some(Instant::now());
        }
        // Each step waits until every event posted so far reached the
        // boards: the hand-over before it is complete. (Kills and restarts
        // a second apart leave tansu 0.6's group coordinator assigning some
        // partitions to no live member, whatever the routers do.)
        if i == RESTART_FIRST {
            watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
            tokio::task::block_in_place(|| cluster.restart("router-1"));
        }
        for (kill_at, router, restart_at) in LATER_KILLS {
            if i == kill_at {
                watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
                burst(&http, &ingests, &source, &places, router, BURST, &mut posted).await;
                tokio::task::block_in_place(|| cluster.kill(router, &signal));
                kills += 1;
            }
            if i == restart_at {
                watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
                tokio::task::block_in_place(|| cluster.restart(router));
            }
        }
        let (jurisdiction, [lat, lon]) = &places[i % places.len()];
        // Spread within a few hundred metres so not every call is a repeat.
        let jitter = (i / places.len()) as f64 * 0.0008;
        let kind = ["theft", "assault", "robbery", "fraud"][i % 4];
        let event = json!({
            "source": "call110",
            "source_id": format!("deploy-test-{i}"),
            "kind": kind,
            "location": {"lat": lat + jitter, "lon": lon - jitter},
            "text": format!("local cluster scale-out test call {i}"),
        });
        let ingest = &ingests[i % 2];
        let id = post_event(&http, ingest, &source, &event).await;
        if killed_at.is_some() {
            after_kill.push((id.clone(), city.place(lat + jitter, lon - jitter).jurisdiction));
        }
        let after = if killed_at.is_some() { "after" } else { "before" };
        posted.insert(
            id,
            (Instant::now(), i % 2, format!("#{i} {jurisdiction} {after} the kill")),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_at = killed_at.expect("the kill happened");

    // Every accepted event reaches both boards.
    watch.until_all_seen(&mut seen_rx, &posted, DEADLINE).await;
    let handover = posted
        .iter()
        .filter(|(_, (at, _, _))| *at >= killed_at)
        .filter_map(|(id, (at, _, _))| watch.first_seen.get(id).map(|seen| seen.duration_since(*at)))
        .max()
        .unwrap_or_default();
    println!("hand-over: the slowest event posted after SIG{signal} of router-1 reached a board after {handover:?}");
    // The hand-over proper: from the kill to the first incident on a board
    // for a jurisdiction router-1 handled (all earlier events were seen
    // before the kill, so the survivor made it).
    let taken_over = after_kill
        .iter()
        .filter(|(_, jurisdiction)| dead_owned.contains(jurisdiction))
        .filter_map(|(id, _)| watch.first_seen.get(id))
        .min()
        .map(|seen| seen.duration_since(killed_at))
        .expect("an event of router-1's jurisdictions was posted after the kill and seen");
    println!(
        "hand-over: the first incident for router-1's jurisdictions reached a board {taken_over:?} after SIG{signal}"
    );

    // The topics: each accepted event in exactly one incident; one task per
    // incident and unit, whatever was replayed after the kill.
    let records = read_topics(
        &cluster.get("KAFKA_BROKERS"),
        &cluster.get("TOPIC_PREFIX"),
        &[Topic::Incidents, Topic::Tasks],
    )
    .await;
    let mut incidents_of_event: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut latest: HashMap<String, Incident> = HashMap::new();
    let mut latest_task: HashMap<String, Task> = HashMap::new();
    let mut versions: HashMap<(String, u64), serde_json::Value> = HashMap::new();
    let mut task_ids: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    let mut tasks_of_incident: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (topic, value) in records {
        match topic {
            Topic::Incidents => {
                let incident: Incident = serde_json::from_value(value.clone()).expect("an incident");
                let seen = versions
                    .entry((incident.id.clone(), incident.version))
                    .or_insert_with(|| value.clone());
                assert_eq!(
                    *seen, value,
                    "incident {} v{} was published twice with two contents",
                    incident.id, incident.version
                );
                for e in &incident.events {
                    incidents_of_event
                        .entry(e.clone())
                        .or_default()
                        .insert(incident.id.clone());
                }
                if latest.get(&incident.id).is_none_or(|l| l.version < incident.version) {
                    latest.insert(incident.id.clone(), incident);
                }
            }
            Topic::Tasks => {
                let task: Task = serde_json::from_value(value).expect("a task");
                if latest_task.get(&task.id).is_none_or(|t| t.version < task.version) {
                    latest_task.insert(task.id.clone(), task.clone());
                }
                task_ids
                    .entry((task.incident.clone(), task.unit.clone()))
                    .or_default()
                    .insert(task.id.clone());
                tasks_of_incident
                    .entry(task.incident.clone())
                    .or_default()
                    .insert(task.id);
            }
            _ => {}
        }
    }
    for id in posted.keys() {
        let n = incidents_of_event.get(id).map_or(0, BTreeSet::len);
        assert_eq!(n, 1, "event {id} is in {n} incidents");
    }
    for ((incident, unit), ids) in &task_ids {
        assert_eq!(
            ids.len(),
            1,
            "unit {unit} got {} tasks for incident {incident}: {ids:?}",
            ids.len()
        );
    }
    // No unit holds two open tasks, and every open task is on its
    // incident's latest version.
    let mut open_tasks: HashMap<&str, Vec<&str>> = HashMap::new();
    for task in latest_task.values().filter(|t| t.status.is_open()) {
        open_tasks.entry(task.unit.as_str()).or_default().push(task.id.as_str());
        let incident = &latest[&task.incident];
        assert!(
            incident.units.iter().any(|u| u.task == task.id && u.status.is_open()),
            "open task {} is not open on incident {} v{}",
            task.id,
            incident.id,
            incident.version
        );
    }
    for (unit, tasks) in &open_tasks {
        assert_eq!(tasks.len(), 1, "unit {unit} holds open tasks {tasks:?}");
    }
    // The Store agrees: no unit is assigned to a task that is not open (a
    // claim a killed router left is freed by the reconciler within ~20 s).
    let store = bus::store::RedisStore::connect(&cluster.get("REDIS_URL"), &config.redis.key_prefix)
        .await
        .expect("the cluster's redis");
    let start = Instant::now();
    loop {
        let units = bus::store::Store::units(&store).await.expect("units");
        let stray: Vec<String> = units
            .iter()
            .filter(|u| u.task.is_some())
            .filter(|u| {
                !u.task
                    .as_ref()
                    .and_then(|t| latest_task.get(t))
                    .is_some_and(|t| t.status.is_open())
            })
            .map(|u| format!("{} ({:?})", u.id, u.task))
            .collect();
        if stray.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "units held by tasks that are not open: {stray:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "{kills} router kills, each right after a burst: every event in one incident, no forked version, no stray claim"
    );

    // Tasks reached terminals on both apis, from events of both ingests.
    let mut apis_reached = BTreeSet::new();
    let mut ingests_reaching = BTreeSet::new();
    for (id, (_, ingest, _)) in &posted {
        let Some(incident) = incidents_of_event.get(id).and_then(|s| s.iter().next()) else {
            continue;
        };
        for task in tasks_of_incident.get(incident).into_iter().flatten() {
            if let Some(api) = watch.tasks.get(task) {
                apis_reached.insert(api.clone());
                ingests_reaching.insert(*ingest);
            }
        }
    }
    assert_eq!(
        apis_reached.len(),
        2,
        "tasks reached terminals on {apis_reached:?} only"
    );
    assert_eq!(
        ingests_reaching.len(),
        2,
        "only events from ingest {ingests_reaching:?} reached a terminal"
    );

    // Redis restarted empty: the restarted router rebuilds the store from
    // the topics, and every open incident is back on both apis.
    let open: BTreeSet<String> = latest
        .values()
        .filter(|i| i.status.is_open())
        .map(|i| i.id.clone())
        .collect();
    assert!(!open.is_empty(), "no open incident to lose");
    tokio::task::block_in_place(|| {
        cluster.restart("redis");
        cluster.restart("router-1");
    });
    // Read from the Store itself: the apis' views would answer from memory
    // even if nothing was rebuilt.
    let store = bus::store::RedisStore::connect(&cluster.get("REDIS_URL"), &config.redis.key_prefix)
        .await
        .expect("the restarted redis");
    let start = Instant::now();
    loop {
        let stored: BTreeSet<String> = bus::store::Store::open_incidents(&store)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.id)
            .collect();
        let missing: Vec<&String> = open.difference(&stored).collect();
        if missing.is_empty() {
            break;
        }
        if start.elapsed() >= DEADLINE {
            let mut why = Vec::new();
            for id in &missing {
                let in_store = bus::store::Store::incident(&store, id).await.ok().flatten();
                why.push(format!(
                    "{id}: v{} {} on the topic, {:?} in the store",
                    latest[*id].version,
                    latest[*id].status.as_str(),
                    in_store.map(|i| (i.version, i.status.as_str()))
                ));
            }
            panic!(
                "the store lost {} open incidents after Redis restarted empty: {why:#?}",
                missing.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{} open incidents survived Redis restarting empty", open.len());
}

/// Posts `count` events back to back (no wait between them), one per
/// jurisdiction in turn, so they are still in flight when a router is
/// killed right after.
async fn burst(
    http: &reqwest::Client,
    ingests: &[String; 2],
    token: &str,
    places: &[(String, [f64; 2])],
    label: &str,
    count: usize,
    posted: &mut std::collections::HashMap<String, (std::time::Instant, usize, String)>,
) {
    for b in 0..count {
        let (jurisdiction, [lat, lon]) = &places[b % places.len()];
        let event = serde_json::json!({
            "source": "call110",
            "source_id": format!("deploy-test-burst-{label}-{b}"),
            "kind": "theft",
            "location": {"lat": lat + 0.0003 * b as f64, "lon": lon},
            "text": format!("local cluster burst {label} {b}"),
        });
        let id = post_event(http, &ingests[b % 2], token, &event).await;
        posted.insert(
            id,
            (
                std::time::Instant::now(),
                b % 2,
                format!("burst {label} {b} {jurisdiction}"),
            ),
        );
    }
}

/// Posts one event, retrying a 503 (the 202 comes only once Kafka has it;
/// the same source_id makes the retry idempotent). The accepted event's id.
async fn post_event(http: &reqwest::Client, ingest: &str, token: &str, event: &serde_json::Value) -> String {
    for _ in 0..50 {
        let response = http
            .post(format!("{ingest}/v1/events"))
            .bearer_auth(token)
            .json(event)
            .send()
            .await
            .expect("posting an event");
        let status = response.status();
        if status.as_u16() == 503 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        let body: serde_json::Value = response.json().await.expect("a JSON answer");
        assert_eq!(status.as_u16(), 202, "ingest {ingest} answered {status}: {body}");
        return body["accepted"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no accepted id in {body}"))
            .to_owned();
    }
    panic!("ingest {ingest} answered 503 for 10 s");
}

/// What the boards and terminals have shown so far.
#[derive(Default)]
struct Watch {
    /// Event ids each board has seen in an incident.
    on_board: BTreeMap<String, BTreeSet<String>>,
    /// When each event id was first seen on any board.
    first_seen: std::collections::HashMap<String, std::time::Instant>,
    /// Task id → the api whose terminal it was pushed to.
    tasks: std::collections::HashMap<String, String>,
}

impl Watch {
    /// Reads pushes until both boards have seen every posted event in an
    /// incident; panics with what is missing after `deadline`.
    async fn until_all_seen(
        &mut self,
        seen: &mut tokio::sync::mpsc::Receiver<(String, serde_json::Value)>,
        posted: &std::collections::HashMap<String, (std::time::Instant, usize, String)>,
        deadline: std::time::Duration,
    ) {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let done = ["api-1 board", "api-2 board"].iter().all(|b| {
                self.on_board
                    .get(*b)
                    .is_some_and(|s| posted.keys().all(|id| s.contains(id)))
            });
            if done {
                return;
            }
            let Ok(Some((label, push))) = tokio::time::timeout_at(until, seen.recv()).await else {
                let missing: BTreeMap<&str, BTreeSet<&String>> = ["api-1 board", "api-2 board"]
                    .into_iter()
                    .map(|b| {
                        let s = self.on_board.get(b);
                        let m = posted
                            .iter()
                            .filter(|(id, _)| !s.is_some_and(|s| s.contains(*id)))
                            .map(|(_, p)| &p.2)
                            .collect();
                        (b, m)
                    })
                    .collect();
                panic!("not every posted event reached both boards within {deadline:?}; missing: {missing:#?}");
            };
            let api = label.split(' ').next().unwrap_or_default().to_owned();
            match push["kind"].as_str() {
                Some("incident") => {
                    for e in push["data"]["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str())
                    {
                        self.first_seen
                            .entry(e.to_owned())
                            .or_insert_with(std::time::Instant::now);
                        self.on_board.entry(label.clone()).or_default().insert(e.to_owned());
                    }
                }
                Some("task") => {
                    if let Some(id) = push["data"]["id"].as_str() {
                        self.tasks.insert(id.to_owned(), api);
                    }
                }
                _ => {}
            }
        }
    }
}
