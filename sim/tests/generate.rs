//! The simulated city's reports: repeatable for a seed, arriving at the
//! configured rates with the daily rhythm, valid by ingest's own rules, and
//! placed inside the station areas. Seeded, so the statistical checks
//! cannot flake.

use std::collections::HashMap;
use std::time::Duration;

use bus::Config;
use bus::geo::{CityMap, haversine_m};
use bus::validate::{InputRules, normalise, validate_input};
use serde_json::Value;
use sim::generate::{Generator, Item, Planned, rhythm};

/// The demo city at ten times the default rates, so the statistics have
/// samples enough.
fn busy_city() -> Config {
    let mut config = Config::defaults();
    config.sim.calls_per_hour = 240.0;
    config.sim.sensor_alarms_per_hour = 60.0;
    config.sim.cap_alerts_per_hour = 2.0;
    config
}

fn take_until(generator: &mut Generator, until: Duration) -> Vec<Planned> {
    let mut out = Vec::new();
    while let Some(p) = generator.next() {
        if p.at > until {
            break;
        }
        out.push(p);
    }
    out
}

fn event(p: &Planned) -> Option<&Value> {
    match &p.item {
        Item::Event(v) => Some(v),
        Item::Cap(_) => None,
    }
}

#[test]
fn the_same_seed_gives_the_same_city_and_another_seed_another() {
    let config = Config::defaults();
    let mut a = Generator::new(&config, 7, "run", 8.0);
    let mut b = Generator::new(&config, 7, "run", 8.0);
    let mut c = Generator::new(&config, 8, "run", 8.0);
    let (mut same, mut differs) = (0, false);
    for _ in 0..3000 {
        let (x, y, z) = (a.next().unwrap(), b.next().unwrap(), c.next().unwrap());
        assert_eq!(x, y);
        same += 1;
        differs |= x != z;
    }
    assert_eq!(same, 3000);
    assert!(differs);
}

#[test]
fn arrivals_follow_the_configured_rates_and_the_daily_rhythm() {
    let config = busy_city();
    let hours = 240.0;
    let mut generator = Generator::new(&config, 20261122, "rate", 0.0);
    let items = take_until(&mut generator, Duration::from_secs_f64(hours * 3600.0));

    // Expected originals: the peak rate times the rhythm, integrated.
    let steps = 24 * 60;
    let mean_rhythm = (0..steps).map(|i| rhythm(i as f64 / 60.0)).sum::<f64>() / steps as f64;
    let expected_calls = config.sim.calls_per_hour * mean_rhythm * hours;
    let expected_sensors = config.sim.sensor_alarms_per_hour * (0.6 + 0.4 * mean_rhythm) * hours;
    let expected_caps = config.sim.cap_alerts_per_hour * hours;

    let mut originals = 0.0;
    let mut repeats = 0.0;
    let mut about_alarms = 0.0;
    let mut sensors = 0.0;
    let mut false_alarms = 0.0;
    let mut caps = 0.0;
    let mut by_hour = [0.0f64; 24];
    let mut last = Duration::ZERO;
    for p in &items {
        assert!(p.at >= last, "time order");
        last = p.at;
        match &p.item {
            Item::Cap(_) => caps += 1.0,
            Item::Event(v) if v["source"] == "sensor" => {
                sensors += 1.0;
                if v["attrs"]["sim_false_alarm"] == true {
                    false_alarms += 1.0;
                    assert!(v["sensor"]["confidence"].as_f64().unwrap() < 0.6);
                } else {
                    assert!(v["sensor"]["confidence"].as_f64().unwrap() >= 0.75);
                }
            }
            Item::Event(_) if p.repeat_of.is_some() => repeats += 1.0,
            Item::Event(_) if p.about_alarm.is_some() => about_alarms += 1.0,
            Item::Event(_) => {
                originals += 1.0;
                by_hour[generator.hour_at(p.at) as usize % 24] += 1.0;
            }
        }
    }
    let within = |got: f64, want: f64, share: f64| (got - want).abs() <= want * share;
    assert!(
        within(originals, expected_calls, 0.03),
        "{originals} vs {expected_calls}"
    );
    assert!(
        within(sensors, expected_sensors, 0.05),
        "{sensors} vs {expected_sensors}"
    );
    assert!(within(caps, expected_caps, 0.15), "{caps} vs {expected_caps}");
    let repeat_share = repeats / (originals + repeats);
    assert!((repeat_share - config.sim.repeat_share).abs() < 0.015, "{repeat_share}");
    // Calls about alarms: 30% of the true video and smoke alarms (70% of all).
    let expected_about = 0.3 * 0.7 * (sensors - false_alarms);
    assert!(
        within(about_alarms, expected_about, 0.15),
        "{about_alarms} vs {expected_about}"
    );
    let false_share = false_alarms / sensors;
    assert!(
        (false_share - config.sim.false_alarm_share).abs() < 0.02,
        "{false_share}"
    );
    // Quiet at 4 am, busiest in the evening, as the rhythm says.
    assert!(by_hour[4] < 0.3 * by_hour[20], "{by_hour:?}");
    assert!(
        within(by_hour[4] / by_hour[20], rhythm(4.5) / rhythm(20.5), 0.2),
        "{by_hour:?}"
    );
}

