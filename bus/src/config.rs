//! Configuration: compiled-in `config/qzx.toml` ← `--config FILE` ←
//! environment (`QZX_SECTION__KEY`, plus the fixed names of the contract).
//!
//! Every struct denies unknown fields, so a typo is an error that names the
//! key; relations between keys are checked in [`Config::validate`]. This
//! module must never read anything but the files and environment it is
//! given.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::model::UnitType;

mod dispatch;
mod ladder;

pub use dispatch::{DispatchConfig, DispatchMode};
pub use ladder::LadderConfig;

/// The compiled-in defaults: the demo city.
pub const DEFAULT_TOML: &str = include_str!("../../config/qzx.toml");

/// The contract's fixed environment names and the keys they set.
const FIXED_ENV: [(&str, &str); 7] = [
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("REDIS_URL", "redis.url"),
    ("TOPIC_PREFIX", "kafka.topic_prefix"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("LISTEN", "api.listen"),
    ("INGEST_LISTEN", "ingest.listen"),
    ("MQTT_URL", "mqtt.url"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file, bad TOML, unknown key or wrong type; figment's
    /// message names the key and where it came from.
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub ingest: IngestConfig,
    pub mqtt: MqttConfig,
    pub api: ApiConfig,
    pub http: HttpConfig,
    pub router: RouterConfig,
    pub dispatch: DispatchConfig,
    pub ladder: LadderConfig,
    pub sim: SimConfig,
    pub city: CityConfig,
    pub desks: Vec<Desk>,
    pub categories: Vec<Category>,
    pub sla: Vec<SlaTarget>,
    pub units: Vec<RosterUnit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; `None` means the embedded broker.
    pub brokers: Option<String>,
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication: i32,
    pub linger_ms: u64,
    /// Longest a broker may hold a fetch that finds no record.
    pub fetch_wait_max_ms: u64,
    pub delivery_timeout_ms: u64,
    pub group_prefix: String,
    pub session_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub embedded_brokers: i32,
}

impl KafkaConfig {
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `None` means the in-memory store.
    pub url: Option<String>,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret. Never printed by `check-config`.
    #[serde(serialize_with = "redact")]
    pub jwt_secret: Option<String>,
}

fn redact<S: serde::Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("<set>"),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// `<info>` elements one CAP alert may carry: each becomes an event.
    pub max_cap_infos: usize,
    pub max_source_id_chars: usize,
    pub max_text_chars: usize,
    pub max_address_chars: usize,
    pub max_attrs_bytes: usize,
    pub idempotency_window_s: u64,
    pub max_future_skew_s: i64,
    pub retry_after_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: Option<String>,
    pub topic: String,
    pub client_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    pub ws_queue: usize,
    pub ws_read_buffer_bytes: usize,
    pub ws_max_message_bytes: usize,
    pub ws_ping_interval_s: u64,
    pub ws_idle_timeout_s: u64,
    pub history_max_age_s: u64,
    pub history_max_len: usize,
    pub close_grace_ms: u64,
}

/// The HTTP edge of every process (ingest and api): what one client may
/// hold of a server before it is cut off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once before a WebSocket upgrade (more wait in
    /// the kernel's backlog).
    pub max_connections: usize,
    /// A request's headers must arrive within this, or the connection is
    /// closed: a client trickling header bytes holds nothing for long.
    pub header_read_timeout_s: u64,
    /// A request body must arrive within this (ingest answers 408).
    pub body_read_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    pub repeat_distance_m: f64,
    pub repeat_window_s: u64,
    pub fusion_distance_m: f64,
    pub fusion_window_s: u64,
    pub search_radius_m: f64,
    pub candidate_units: usize,
    pub road_factor: f64,
    pub supervisor_desk: String,
    pub command_desk: String,
    pub default_agency: String,
    pub clock_tick_ms: u64,
    pub speeds_kmh: BTreeMap<String, f64>,
    pub keywords: Vec<KeywordRule>,
    pub sensitive_places: Vec<SensitivePlace>,
    pub night: NightRule,
}

