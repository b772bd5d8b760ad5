//! What the simulated city reports, and when: 110 calls with a daily rhythm
//! (Poisson arrivals whose rate follows the hour of the local day), repeat
//! calls about the same matter, sensor alarms (some false), and now and then
//! a CAP alert — as the input events and CAP documents a source system would
//! send.
//!
//! Deterministic: for one seed and run tag the sequence of planned items is
//! always the same, so `--seed` repeats a run. Everything random comes from
//! the one seeded generator, drawn in a fixed order. No IO and no clocks here:
//! times are offsets of simulated time from the start of the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bus::config::SimConfig;
use bus::{Config, model::Source};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::city::Grid;

/// Relative rate of 110 calls by local hour (1.0 at the evening peak, low
/// at 4 am), interpolated linearly between hours.
const DAILY_RHYTHM: [f64; 24] = [
    0.55, 0.45, 0.35, 0.25, 0.20, 0.22, 0.30, 0.45, 0.60, 0.65, 0.70, 0.72, 0.70, 0.68, 0.70, 0.72, 0.75, 0.80, 0.88,
    0.95, 1.00, 1.00, 0.90, 0.72,
];

/// Relative call rate at a local hour of the day (any real number; wraps).
pub fn rhythm(hour_of_day: f64) -> f64 {
    let h = hour_of_day.rem_euclid(24.0);
    let i = h.floor() as usize % 24;
    let f = h - h.floor();
    DAILY_RHYTHM[i] * (1.0 - f) + DAILY_RHYTHM[(i + 1) % 24] * f
}

/// Sensors fire around the clock; people and traffic add to it by day.
fn sensor_rhythm(hour_of_day: f64) -> f64 {
    0.6 + 0.4 * rhythm(hour_of_day)
}

/// A call kind, how often it is called in, and what callers say. `{addr}`
/// is replaced by the address. Kinds the configuration does not know
/// (`suspicious_person`, `lost_property`) are sent as they are: ingest
/// must accept them as `unknown` (有警必接).
struct CallKind {
    kind: &'static str,
    weight: u32,
    texts: &'static [&'static str],
}

const CALL_KINDS: [CallKind; 12] = [
    CallKind {
        kind: "theft",
        weight: 17,
        texts: &[
            "{addr}电动车被盗，车锁被撬",
            "我的手机在{addr}公交站被偷了",
            "{addr}小区停的车被砸，车内财物被盗",
            "{addr}商场里发现有人扒窃，已经跑了",
        ],
    },
    CallKind {
        kind: "dispute",
        weight: 14,
        texts: &[
            "{addr}两人因停车发生纠纷，吵得很凶",
            "{addr}商铺和顾客发生争执，请民警过来处理",
            "{addr}邻里纠纷，双方争吵激烈，已经开始打人",
            "{addr}出租车司机和乘客因车费发生纠纷",
        ],
    },
    CallKind {
        kind: "traffic_accident",
        weight: 13,
        texts: &[
            "{addr}两车追尾，无人受伤，堵住了路口",
            "{addr}电动车和出租车相撞，骑车人受伤倒地",
            "{addr}发生交通事故，一辆货车侧翻",
            "{addr}路口剐蹭，双方在争吵",
        ],
    },
    CallKind {
        kind: "noise",
        weight: 10,
        texts: &[
            "{addr}楼上装修噪音太大，晚上还在施工",
            "{addr}广场舞音响声音太大，影响休息",
            "{addr}KTV噪音扰民，已经半夜了",
            "{addr}邻居吵闹，我去敲门对方拿刀威胁我",
        ],
    },
    CallKind {
        kind: "assault",
        weight: 9,
        texts: &[
            "{addr}有人打架，一人头部流血",
            "{addr}饭店门口几个人殴打一名男子",
            "{addr}我被人打了，对方还在现场",
            "{addr}酒后有人持刀伤人",
        ],
    },
    CallKind {
        kind: "fraud",
        weight: 8,
        texts: &[
            "接到冒充公检法的电话，被骗转账两万元，我在{addr}",
            "网上刷单被骗了八千元，住在{addr}",
            "{addr}有人冒充银行客服诈骗老人",
        ],
    },
    CallKind {
        kind: "utility_outage",
        weight: 7,
        texts: &[
            "{addr}小区停水一天了，没有任何通知",
            "{addr}整栋楼停电了",
            "{addr}路灯坏了一整排，晚上很黑",
            "{addr}停电后配电箱起火冒烟",
        ],
    },
    CallKind {
        kind: "robbery",
        weight: 4,
        texts: &[
            "{addr}有人持刀抢劫路人，嫌疑人往东跑了",
            "{addr}一名女子被抢包，嫌疑人骑电动车逃离",
            "{addr}两名男子抢劫手机，受害人受伤",
        ],
    },
    CallKind {
        kind: "missing_person",
        weight: 4,
        texts: &[
            "我家孩子在{addr}附近走丢了，穿红色外套，八岁",
            "家里老人有阿尔茨海默症，在{addr}走失",
            "{addr}发现一名走失儿童在哭",
        ],
    },
    CallKind {
        kind: "fire",
        weight: 3,
        texts: &[
            "{addr}一栋居民楼起火，冒黑烟",
            "{addr}路边一辆轿车着火了",
            "{addr}饭店后厨着火，有人被困",
        ],
    },
    CallKind {
        kind: "suspicious_person",
        weight: 3,
        texts: &["{addr}有可疑人员在小区内挨个拉车门", "{addr}有人在学校门口徘徊很久"],
    },
    CallKind {
        kind: "lost_property",
        weight: 2,
        texts: &["在{addr}捡到一个钱包，里面有身份证", "我的包落在{addr}的出租车上了"],
    },
];

