//! Scoring: turns one event (and how many calls the matter has had) into a
//! priority 1–4, a score 0–100 and the reasons, all from configuration, so
//! an operator can see on the timeline why an incident ranks where it does.
//!
//! Pure: no IO, no clock (the time of day comes from the event). It must
//! never refuse or drop an event: an unknown kind scores from its text.

use bus::config::{Category, Config, KeywordRule, NightRule, SensitivePlace};
use bus::geo::haversine_m;
use bus::model::Event;
use chrono::Timelike;
use serde_json::Value;

/// Score of a category before anything else is weighed, by base priority.
/// Chosen so that an unadorned event lands exactly on its base priority.
const BASE_SCORE: [i32; 4] = [75, 55, 35, 15];
/// Lowest score of priorities 1, 2 and 3; below the last is priority 4.
const PRIORITY_FLOOR: [i32; 3] = [75, 55, 35];
/// Each call beyond the first adds this, up to `REPEAT_MAX`.
const REPEAT_STEP: i32 = 5;
const REPEAT_MAX: i32 = 15;
/// Sensor confidence moves the score by up to ± this (0.5 is neutral).
const CONFIDENCE_SPAN: f64 = 20.0;

/// What scoring concluded about one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub priority: u8,
    pub score: u8,
    /// One line per factor, e.g. `keyword 持刀 (weapon: knife) +25`.
    pub reasons: Vec<String>,
    /// A keyword rule marked as danger matched: a divertible matter stays
    /// with the police.
    pub danger: bool,
    /// Labels of the danger rules that matched, for the timeline.
    pub danger_labels: Vec<String>,
}

/// Scoring rules compiled from the configuration once.
#[derive(Debug, Clone)]
pub struct Scorer {
    categories: Vec<Category>,
    keywords: Vec<KeywordRule>,
    places: Vec<SensitivePlace>,
    night: NightRule,
}

impl Scorer {
    pub fn new(config: &Config) -> Scorer {
        Scorer {
            categories: config.categories.clone(),
            keywords: config
                .router
                .keywords
                .iter()
                .map(|k| KeywordRule {
                    words: k.words.iter().map(|w| w.to_lowercase()).collect(),
                    ..k.clone()
                })
                .collect(),
            places: config.router.sensitive_places.clone(),
            night: config.router.night.clone(),
        }
    }

    pub fn category(&self, kind: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.code == kind)
    }

    /// Scores `event` as the `calls`-th call about its matter (1 for a new
    /// incident).
    pub fn score(&self, event: &Event, calls: u32) -> Score {
        let input = &event.input;
        let mut reasons = Vec::new();
        let base_priority = self.category(&input.kind).map_or(3, |c| c.base_priority).clamp(1, 4);
        let mut total = BASE_SCORE[usize::from(base_priority - 1)];
        reasons.push(format!(
            "category {} base priority {base_priority} ({total})",
            input.kind
        ));

        let mut danger_labels = Vec::new();
        if let Some(text) = input.text.as_deref() {
            let lower = text.to_lowercase();
            for rule in &self.keywords {
                if let Some(word) = rule.words.iter().find(|w| contains_word(&lower, w)) {
                    total += i32::from(rule.score);
                    reasons.push(format!("keyword {word} ({}) +{}", rule.label, rule.score));
                    if rule.danger {
                        danger_labels.push(rule.label.clone());
                    }
                }
            }
        }

        if let Some(loc) = &input.location {
            for place in &self.places {
                if haversine_m(loc.lat, loc.lon, place.lat, place.lon) <= place.radius_m {
                    total += i32::from(place.score);
                    reasons.push(format!("near {} {} +{}", place.kind, place.name, place.score));
                }
            }
        }

        let at = input.occurred_at.unwrap_or(event.received_at);
        let local_hour = (i64::from(at.hour()) + i64::from(self.night.utc_offset_hours)).rem_euclid(24) as u32;
        if in_night(local_hour, self.night.start_hour, self.night.end_hour) {
            total += i32::from(self.night.score);
            reasons.push(format!("night call ({local_hour}:00 local) +{}", self.night.score));
        }

        if let Some(confidence) = input.sensor.as_ref().and_then(|s| s.confidence)
            && confidence.is_finite()
        {
            let delta = ((confidence.clamp(0.0, 1.0) - 0.5) * CONFIDENCE_SPAN).round() as i32;
            if delta != 0 {
                total += delta;
                reasons.push(format!("sensor confidence {confidence:.2} {delta:+}"));
            }
        }

        for (attr, table) in CAP_WEIGHTS {
            if let Some(value) = input.attrs.get(*attr).and_then(Value::as_str)
                && let Some((_, delta)) = table.iter().find(|(name, _)| name.eq_ignore_ascii_case(value))
                && *delta != 0
            {
                total += delta;
                reasons.push(format!("{attr} {value} {delta:+}"));
            }
        }

        if calls > 1 {
            let delta = (REPEAT_STEP * (calls as i32 - 1)).min(REPEAT_MAX);
            total += delta;
            reasons.push(format!("{calls} calls about this matter +{delta}"));
        }

        let score = total.clamp(0, 100);
        let priority = PRIORITY_FLOOR
            .iter()
            .position(|floor| score >= *floor)
            .map_or(4, |i| i as u8 + 1);
        Score {
            priority,
            score: score as u8,
            reasons,
            danger: !danger_labels.is_empty(),
            danger_labels,
        }
    }
}