impl RouterConfig {
    /// Travel speed of a unit type for the estimate, km/h.
    pub fn speed_kmh(&self, unit_type: UnitType) -> f64 {
        self.speeds_kmh.get(unit_type.as_str()).copied().unwrap_or(30.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    pub words: Vec<String>,
    pub score: u8,
    /// A sign of danger: keeps a divertible call with the police.
    pub danger: bool,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivePlace {
    pub name: String,
    pub kind: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    pub score: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightRule {
    pub start_hour: u32,
    pub end_hour: u32,
    pub utc_offset_hours: i32,
    pub score: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub calls_per_hour: f64,
    pub sensor_alarms_per_hour: f64,
    pub cap_alerts_per_hour: f64,
    pub repeat_share: f64,
    pub false_alarm_share: f64,
    pub late_ack_share: f64,
    pub speed: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CityConfig {
    pub name: String,
    pub name_en: String,
    pub h3_resolution: u8,
    pub fallback_jurisdiction: String,
    pub jurisdictions: Vec<Jurisdiction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaType {
    Urban,
    Suburban,
    Rural,
}

/// A station area (派出所辖区).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jurisdiction {
    pub id: String,
    pub name: String,
    pub name_en: String,
    /// `[lat, lon]`.
    pub centre: [f64; 2],
    pub area_type: AreaType,
    /// Polygon of `[lat, lon]` points; empty for the fallback.
    pub area: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desk {
    pub id: String,
    pub name: String,
    pub name_en: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub code: String,
    pub name: String,
    pub name_en: String,
    pub base_priority: u8,
    pub desks: Vec<String>,
    /// A non-police matter handed to this agency unless the text shows
    /// danger.
    #[serde(default)]
    pub divert_to: Option<String>,
    /// Kinds that count as the same matter for repeat linking.
    #[serde(default)]
    pub related: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub area_type: AreaType,
    pub priority: u8,
    pub respond_s: u64,
    pub arrive_s: u64,
    pub reinforce_s: u64,
    pub reinforce_units: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterUnit {
    pub id: String,
    #[serde(rename = "type")]
    pub unit_type: UnitType,
    pub jurisdiction: String,
    pub name: String,
    /// `[lat, lon]` where the unit starts its shift.
    pub home: [f64; 2],
}

impl Config {
    /// The layered configuration: defaults ← `file` ← environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, env_provider())
    }

    /// Only the compiled-in defaults, for tests and tools.
    pub fn defaults() -> Config {
        let config: Config = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("compiled-in config/qzx.toml parses");
        config.validate().expect("compiled-in config/qzx.toml is valid");
        config
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid("--config", format!("{} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: references between sections and
    /// relations between values. Names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dispatch.validate()?;
        self.ladder.validate()?;
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if self.http.header_read_timeout_s == 0 || self.http.body_read_timeout_s == 0 {
            return Err(invalid("http.header_read_timeout_s", "timeouts must be at least 1 s"));
        }
        let k = &self.kafka;
        if k.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if k.replication < 1 {
            return Err(invalid("kafka.replication", "must be at least 1"));
        }
        if k.drain_timeout_ms >= k.session_timeout_ms {
            return Err(invalid(
                "kafka.drain_timeout_ms",
                format!(
                    "{} must be below kafka.session_timeout_ms ({}), or the group rebalances while draining",
                    k.drain_timeout_ms, k.session_timeout_ms
                ),
            ));
        }
        if k.fetch_wait_max_ms < 1 {
            return Err(invalid(
                "kafka.fetch_wait_max_ms",
                "must be at least 1: 0 makes every idle consumer poll in a busy loop",
            ));
        }
        if k.embedded_brokers < 1 {
            return Err(invalid("kafka.embedded_brokers", "must be at least 1"));
        }
        if self.city.h3_resolution > 15 {
            return Err(invalid("city.h3_resolution", "H3 resolutions are 0 to 15"));
        }
        if self.api.ws_queue == 0 {
            return Err(invalid("api.ws_queue", "must be at least 1"));
        }
        if self.ingest.max_cap_infos == 0 {
            return Err(invalid("ingest.max_cap_infos", "must be at least 1"));
        }
        if self.ingest.max_batch == 0 {
            return Err(invalid("ingest.max_batch", "must be at least 1"));
        }

        let jurisdictions = unique_ids(
            self.city.jurisdictions.iter().map(|j| j.id.as_str()),
            "city.jurisdictions",
        )?;
        if !jurisdictions.contains(self.city.fallback_jurisdiction.as_str()) {
            return Err(invalid(
                "city.fallback_jurisdiction",
                format!("'{}' is not a jurisdiction", self.city.fallback_jurisdiction),
            ));
        }
        for (i, j) in self.city.jurisdictions.iter().enumerate() {
            check_lat_lon(&format!("city.jurisdictions[{i}].centre"), j.centre)?;
            if !j.area.is_empty() && j.area.len() < 3 {
                return Err(invalid(
                    format!("city.jurisdictions[{i}].area"),
                    "a polygon needs at least 3 points",
                ));
            }
            for (p, point) in j.area.iter().enumerate() {
                check_lat_lon(&format!("city.jurisdictions[{i}].area[{p}]"), *point)?;
            }
        }

        let desks = unique_ids(self.desks.iter().map(|d| d.id.as_str()), "desks")?;
        for key in [
            ("router.supervisor_desk", &self.router.supervisor_desk),
            ("router.command_desk", &self.router.command_desk),
        ] {
            if !desks.contains(key.1.as_str()) {
                return Err(invalid(key.0, format!("'{}' is not a desk", key.1)));
            }
        }

        let codes = unique_ids(self.categories.iter().map(|c| c.code.as_str()), "categories")?;
        for required in crate::REQUIRED_KINDS {
            if !codes.contains(required) {
                return Err(invalid("categories", format!("the category '{required}' is missing")));
            }
        }
        for (i, c) in self.categories.iter().enumerate() {
            check_priority(&format!("categories[{i}].base_priority"), c.base_priority)?;
            for d in &c.desks {
                if !desks.contains(d.as_str()) {
                    return Err(invalid(
                        format!("categories[{i}].desks"),
                        format!("'{d}' is not a desk"),
                    ));
                }
            }
            for r in &c.related {
                if !codes.contains(r.as_str()) {
                    return Err(invalid(
                        format!("categories[{i}].related"),
                        format!("'{r}' is not a category"),
                    ));
                }
            }
        }

        let area_types: HashSet<AreaType> = self.city.jurisdictions.iter().map(|j| j.area_type).collect();
        for (i, s) in self.sla.iter().enumerate() {
            check_priority(&format!("sla[{i}].priority"), s.priority)?;
            if !(s.respond_s <= s.arrive_s && s.arrive_s <= s.reinforce_s) {
                return Err(invalid(
                    format!("sla[{i}]"),
                    "targets must satisfy respond_s <= arrive_s <= reinforce_s",
                ));
            }
        }
        for area_type in area_types {
            for priority in 1..=4 {
                if self.sla_target(area_type, priority).is_none() {
                    return Err(invalid(
                        "sla",
                        format!("no target for area_type {area_type:?} and priority {priority}"),
                    ));
                }
            }
        }

        unique_ids(self.units.iter().map(|u| u.id.as_str()), "units")?;
        for (i, u) in self.units.iter().enumerate() {
            if !jurisdictions.contains(u.jurisdiction.as_str()) {
                return Err(invalid(
                    format!("units[{i}].jurisdiction"),
                    format!("'{}' is not a jurisdiction", u.jurisdiction),
                ));
            }
            check_lat_lon(&format!("units[{i}].home"), u.home)?;
        }
        for t in UnitType::ALL {
            if let Some(speed) = self.router.speeds_kmh.get(t.as_str())
                && *speed <= 0.0
            {
                return Err(invalid(format!("router.speeds_kmh.{}", t.as_str()), "must be positive"));
            }
        }
        for name in self.router.speeds_kmh.keys() {
            if UnitType::parse(name).is_none() {
                return Err(invalid(format!("router.speeds_kmh.{name}"), "not a unit type"));
            }
        }
        Ok(())
    }

    pub fn category(&self, code: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.code == code)
    }

    pub fn jurisdiction(&self, id: &str) -> Option<&Jurisdiction> {
        self.city.jurisdictions.iter().find(|j| j.id == id)
    }

    pub fn sla_target(&self, area_type: AreaType, priority: u8) -> Option<&SlaTarget> {
        self.sla
            .iter()
            .find(|s| s.area_type == area_type && s.priority == priority)
    }
}

/// `QZX_*` variables: the contract's fixed names, then `SECTION__KEY`.
fn env_provider() -> Env {
    Env::prefixed("QZX_")
        .map(|key| {
            let upper = key.as_str().to_ascii_uppercase();
            match FIXED_ENV.iter().find(|(name, _)| *name == upper) {
                Some((_, path)) => path.replace('.', "__").into(),
                None => key.into(),
            }
        })
        .split("__")
}

fn unique_ids<'a>(ids: impl Iterator<Item = &'a str>, key: &str) -> Result<HashSet<&'a str>, ConfigError> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err(invalid(key, "an id is empty"));
        }
        if !seen.insert(id) {
            return Err(invalid(key, format!("'{id}' appears twice")));
        }
    }
    Ok(seen)
}

fn check_priority(key: &str, priority: u8) -> Result<(), ConfigError> {
    if (1..=4).contains(&priority) {
        Ok(())
    } else {
        Err(invalid(key, format!("priority {priority} is not in 1..=4")))
    }
}

fn check_lat_lon(key: &str, [lat, lon]: [f64; 2]) -> Result<(), ConfigError> {
    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
        Ok(())
    } else {
        Err(invalid(key, format!("[{lat}, {lon}] is not a [lat, lon] point")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("qzx-config-{}.toml", crate::model::new_id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(contents.as_bytes())
            .unwrap();
        path
    }

    fn load(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // figment's Env reads the process environment; `Jail` isolates it.
        let mut result = None;
        #[allow(clippy::result_large_err)] // figment's Jail API, not ours
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            result = Some(Config::load(file));
            Ok(())
        });
        result.unwrap()
    }

    #[test]
    fn compiled_in_defaults_are_valid_and_describe_jinan() {
        let c = Config::defaults();
        assert_eq!(c.city.name, "济南");
        assert!(c.kafka.brokers.is_none());
        assert!(c.redis.url.is_none());
        for kind in crate::REQUIRED_KINDS {
            assert!(c.category(kind).is_some(), "{kind}");
        }
        assert_eq!(c.category("noise").unwrap().divert_to.as_deref(), Some("12345"));
        assert!(c.city.jurisdictions.len() >= 5);
        assert!(c.units.len() >= 10);
    }

    #[test]
    fn fixed_environment_names_set_their_keys() {
        let c = load(
            None,
            &[
                ("QZX_KAFKA_BROKERS", "127.0.0.1:9092"),
                ("QZX_REDIS_URL", "redis://127.0.0.1:6379/0"),
                ("QZX_TOPIC_PREFIX", "t1."),
                ("QZX_JWT_SECRET", "s3cret"),
                ("QZX_LISTEN", "127.0.0.1:9000"),
                ("QZX_INGEST_LISTEN", "127.0.0.1:9001"),
                ("QZX_MQTT_URL", "mqtt://127.0.0.1:1883"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(c.redis.url.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(c.kafka.topic_prefix, "t1.");
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.api.listen, "127.0.0.1:9000");
        assert_eq!(c.ingest.listen, "127.0.0.1:9001");
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
    }

    #[test]
    fn section_key_environment_overrides_the_file() {
        let path = write_temp("[kafka]\npartitions = 3\n[api]\nws_queue = 64\n");
        let c = load(Some(&path), &[("QZX_KAFKA__PARTITIONS", "12")]).unwrap();
        assert_eq!(c.kafka.partitions, 12);
        assert_eq!(c.api.ws_queue, 64);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let path = write_temp("[kafka]\npartitons = 3\n");
        let err = load(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("partitons"), "{err}");

        let err = load(None, &[("QZX_API__WS_QEUE", "3")]).unwrap_err().to_string();
        assert!(err.contains("ws_qeue"), "{err}");

        let err = load(None, &[("QZX_NOPE", "1")]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = load(None, &[("QZX_KAFKA__PARTITIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains("kafka.partitions"), "{err}");
    }

    #[test]
    fn relations_are_checked_with_the_key_named() {
        let path = write_temp("[kafka]\ndrain_timeout_ms = 20000\nsession_timeout_ms = 10000\n");
        let err = load(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("kafka.drain_timeout_ms"), "{err}");

        let err = load(None, &[("QZX_KAFKA__FETCH_WAIT_MAX_MS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.fetch_wait_max_ms"), "{err}");

        let err = load(None, &[("QZX_CITY__FALLBACK_JURISDICTION", "atlantis")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("city.fallback_jurisdiction") && err.contains("atlantis"),
            "{err}"
        );

        let err = load(None, &[("QZX_ROUTER__SUPERVISOR_DESK", "nobody")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("router.supervisor_desk"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/qzx.toml")), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/qzx.toml"), "{err}");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let c = load(None, &[("QZX_JWT_SECRET", "s3cret")]).unwrap();
        let shown = serde_json::to_string(&c).unwrap();
        assert!(!shown.contains("s3cret"));
    }
}