fn call_kind(kind: &str) -> Option<&'static CallKind> {
    CALL_KINDS.iter().find(|k| k.kind == kind)
}

/// District and streets per station, for addresses that read like Jinan's.
fn streets(jurisdiction: &str) -> (&'static str, &'static [&'static str]) {
    match jurisdiction {
        "quancheng" => ("历下区", &["泉城路", "泺源大街", "黑虎泉西路", "舜井街", "县西巷"]),
        "daminghu" => ("历下区", &["大明湖路", "明湖东路", "历山路", "少年路", "鞭指巷"]),
        "baotuquan" => (
            "市中区",
            &["趵突泉南路", "共青团路", "饮虎池街", "顺河街", "铜元局前街"],
        ),
        "jiefangqiao" => ("历下区", &["解放路", "历山路", "和平路", "文化东路", "山大路"]),
        "qianfoshan" => ("历下区", &["千佛山路", "经十路", "舜耕路", "文化西路", "历山路"]),
        "dikou" => ("天桥区", &["堤口路", "北园大街", "制锦市街", "天桥南街", "成丰街"]),
        _ => ("市中区", &["经十路", "经四路", "经七路", "纬二路"]),
    }
}

const LANDMARKS: [&str; 6] = ["", "", "附近", "路口", "小区门口", "公交站旁"];

/// Share of true video and smoke alarms that someone also calls 110 about.
const ALARM_CALLED_IN_SHARE: f64 = 0.3;

/// A sensor alarm type: kind, the sensor `type` and device-id prefix, and
/// the texts of its true and false alarms.
struct SensorKind {
    kind: &'static str,
    sensor_type: &'static str,
    prefix: &'static str,
    weight: u32,
    texts: &'static [&'static str],
}

const SENSOR_KINDS: [SensorKind; 3] = [
    SensorKind {
        kind: "video_alarm",
        sensor_type: "video",
        prefix: "cam",
        weight: 50,
        texts: &[
            "视频智能分析：{addr}检测到多人打斗",
            "视频智能分析：{addr}检测到人员倒地",
            "视频智能分析：{addr}检测到人员聚集",
        ],
    },
    SensorKind {
        kind: "efence_breach",
        sensor_type: "efence",
        prefix: "efence",
        weight: 30,
        texts: &["电子围栏报警：{addr}段有人越界", "电子围栏报警：{addr}重点区域闯入"],
    },
    SensorKind {
        kind: "smoke_alarm",
        sensor_type: "smoke",
        prefix: "smoke",
        weight: 20,
        texts: &["烟感报警：{addr}烟雾浓度超标", "烟感报警：{addr}楼道烟感触发"],
    },
];