/// CAP 1.2 urgency, severity and certainty as ingest puts them in `attrs`.
const CAP_WEIGHTS: &[(&str, &[(&str, i32)])] = &[
    (
        "cap_urgency",
        &[("Immediate", 15), ("Expected", 8), ("Future", 0), ("Past", -10)],
    ),
    (
        "cap_severity",
        &[("Extreme", 20), ("Severe", 12), ("Moderate", 5), ("Minor", -5)],
    ),
    (
        "cap_certainty",
        &[("Observed", 5), ("Likely", 3), ("Possible", 0), ("Unlikely", -10)],
    ),
];

/// Chinese words match anywhere (no spaces between words); ASCII words
/// only as whole words, so `fire` does not match `fired`.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    if !word.chars().all(|c| c.is_ascii_alphanumeric()) {
        return text.contains(word);
    }
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric()) && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Night spans midnight when `start > end` (22 → 6).
fn in_night(hour: u32, start: u32, end: u32) -> bool {
    if start == end {
        false
    } else if start < end {
        (start..end).contains(&hour)
    } else {
        hour >= start || hour < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::model::{InputEvent, Location, SensorInfo, Source};
    use chrono::{TimeZone, Utc};
    use serde_json::{Map, json};

    fn event(kind: &str, text: &str, lat: f64, lon: f64, utc_hour: u32) -> Event {
        Event {
            id: "e".into(),
            received_at: Utc.with_ymd_and_hms(2026, 11, 22, utc_hour, 0, 0).unwrap(),
            jurisdiction: "quancheng".into(),
            cell: None,
            input: InputEvent {
                source: Source::Call110,
                source_id: "s".into(),
                kind: kind.into(),
                occurred_at: None,
                location: Some(Location {
                    lat,
                    lon,
                    address: None,
                }),
                text: Some(text.into()),
                caller: None,
                sensor: None,
                attrs: Map::new(),
                flags: Vec::new(),
            },
        }
    }

    // Away from every sensitive place, at 14:00 local (06:00 UTC).
    const LAT: f64 = 36.6690;
    const LON: f64 = 117.0330;

    #[test]
    fn a_table_of_calls_gets_the_expected_priorities() {
        let s = Scorer::new(&Config::defaults());
        let table = [
            ("robbery", "两名男子持刀抢劫路人", 1, true),
            ("theft", "自行车被偷", 3, false),
            ("theft", "a man with a gun took my bag", 2, true),
            ("noise", "楼上装修太吵", 4, false),
            ("assault", "有人打人", 2, true),
            ("fraud", "接到诈骗电话", 3, false),
            ("unknown", "有人昏迷倒地", 2, true),
            ("missing_person", "小孩走丢了", 2, false),
        ];
        for (kind, text, priority, danger) in table {
            let got = s.score(&event(kind, text, LAT, LON, 6), 1);
            assert_eq!(got.priority, priority, "{kind} {text}: {got:?}");
            assert_eq!(got.danger, danger, "{kind} {text}: {got:?}");
            assert!(got.reasons[0].contains(kind), "{got:?}");
        }
    }

    #[test]
    fn reasons_name_each_factor() {
        let s = Scorer::new(&Config::defaults());
        // Next to the school, at 23:00 local.
        let got = s.score(&event("theft", "child bag stolen", 36.6612, 117.0311, 15), 3);
        let reasons = got.reasons.join("; ");
        assert!(reasons.contains("child involved"), "{reasons}");
        assert!(reasons.contains("school"), "{reasons}");
        assert!(reasons.contains("night"), "{reasons}");
        assert!(reasons.contains("3 calls"), "{reasons}");
        // 35 + 15 + 10 + 5 + 10
        assert_eq!(got.score, 75);
        assert_eq!(got.priority, 1);
    }

    #[test]
    fn sensor_confidence_and_cap_attributes_move_the_score() {
        let s = Scorer::new(&Config::defaults());
        let mut low = event("video_alarm", "", LAT, LON, 6);
        low.input.sensor = Some(SensorInfo {
            device_id: None,
            sensor_type: None,
            confidence: Some(0.1),
        });
        assert_eq!(s.score(&low, 1).priority, 3);
        let mut high = low.clone();
        high.input.sensor.as_mut().unwrap().confidence = Some(0.95);
        assert_eq!(s.score(&high, 1).score, 64);

        let mut cap = event("unknown", "flood warning", LAT, LON, 6);
        cap.input.attrs = json!({"cap_urgency": "Immediate", "cap_severity": "Extreme", "cap_certainty": "Observed"})
            .as_object()
            .unwrap()
            .clone();
        let got = s.score(&cap, 1);
        assert_eq!(got.score, 75, "{got:?}");
        assert_eq!(got.priority, 1);
    }

    #[test]
    fn score_stays_within_bounds() {
        let s = Scorer::new(&Config::defaults());
        let got = s.score(
            &event("robbery", "持刀 开枪 昏迷 起火 打人 儿童", 36.6612, 117.0311, 15),
            9,
        );
        assert_eq!(got.score, 100);
        let mut cap = event("noise", "", LAT, LON, 6);
        cap.input.attrs = json!({"cap_urgency": "Past", "cap_certainty": "Unlikely"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(s.score(&cap, 1).score, 0);
    }

    #[test]
    fn english_keywords_match_whole_words_only() {
        assert!(contains_word("a house on fire", "fire"));
        assert!(!contains_word("someone fired a gun", "fire"));
        assert!(contains_word("gun!", "gun"));
        assert!(contains_word("有人持刀", "持刀"));
    }

    #[test]
    fn night_wraps_midnight() {
        assert!(in_night(23, 22, 6));
        assert!(in_night(2, 22, 6));
        assert!(!in_night(6, 22, 6));
        assert!(in_night(1, 0, 5));
        assert!(!in_night(5, 0, 5));
    }
}