#[test]
fn every_report_is_valid_for_ingest_and_inside_a_station_area() {
    let config = Config::defaults();
    let rules = InputRules::new(&config);
    let map = CityMap::new(&config);
    let mut generator = Generator::new(&config, 99, "20261122000000-s99", 12.0);
    let now = chrono::Utc::now();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut danger_in_divertible = 0;
    for _ in 0..5000 {
        let p = generator.next().unwrap();
        match &p.item {
            Item::Event(value) => {
                let input =
                    validate_input(value, &rules, None, now).unwrap_or_else(|errors| panic!("{value}: {errors:?}"));
                let event = normalise(input.clone(), &map, now);
                let location = input.location.as_ref().unwrap();
                assert!(map.place(location.lat, location.lon).inside, "{value}");
                assert_ne!(event.jurisdiction, config.city.fallback_jurisdiction);
                assert!(location.address.as_deref().is_some_and(|a| a.contains('号')));
                assert!(input.text.as_deref().is_some_and(|t| !t.contains("{addr}")));
                if input.kind == "unknown" {
                    assert!(input.attrs.contains_key("original_kind"), "{value}");
                }
                if matches!(input.kind.as_str(), "noise" | "utility_outage")
                    && input
                        .text
                        .as_deref()
                        .is_some_and(|t| t.contains('刀') || t.contains("起火"))
                {
                    danger_in_divertible += 1;
                }
                *kinds.entry(input.kind).or_default() += 1;
            }
            Item::Cap(alert) => {
                assert!(map.place(alert.lat, alert.lon).inside);
                let xml = alert.to_xml(chrono::Utc::now().fixed_offset());
                assert!(xml.contains("<identifier>sim-cap-20261122000000-s99-"));
                assert!(xml.contains(&format!("<circle>{:.6},{:.6} 0.3</circle>", alert.lat, alert.lon)));
            }
        }
    }
    for kind in [
        "theft",
        "dispute",
        "traffic_accident",
        "noise",
        "assault",
        "fraud",
        "utility_outage",
        "robbery",
        "missing_person",
        "fire",
        "unknown",
        "video_alarm",
        "efence_breach",
        "smoke_alarm",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never generated: {kinds:?}"
        );
    }
    assert!(danger_in_divertible > 0, "some non-police calls must show danger");
}

#[test]
fn source_ids_are_unique_and_carry_the_run_tag() {
    let config = Config::defaults();
    let mut generator = Generator::new(&config, 3, "tag", 20.0);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5000 {
        let p = generator.next().unwrap();
        let id = match &p.item {
            Item::Event(v) => v["source_id"].as_str().unwrap().to_owned(),
            Item::Cap(a) => a.identifier.clone(),
        };
        assert!(id.contains("-tag-"), "{id}");
        assert!(seen.insert(id.clone()), "{id} twice");
    }
}

#[test]
fn repeat_calls_are_about_the_same_matter_nearby_and_soon_after() {
    let config = busy_city();
    let mut generator = Generator::new(&config, 11, "rep", 18.0);
    let items = take_until(&mut generator, Duration::from_secs(48 * 3600));
    let by_id: HashMap<&str, &Planned> = items
        .iter()
        .filter_map(|p| event(p).map(|v| (v["source_id"].as_str().unwrap(), p)))
        .collect();
    let mut checked = 0;
    for p in items.iter().filter(|p| p.repeat_of.is_some()) {
        let repeat = event(p).unwrap();
        let original_planned = by_id[p.repeat_of.as_deref().unwrap()];
        let original = event(original_planned).unwrap();
        assert_eq!(repeat["kind"], original["kind"]);
        assert_ne!(repeat["source_id"], original["source_id"]);
        let d = haversine_m(
            repeat["location"]["lat"].as_f64().unwrap(),
            repeat["location"]["lon"].as_f64().unwrap(),
            original["location"]["lat"].as_f64().unwrap(),
            original["location"]["lon"].as_f64().unwrap(),
        );
        assert!(d <= 160.0, "{d} m apart");
        let gap = p.at - original_planned.at;
        assert!(
            gap >= Duration::from_secs(60) && gap <= Duration::from_secs(600),
            "{gap:?}"
        );
        // Within the router's repeat window and distance, so it links.
        assert!(d <= config.router.repeat_distance_m);
        assert!(gap.as_secs() <= config.router.repeat_window_s);
        checked += 1;
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn calls_about_alarms_follow_true_alarms_closely_enough_to_fuse() {
    let config = busy_city();
    let mut generator = Generator::new(&config, 12, "fuse", 18.0);
    let items = take_until(&mut generator, Duration::from_secs(48 * 3600));
    let by_id: HashMap<&str, &Planned> = items
        .iter()
        .filter_map(|p| event(p).map(|v| (v["source_id"].as_str().unwrap(), p)))
        .collect();
    let mut checked = 0;
    for p in items.iter().filter(|p| p.about_alarm.is_some()) {
        let call = event(p).unwrap();
        let alarm_planned = by_id[p.about_alarm.as_deref().unwrap()];
        let alarm = event(alarm_planned).unwrap();
        assert_eq!(call["source"], "call110");
        assert_eq!(alarm["source"], "sensor");
        assert_eq!(
            alarm["attrs"]["sim_false_alarm"], false,
            "only true alarms are called in"
        );
        let kinds = (alarm["kind"].as_str().unwrap(), call["kind"].as_str().unwrap());
        assert!(
            matches!(kinds, ("video_alarm", "assault") | ("smoke_alarm", "fire")),
            "{kinds:?}"
        );
        let d = haversine_m(
            call["location"]["lat"].as_f64().unwrap(),
            call["location"]["lon"].as_f64().unwrap(),
            alarm["location"]["lat"].as_f64().unwrap(),
            alarm["location"]["lon"].as_f64().unwrap(),
        );
        let gap = p.at - alarm_planned.at;
        assert!(d <= config.router.fusion_distance_m, "{d} m");
        assert!(gap.as_secs() <= config.router.fusion_window_s, "{gap:?}");
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
}