/// A CAP 1.2 alert the simulator sends to `/v1/alerts/cap`. The `sent` time
/// is stamped when it is posted, so the plan stays deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct CapAlert {
    pub identifier: String,
    pub category: &'static str,
    pub event: &'static str,
    pub urgency: &'static str,
    pub severity: &'static str,
    pub certainty: &'static str,
    pub headline: String,
    pub description: String,
    pub area_desc: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_km: f64,
}

const CAP_EVENTS: [(&str, &str, &str, &str); 3] = [
    (
        "Security",
        "大型活动人员聚集预警",
        "人员密集，存在踩踏风险，请加强巡逻疏导",
        "Expected",
    ),
    (
        "Safety",
        "危险化学品运输车辆异常停靠",
        "一辆危化品运输车在路边异常停靠超过30分钟",
        "Immediate",
    ),
    (
        "Security",
        "重点人员动态预警",
        "情报研判：重点关注人员出现在该区域",
        "Expected",
    ),
];

impl CapAlert {
    /// The alert as CAP 1.2 XML, sent at `sent`.
    pub fn to_xml(&self, sent: chrono::DateTime<chrono::FixedOffset>) -> String {
        format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">"#,
                "<identifier>{id}</identifier><sender>qzx-sim@jinan.example</sender><sent>{sent}</sent>",
                "<status>Actual</status><msgType>Alert</msgType><scope>Restricted</scope>",
                "<restriction>police</restriction>",
                "<info><language>zh-CN</language><category>{category}</category><event>{event}</event>",
                "<urgency>{urgency}</urgency><severity>{severity}</severity><certainty>{certainty}</certainty>",
                "<senderName>济南市公安局情报中心（模拟）</senderName>",
                "<headline>{headline}</headline><description>{description}</description>",
                "<area><areaDesc>{area}</areaDesc><circle>{lat:.6},{lon:.6} {radius}</circle></area>",
                "</info></alert>"
            ),
            id = xml_escape(&self.identifier),
            // CAP 1.2 forbids "Z": the offset is always written out.
            sent = sent.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            category = self.category,
            event = xml_escape(self.event),
            urgency = self.urgency,
            severity = self.severity,
            certainty = self.certainty,
            headline = xml_escape(&self.headline),
            description = xml_escape(&self.description),
            area = xml_escape(&self.area_desc),
            lat = self.lat,
            lon = self.lon,
            radius = self.radius_km,
        )
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One thing the city will report.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An input event for `POST /v1/events`.
    Event(Value),
    /// An alert for `POST /v1/alerts/cap`.
    Cap(CapAlert),
}

/// An item and when (simulated time since the start of the run).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub item: Item,
    /// For a repeat call: the `source_id` of the call it repeats.
    pub repeat_of: Option<String>,
    /// For a call about a true sensor alarm (a passer-by calls 110 about
    /// the fight the camera saw): the alarm's `source_id`. The router
    /// should fuse the two into one incident.
    pub about_alarm: Option<String>,
}

impl Planned {
    pub fn source(&self) -> Source {
        match &self.item {
            Item::Cap(_) => Source::Alert,
            Item::Event(v) => v
                .get("source")
                .and_then(Value::as_str)
                .and_then(Source::parse)
                .unwrap_or(Source::Report),
        }
    }
}

/// A repeat call waiting for its time: ordered by time, then by creation.
#[derive(Debug, Clone, PartialEq)]
struct PendingRepeat {
    at: Duration,
    seq: u64,
    planned: Planned,
}

impl Eq for PendingRepeat {}

impl PartialOrd for PendingRepeat {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PendingRepeat {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Calls,
    Sensors,
    Caps,
}

/// The city's reports in time order, endless. Call [`Generator::next`].
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    grid: Grid,
    sim: SimConfig,
    config: Config,
    run_tag: String,
    /// Local hour of the day at the start of the run (0 ≤ h < 24).
    start_hour: f64,
    next_call: Option<Duration>,
    next_sensor: Option<Duration>,
    next_cap: Option<Duration>,
    repeats: BinaryHeap<Reverse<PendingRepeat>>,
    seq: u64,
    calls: u64,
    sensors: u64,
    caps: u64,
}

