//! The engine's unit tests: scoring into incidents, linking, ranking, the
//! 1-3-5 stages and the helpers on an incident's state.

use super::*;
use crate::incident::{MAX_TIMELINE, TIMELINE_HEAD, derive_status, trim_timeline};
use crate::index::SpatialIndex;
use crate::travel::StraightLine;
use bus::model::{IncidentUnit, InputEvent, Location, TimelineEntry, UnitRole, UnitStatus};
use chrono::{TimeZone, Utc};
use serde_json::Map;
use std::collections::HashSet;

fn engine() -> Engine {
    let config = Arc::new(Config::defaults());
    let travel = Arc::new(StraightLine::new(&config.router));
    Engine::new(config, travel)
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 22, 6, 0, 0).unwrap()
}

fn event(id: &str, source: Source, kind: &str, text: &str, lat: f64, lon: f64, secs: i64) -> Event {
    Event {
        id: id.into(),
        received_at: t0() + chrono::Duration::seconds(secs),
        jurisdiction: "quancheng".into(),
        cell: None,
        input: InputEvent {
            source,
            source_id: format!("src-{id}"),
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

fn create(e: &Engine, ev: &Event) -> Incident {
    let score = e.scorer().score(ev, 1);
    e.new_incident(ev, &score, ev.received_at)
}

#[test]
fn a_long_timeline_keeps_its_head_and_its_newest_entries() {
    let now = t0();
    let mut incident = create(&engine(), &event("e", Source::Call110, "theft", "", 36.665, 117.025, 0));
    incident.timeline = (0..1000)
        .map(|i| TimelineEntry {
            at: now,
            what: format!("e{i}"),
            by: "x".into(),
        })
        .collect();
    trim_timeline(&mut incident, now);
    assert_eq!(incident.timeline.len(), MAX_TIMELINE);
    assert_eq!(incident.timeline[0].what, "e0");
    assert_eq!(incident.timeline[TIMELINE_HEAD - 1].what, "e9");
    assert!(incident.timeline[TIMELINE_HEAD].what.contains("elided"));
    assert_eq!(incident.timeline.last().unwrap().what, "e999");
    assert_eq!(
        incident.timeline[TIMELINE_HEAD + 1].what,
        format!("e{}", 1000 - MAX_TIMELINE + TIMELINE_HEAD + 1)
    );
}

fn unit(id: &str, t: UnitType) -> Unit {
    Unit {
        reason: None,
        id: id.into(),
        unit_type: t,
        jurisdiction: "quancheng".into(),
        status: UnitStatus::Available,
        lat: None,
        lon: None,
        at: t0(),
        task: None,
        version: 0,
        speed_kmh: None,
        name: None,
    }
}

#[test]
fn p1_goes_to_the_command_desk_with_deadlines_from_the_first_event() {
    let e = engine();
    let inc = create(
        &e,
        &event("e1", Source::Call110, "robbery", "持刀抢劫", 36.665, 117.02, 0),
    );
    assert_eq!(inc.priority, 1);
    assert_eq!(inc.desks, vec!["command", "patrol", "criminal"]);
    let d = inc.deadlines.unwrap();
    assert_eq!(d.respond, t0() + chrono::Duration::seconds(60));
    assert_eq!(d.arrive, t0() + chrono::Duration::seconds(180));
    assert_eq!(d.reinforce, t0() + chrono::Duration::seconds(300));
    assert!(inc.timeline.iter().any(|t| t.what.contains("weapon: knife")));

    let p3 = create(
        &e,
        &event("e2", Source::Call110, "fraud", "电话诈骗", 36.665, 117.02, 0),
    );
    assert_eq!(p3.desks, vec!["cyber"]);
}

#[test]
fn noise_is_diverted_unless_the_text_shows_danger() {
    let e = engine();
    let quiet = create(
        &e,
        &event("e1", Source::Call110, "noise", "楼上太吵", 36.665, 117.02, 0),
    );
    assert_eq!(quiet.status, IncidentStatus::Diverted);
    assert_eq!(quiet.diverted_to.as_deref(), Some("12345"));
    assert_eq!(quiet.sla, not_applicable());
    assert!(quiet.deadlines.is_none());

    let loud = create(
        &e,
        &event("e2", Source::Call110, "noise", "吵架还动了刀", 36.665, 117.02, 0),
    );
    assert_eq!(loud.status, IncidentStatus::New);
    assert!(loud.diverted_to.is_none());
    assert!(loud.timeline.iter().any(|t| t.what.contains("not diverted to 12345")));
}

#[test]
fn an_incident_keeps_its_calls_flags_once_and_a_located_one_is_not_unlocated() {
    let e = engine();
    let mut first = event("e1", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 0);
    first.input.flags = vec![Flag::ClockSkew];
    let mut inc = create(&e, &first);
    assert_eq!(inc.flags, vec![Flag::ClockSkew]);
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what.contains("corrected at intake: clock_skew"))
    );
    assert!(e.dispatch_point(&inc).is_some());

    let mut again = event("e2", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 60);
    again.input.flags = vec![Flag::ClockSkew, Flag::Truncated, Flag::Unlocated];
    e.join(&mut inc, &again, Link::Repeat, 0.0, again.received_at);
    assert_eq!(inc.flags, vec![Flag::ClockSkew, Flag::Truncated]);

    let mut nowhere = event("e3", Source::Call110, "theft", "包被偷了", 0.0, 0.0, 0);
    nowhere.input.location = None;
    nowhere.input.flags = vec![Flag::Unlocated];
    let lost = create(&e, &nowhere);
    assert!(is_unlocated(&lost));
    assert_eq!(e.dispatch_point(&lost), None);
    assert_eq!(lost.desks[0], e.config().router.command_desk);
}

#[test]
fn repeat_calls_link_within_distance_and_window_and_raise_priority() {
    let e = engine();
    let first = create(
        &e,
        &event("e1", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 0),
    );
    assert_eq!(first.priority, 3);
    let open = vec![first];
    // related kind (robbery ↔ theft), 100 m away, 5 minutes later
    let again = event("e2", Source::Call110, "robbery", "抢包", 36.6659, 117.02, 300);
    let (found, link, _) = e.find_link(&again, &open).unwrap();
    assert_eq!(link, Link::Repeat);
    let mut inc = found.clone();
    e.join(&mut inc, &again, link, 100.0, again.received_at);
    assert_eq!(inc.events, vec!["e1", "e2"]);
    assert_eq!(inc.repeat_count, 2);
    assert_eq!(inc.priority, 1);
    assert!(inc.desks.contains(&"command".to_owned()));
    // deadlines tightened to P1's, still from the first event
    assert_eq!(inc.deadlines.unwrap().arrive, t0() + chrono::Duration::seconds(180));

    // too far, too late, unrelated kind, other jurisdiction
    assert!(
        e.find_link(&event("e3", Source::Call110, "theft", "", 36.675, 117.02, 60), &open)
            .is_none()
    );
    assert!(
        e.find_link(&event("e4", Source::Call110, "theft", "", 36.665, 117.02, 4000), &open)
            .is_none()
    );
    assert!(
        e.find_link(&event("e5", Source::Call110, "fraud", "", 36.665, 117.02, 60), &open)
            .is_none()
    );
    let mut other = event("e6", Source::Call110, "theft", "", 36.665, 117.02, 60);
    other.jurisdiction = "daminghu".into();
    assert!(e.find_link(&other, &open).is_none());
}

#[test]
fn a_sensor_alarm_fuses_with_a_call_about_the_same_place_and_time() {
    let e = engine();
    let call = create(
        &e,
        &event("e1", Source::Call110, "missing_person", "老人走失", 36.665, 117.02, 0),
    );
    let open = vec![call];
    let alarm = event("e2", Source::Sensor, "efence_breach", "", 36.6655, 117.02, 120);
    let (_, link, _) = e.find_link(&alarm, &open).unwrap();
    assert_eq!(link, Link::Fusion);
    // another call of an unrelated kind does not fuse
    let call2 = event("e3", Source::Call110, "efence_breach", "", 36.6655, 117.02, 120);
    assert!(e.find_link(&call2, &open).is_none());
}

#[test]
fn ranking_prefers_units_in_time_and_spares_special_units() {
    let e = engine();
    let inc = create(&e, &event("e1", Source::Call110, "theft", "", 36.665, 117.02, 0));
    let now = t0();
    let ranked = e.rank(
        &inc,
        vec![
            Candidate {
                unit: unit("special", UnitType::Special),
                distance_m: 200.0,
            },
            Candidate {
                unit: unit("car", UnitType::PatrolCar),
                distance_m: 800.0,
            },
            Candidate {
                unit: unit("foot-far", UnitType::Foot),
                distance_m: 3000.0,
            },
        ],
        now,
    );
    let ids: Vec<&str> = ranked.iter().map(|r| r.unit.id.as_str()).collect();
    assert_eq!(ids, vec!["car", "special", "foot-far"]);
    assert!(!ranked[2].in_time);
}

#[test]
fn the_clock_breaches_pending_stages_past_their_deadline_only() {
    let e = engine();
    let mut inc = create(&e, &event("e1", Source::Call110, "robbery", "持刀", 36.665, 117.02, 0));
    assert!(e.clock(&mut inc, t0() + chrono::Duration::seconds(59)).is_empty());
    inc.units.push(IncidentUnit {
        unit: "u1".into(),
        task: "t1".into(),
        role: UnitRole::Primary,
        status: TaskStatus::Acknowledged,
        eta_s: 30,
    });
    assert_eq!(
        e.update_sla(&mut inc, t0() + chrono::Duration::seconds(30)),
        vec![Stage::Respond]
    );
    assert_eq!(
        e.clock(&mut inc, t0() + chrono::Duration::seconds(181)),
        vec![Stage::Arrive]
    );
    // on scene after the arrive deadline: not met, still one unit short
    inc.units[0].status = TaskStatus::OnScene;
    assert!(e.update_sla(&mut inc, t0() + chrono::Duration::seconds(200)).is_empty());
    inc.units.push(IncidentUnit {
        unit: "u2".into(),
        task: "t2".into(),
        role: UnitRole::Reinforcement,
        status: TaskStatus::OnScene,
        eta_s: 30,
    });
    assert_eq!(
        e.update_sla(&mut inc, t0() + chrono::Duration::seconds(250)),
        vec![Stage::Reinforce]
    );
    assert_eq!(inc.sla.respond, SlaState::Met);
    assert_eq!(inc.sla.arrive, SlaState::Breached);
    assert_eq!(inc.sla.reinforce, SlaState::Met);
    assert!(e.clock(&mut inc, t0() + chrono::Duration::seconds(1000)).is_empty());
}

#[test]
fn the_spatial_index_finds_incidents_within_reach_only() {
    let e = engine();
    let mut index = SpatialIndex::new(300.0);
    let mut near = create(&e, &event("e1", Source::Call110, "theft", "", 36.6650, 117.0250, 0));
    near.id = "near".into();
    let mut east = create(&e, &event("e2", Source::Call110, "theft", "", 36.6650, 117.0282, 0));
    east.id = "east".into();
    let mut far = create(&e, &event("e3", Source::Call110, "theft", "", 36.6750, 117.0250, 0));
    far.id = "far".into();
    for i in [&near, &east, &far] {
        index.insert(i);
    }
    // 285 m east at this latitude: still within reach.
    let found: HashSet<&str> = index.near(36.6650, 117.0250).collect();
    assert!(found.contains("near") && found.contains("east"), "{found:?}");
    assert!(!found.contains("far"));
    index.remove("near");
    index.insert(&east);
    let found: Vec<&str> = index.near(36.6650, 117.0250).collect();
    assert_eq!(found, vec!["east"]);
}

#[test]
fn status_follows_the_furthest_task_and_resolves_when_all_cleared() {
    let e = engine();
    let mut inc = create(&e, &event("e1", Source::Call110, "theft", "", 36.665, 117.02, 0));
    derive_status(&mut inc);
    assert_eq!(inc.status, IncidentStatus::New);
    let mut u = IncidentUnit {
        unit: "u1".into(),
        task: "t1".into(),
        role: UnitRole::Primary,
        status: TaskStatus::Issued,
        eta_s: 1,
    };
    inc.units.push(u.clone());
    derive_status(&mut inc);
    assert_eq!(inc.status, IncidentStatus::Dispatched);
    u.status = TaskStatus::OnScene;
    inc.units[0] = u.clone();
    derive_status(&mut inc);
    assert_eq!(inc.status, IncidentStatus::OnScene);
    inc.units[0].status = TaskStatus::Cleared;
    derive_status(&mut inc);
    assert_eq!(inc.status, IncidentStatus::Resolved);
}