impl Generator {
    /// A generator for the configured city. `run_tag` goes into every
    /// `source_id` (so two runs with one seed against one deployment are not
    /// taken for duplicates of each other); `start_hour` is the local hour of
    /// the day when the run starts.
    pub fn new(config: &Config, seed: u64, run_tag: &str, start_hour: f64) -> Generator {
        let mut generator = Generator {
            rng: StdRng::seed_from_u64(seed),
            grid: Grid::new(config),
            sim: config.sim.clone(),
            config: config.clone(),
            run_tag: run_tag.to_owned(),
            start_hour: start_hour.rem_euclid(24.0),
            next_call: None,
            next_sensor: None,
            next_cap: None,
            repeats: BinaryHeap::new(),
            seq: 0,
            calls: 0,
            sensors: 0,
            caps: 0,
        };
        generator.next_call = generator.arrival(Stream::Calls, Duration::ZERO);
        generator.next_sensor = generator.arrival(Stream::Sensors, Duration::ZERO);
        generator.next_cap = generator.arrival(Stream::Caps, Duration::ZERO);
        generator
    }

    /// Local hour of the day at simulated time `at`.
    pub fn hour_at(&self, at: Duration) -> f64 {
        (self.start_hour + at.as_secs_f64() / 3600.0).rem_euclid(24.0)
    }

    fn peak_rate_per_s(&self, stream: Stream) -> f64 {
        let per_hour = match stream {
            Stream::Calls => self.sim.calls_per_hour,
            Stream::Sensors => self.sim.sensor_alarms_per_hour,
            Stream::Caps => self.sim.cap_alerts_per_hour,
        };
        if per_hour.is_finite() && per_hour > 0.0 {
            per_hour / 3600.0
        } else {
            0.0
        }
    }

    fn relative_rate(&self, stream: Stream, at: Duration) -> f64 {
        let hour = self.hour_at(at);
        match stream {
            Stream::Calls => rhythm(hour),
            Stream::Sensors => sensor_rhythm(hour),
            Stream::Caps => 1.0,
        }
    }

    /// The next arrival of a stream after `after`: a Poisson process at the
    /// peak rate, thinned by the rhythm of the hour (Lewis–Shedler), so the
    /// arrivals are Poisson with the time-varying rate. `None` when the
    /// stream is switched off.
    fn arrival(&mut self, stream: Stream, after: Duration) -> Option<Duration> {
        let peak = self.peak_rate_per_s(stream);
        if peak <= 0.0 {
            return None;
        }
        let mut t = after.as_secs_f64();
        // The rhythm never drops below 0.2, so this ends after a few draws.
        loop {
            let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / peak;
            let accept: f64 = self.rng.random_range(0.0..1.0);
            if accept <= self.relative_rate(stream, Duration::from_secs_f64(t)) {
                return Some(Duration::from_secs_f64(t));
            }
        }
    }

    /// The next report of the city, in time order.
    #[allow(clippy::should_implement_trait)] // endless and infallible; an Iterator would suggest otherwise
    pub fn next(&mut self) -> Option<Planned> {
        let repeat_at = self.repeats.peek().map(|Reverse(r)| r.at);
        let candidates = [
            (self.next_call, Some(Stream::Calls)),
            (self.next_sensor, Some(Stream::Sensors)),
            (self.next_cap, Some(Stream::Caps)),
            (repeat_at, None),
        ];
        let (at, stream) = candidates
            .into_iter()
            .filter_map(|(t, s)| t.map(|t| (t, s)))
            .min_by_key(|(t, _)| *t)?;
        match stream {
            None => self.repeats.pop().map(|Reverse(r)| r.planned),
            Some(Stream::Calls) => {
                let planned = self.call(at);
                self.next_call = self.arrival(Stream::Calls, at);
                Some(planned)
            }
            Some(Stream::Sensors) => {
                let planned = self.sensor_alarm(at);
                self.next_sensor = self.arrival(Stream::Sensors, at);
                Some(planned)
            }
            Some(Stream::Caps) => {
                let planned = self.cap_alert(at);
                self.next_cap = self.arrival(Stream::Caps, at);
                Some(planned)
            }
        }
    }

    fn place(&mut self) -> [f64; 2] {
        // Fall back to a station centre only for a city without areas.
        match self.grid.random_place(&mut self.rng) {
            Some(p) => p,
            None => self.config.city.jurisdictions.first().map_or([0.0, 0.0], |j| j.centre),
        }
    }

    fn address(&mut self, point: [f64; 2]) -> String {
        let jurisdiction = self.grid.jurisdiction_of(point).unwrap_or("").to_owned();
        let (district, names) = streets(&jurisdiction);
        let street = names[self.rng.random_range(0..names.len())];
        let number = self.rng.random_range(1..=300);
        let landmark = LANDMARKS[self.rng.random_range(0..LANDMARKS.len())];
        format!("{district}{street}{number}号{landmark}")
    }

    fn phone(&mut self) -> String {
        let prefix = ["138", "139", "150", "186", "131", "177"][self.rng.random_range(0..6)];
        format!("{prefix}{:08}", self.rng.random_range(0..100_000_000u32))
    }

    fn pick_call_kind(&mut self) -> &'static CallKind {
        let total: u32 = CALL_KINDS.iter().map(|k| k.weight).sum();
        let mut roll = self.rng.random_range(0..total);
        for kind in &CALL_KINDS {
            if roll < kind.weight {
                return kind;
            }
            roll -= kind.weight;
        }
        &CALL_KINDS[0]
    }

    fn call_event(&mut self, kind: &CallKind, point: [f64; 2], source_id: String) -> Value {
        let address = self.address(point);
        let template = kind.texts[self.rng.random_range(0..kind.texts.len())];
        let text = template.replace("{addr}", &address);
        let phone = self.phone();
        json!({
            "source": "call110",
            "source_id": source_id,
            "kind": kind.kind,
            "location": {"lat": point[0], "lon": point[1], "address": address},
            "text": text,
            "caller": {"phone": phone},
        })
    }

    fn call(&mut self, at: Duration) -> Planned {
        self.calls += 1;
        let kind = self.pick_call_kind();
        let point = self.place();
        let source_id = format!("110-{}-{:06}", self.run_tag, self.calls);
        let event = self.call_event(kind, point, source_id.clone());

        // repeat_share is the share of all calls that repeat another: each
        // original gets a repeat with probability r / (1 - r).
        let r = self.sim.repeat_share.clamp(0.0, 0.9);
        let p = r / (1.0 - r);
        if self.rng.random_range(0.0..1.0) < p {
            let delay = Duration::from_secs(self.rng.random_range(60..=600));
            let near = self.grid.place_near(&mut self.rng, point, 150.0);
            self.calls += 1;
            let repeat_id = format!("110-{}-{:06}", self.run_tag, self.calls);
            let repeat = self.call_event(kind, near, repeat_id);
            self.seq += 1;
            self.repeats.push(Reverse(PendingRepeat {
                at: at + delay,
                seq: self.seq,
                planned: Planned {
                    at: at + delay,
                    item: Item::Event(repeat),
                    repeat_of: Some(source_id),
                    about_alarm: None,
                },
            }));
        }
        Planned {
            at,
            item: Item::Event(event),
            repeat_of: None,
            about_alarm: None,
        }
    }

    fn sensor_alarm(&mut self, at: Duration) -> Planned {
        self.sensors += 1;
        let total: u32 = SENSOR_KINDS.iter().map(|k| k.weight).sum();
        let mut roll = self.rng.random_range(0..total);
        let mut chosen = &SENSOR_KINDS[0];
        for kind in &SENSOR_KINDS {
            if roll < kind.weight {
                chosen = kind;
                break;
            }
            roll -= kind.weight;
        }
        // Devices sit at street crossings: the same crossing is the same
        // device, so a noisy camera shows up as a repeat hotspot.
        let node = self.grid.random_node(&mut self.rng);
        let point = match node {
            Some(n) => self.grid.point(n),
            None => self.place(),
        };
        let device_id = match node {
            Some(n) => format!("{}-{:03}{:03}", chosen.prefix, n.row, n.col),
            None => format!("{}-000000", chosen.prefix),
        };
        let false_alarm = self.rng.random_range(0.0..1.0) < self.sim.false_alarm_share.clamp(0.0, 1.0);
        let confidence = if false_alarm {
            self.rng.random_range(0.15..0.55)
        } else {
            self.rng.random_range(0.75..0.99)
        };
        let confidence = (confidence * 100.0f64).round() / 100.0;
        let address = self.address(point);
        let template = chosen.texts[self.rng.random_range(0..chosen.texts.len())];
        let event = json!({
            "source": "sensor",
            "source_id": format!("{device_id}-{}-{:06}", self.run_tag, self.sensors),
            "kind": chosen.kind,
            "location": {"lat": point[0], "lon": point[1], "address": address},
            "text": template.replace("{addr}", &address),
            "sensor": {"device_id": device_id, "type": chosen.sensor_type, "confidence": confidence},
            // The simulator knows the truth; analysts can compare it with
            // what the router made of the alarm.
            "attrs": {"sim_false_alarm": false_alarm},
        });
        let source_id = event["source_id"].as_str().unwrap_or_default().to_owned();
        // Something real on camera or burning: now and then a passer-by
        // calls 110 about it a little later, from close by.
        let called_in = match chosen.kind {
            "video_alarm" => call_kind("assault"),
            "smoke_alarm" => call_kind("fire"),
            _ => None,
        };
        if let Some(call_kind) = called_in
            && !false_alarm
            && self.rng.random_range(0.0..1.0) < ALARM_CALLED_IN_SHARE
        {
            let delay = Duration::from_secs(self.rng.random_range(60..=300));
            let near = self.grid.place_near(&mut self.rng, point, 100.0);
            self.calls += 1;
            let call_id = format!("110-{}-{:06}", self.run_tag, self.calls);
            let call = self.call_event(call_kind, near, call_id);
            self.seq += 1;
            self.repeats.push(Reverse(PendingRepeat {
                at: at + delay,
                seq: self.seq,
                planned: Planned {
                    at: at + delay,
                    item: Item::Event(call),
                    repeat_of: None,
                    about_alarm: Some(source_id),
                },
            }));
        }
        Planned {
            at,
            item: Item::Event(event),
            repeat_of: None,
            about_alarm: None,
        }
    }

    fn cap_alert(&mut self, at: Duration) -> Planned {
        self.caps += 1;
        let (category, event, description, urgency) = CAP_EVENTS[self.rng.random_range(0..CAP_EVENTS.len())];
        let point = self.place();
        let jurisdiction = self.grid.jurisdiction_of(point).unwrap_or("").to_owned();
        let station = self
            .config
            .jurisdiction(&jurisdiction)
            .map_or_else(|| self.config.city.name.clone(), |j| j.name.clone());
        let address = self.address(point);
        let alert = CapAlert {
            identifier: format!("sim-cap-{}-{:04}", self.run_tag, self.caps),
            category,
            event,
            urgency,
            severity: "Moderate",
            certainty: "Likely",
            headline: format!("{event}：{address}"),
            description: description.to_owned(),
            area_desc: format!("{station}辖区 {address}"),
            lat: point[0],
            lon: point[1],
            radius_km: 0.3,
        };
        Planned {
            at,
            item: Item::Cap(alert),
            repeat_of: None,
            about_alarm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rhythm_is_low_at_four_and_peaks_in_the_evening() {
        assert!(rhythm(4.0) < 0.25);
        assert!((rhythm(20.5) - 1.0).abs() < 1e-9);
        assert!((rhythm(24.0 + 4.0) - rhythm(4.0)).abs() < 1e-9);
        assert!((rhythm(3.5) - (0.25 + 0.20) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn cap_xml_escapes_text_and_carries_the_circle() {
        let alert = CapAlert {
            identifier: "a<b".into(),
            category: "Security",
            event: "e",
            urgency: "Expected",
            severity: "Moderate",
            certainty: "Likely",
            headline: "h & h".into(),
            description: "d".into(),
            area_desc: "x".into(),
            lat: 36.66,
            lon: 117.02,
            radius_km: 0.3,
        };
        let sent = chrono::DateTime::parse_from_rfc3339("2026-11-22T14:00:00+08:00").unwrap();
        let xml = alert.to_xml(sent);
        assert!(xml.contains("<identifier>a&lt;b</identifier>"), "{xml}");
        assert!(xml.contains("<headline>h &amp; h</headline>"));
        assert!(xml.contains("<circle>36.660000,117.020000 0.3</circle>"));
        assert!(xml.contains("<sent>2026-11-22T14:00:00+08:00</sent>"), "{xml}");
        let utc = alert.to_xml(sent.with_timezone(&chrono::Utc).fixed_offset());
        assert!(utc.contains("<sent>2026-11-22T06:00:00+00:00</sent>"), "{utc}");
    }
}
