//! The one test suite every [`Store`] must pass: it pins down, as assertions,
//! what the trait promises, so that [`MemoryStore`] and [`RedisStore`] stay
//! interchangeable. Integration tests (`bus/tests/store.rs`) run it against
//! both.
//!
//! It is compiled into the library (not `#[cfg(test)]`) so that integration
//! tests can call it; nothing outside tests may. It panics on the first
//! broken promise, like any test.
//!
//! Each check uses its own ids, keys and channels and puts positioned units
//! only where no other check does, so the checks do not disturb each other.
//! They do expect a store no other code writes to with the same names: a
//! fresh [`MemoryStore`], or a Redis prefix of their own.
//!
//! [`MemoryStore`]: super::MemoryStore
//! [`RedisStore`]: super::RedisStore

use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::{Claim, Commit, Committed, HistoryLimits, HistoryRead, NearbyUnit, Store};
use crate::model::{Incident, IncidentStatus, Location, Sla, Unit, UnitStatus, UnitType};

/// Runs every check, one after the other, except the three that wait for
/// time to pass: they wait together.
pub async fn run_all(store: &dyn Store) {
    basics(store).await;
    keys(store).await;
    futures::join!(key_expiry(store), history_trimmed_by_age(store), commit(store));
    units(store).await;
    nearest_units(store).await;
    claim_unit(store).await;
    claim_unit_race(store).await;
    move_unit(store).await;
    incidents(store).await;
    windows(store).await;
    history(store).await;
    history_trimmed_by_length(store).await;
}

/// The centre of Jinan (泉城广场), where [`nearest_units`] puts its units.
const JINAN: (f64, f64) = (36.6683, 117.0204);

/// Redis' earth radius; distances are checked against it.
const EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// How far a reported distance may be from the exact haversine: Redis stores
/// positions as 52-bit geohashes, which moves them by well under a metre.
const DISTANCE_TOLERANCE_M: f64 = 2.0;

fn haversine_m((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = phi2 - phi1;
    let dlambda = (lon2 - lon1).to_radians();
    let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

fn unit(id: &str, status: UnitStatus, position: Option<(f64, f64)>) -> Unit {
    Unit {
        reason: None,
        id: id.to_owned(),
        unit_type: UnitType::PatrolCar,
        jurisdiction: "lixia".to_owned(),
        status,
        lat: position.map(|p| p.0),
        lon: position.map(|p| p.1),
        at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 30, 0).single().expect("valid time"),
        task: None,
        version: 0,
        speed_kmh: Some(42.5),
        name: Some(format!("历下{id}")),
    }
}

/// A position report moves the unit (and its place in the nearest-unit
/// search) but never its status or task; an older report changes nothing.
pub async fn move_unit(store: &dyn Store) {
    let mut u = unit("mv-1", UnitStatus::Available, Some(JINAN));
    u.at = Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).single().expect("valid time");
    store.put_unit(&u).await.expect("put_unit");
    let Claim::Claimed(_) = store.claim_unit("mv-1", "task-9").await.expect("claim") else {
        panic!("the unit is available");
    };
    let later = u.at + chrono::Duration::seconds(10);
    let far = (36.7000, 117.1000);
    let moved = store
        .move_unit("mv-1", far.0, far.1, Some(30.0), later)
        .await
        .expect("move_unit")
        .expect("the unit exists");
    assert_eq!((moved.lat, moved.lon), (Some(far.0), Some(far.1)));
    assert_eq!(moved.status, UnitStatus::Assigned, "the claim survives the move");
    assert_eq!(moved.task.as_deref(), Some("task-9"));
    assert_eq!(moved.at, later);
    assert_eq!(moved.speed_kmh, Some(30.0));
    let stored = store.unit("mv-1").await.expect("unit").expect("stored");
    assert_eq!(stored, moved);
    let near_far = store.nearest_units(far.0, far.1, 50.0, 10).await.expect("nearest");
    assert!(
        near_far.iter().any(|n| n.unit == "mv-1"),
        "indexed at the new place: {near_far:?}"
    );
    let near_old = store.nearest_units(JINAN.0, JINAN.1, 50.0, 10).await.expect("nearest");
    assert!(
        !near_old.iter().any(|n| n.unit == "mv-1"),
        "not at the old place: {near_old:?}"
    );

    let stale = store
        .move_unit("mv-1", JINAN.0, JINAN.1, None, u.at)
        .await
        .expect("move_unit")
        .expect("the unit exists");
    assert_eq!(
        (stale.lat, stale.lon),
        (Some(far.0), Some(far.1)),
        "an older report is ignored"
    );
    assert_eq!(
        store
            .move_unit("nobody", 1.0, 1.0, None, later)
            .await
            .expect("move_unit"),
        None
    );
}

fn incident(id: &str, version: u64, status: IncidentStatus) -> Incident {
    let created = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).single().expect("valid time");
    Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        callers: Vec::new(),
        hold: false,
        candidates: Vec::new(),
        merged_into: None,
        merged: Vec::new(),
        split_from: None,
        id: id.to_owned(),
        version,
        status,
        priority: 2,
        score: 60,
        kind: "theft".to_owned(),
        location: Some(Location {
            lat: 36.6512,
            lon: 117.1201,
            address: Some("经十路".to_owned()),
        }),
        jurisdiction: "lixia".to_owned(),
        cell: None,
        desks: vec!["patrol".to_owned()],
        events: vec![format!("{id}-e1")],
        repeat_count: 0,
        diverted_to: None,
        created_at: created,
        updated_at: created + chrono::Duration::seconds(i64::try_from(version).unwrap_or(0)),
        deadlines: None,
        sla: Sla::default(),
        units: Vec::new(),
        timeline: Vec::new(),
        text: Some(format!("version {version}")),
        disposition: None,
        feedback: None,
        follow_up_of: None,
        flags: Vec::new(),
    }
}

/// A cursor as `(ms, seq)`, asserting it has the shape of a stream id.
fn cursor_parts(cursor: &str) -> (u64, u64) {
    let parsed = cursor
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
    parsed.unwrap_or_else(|| panic!("cursor {cursor:?} is not <ms>-<seq>"))
}

fn payloads(read: &HistoryRead) -> Vec<&[u8]> {
    read.entries.iter().map(|e| e.payload.as_slice()).collect()
}

fn cursors(read: &HistoryRead) -> Vec<&str> {
    read.entries.iter().map(|e| e.cursor.as_str()).collect()
}

pub async fn basics(store: &dyn Store) {
    assert!(matches!(store.kind(), "redis" | "memory"), "kind {:?}", store.kind());
    store.ping().await.unwrap();
}

pub async fn keys(store: &dyn Store) {
    let ttl = Duration::from_secs(60);
    let first = store.claim_key("keys:claim", "first", ttl).await.unwrap();
    assert_eq!(first, None, "the first caller sets the key");
    let second = store.claim_key("keys:claim", "second", ttl).await.unwrap();
    assert_eq!(
        second.as_deref(),
        Some("first"),
        "the second caller sees the first value"
    );
    assert_eq!(
        store.get_key("keys:claim").await.unwrap().as_deref(),
        Some("first"),
        "a failed claim leaves the value alone"
    );

    assert_eq!(store.get_key("keys:unknown").await.unwrap(), None);
    store.set_key("keys:set", "one", ttl).await.unwrap();
    store.set_key("keys:set", "two", ttl).await.unwrap();
    assert_eq!(
        store.get_key("keys:set").await.unwrap().as_deref(),
        Some("two"),
        "set_key overwrites"
    );

    store.delete_key("keys:set").await.unwrap();
    assert_eq!(store.get_key("keys:set").await.unwrap(), None);
    // Deleting a key that is not there is not an error.
    store.delete_key("keys:set").await.unwrap();
    assert_eq!(
        store.claim_key("keys:set", "three", ttl).await.unwrap(),
        None,
        "a deleted key can be claimed again"
    );

    store.set_key("keys:many:a", "A", ttl).await.unwrap();
    store.set_key("keys:many:c", "C", ttl).await.unwrap();
    let many = ["keys:many:a", "keys:many:b", "keys:many:c", "keys:many:a"].map(String::from);
    assert_eq!(
        store.get_keys(&many).await.unwrap(),
        [Some("A".to_owned()), None, Some("C".to_owned()), Some("A".to_owned())],
        "get_keys answers each key in order, a missing one with None"
    );
    assert_eq!(store.get_keys(&[]).await.unwrap(), Vec::<Option<String>>::new());

    // Keys share no namespace with the store's own state.
    assert_eq!(store.claim_key("units", "x", ttl).await.unwrap(), None);
    assert_eq!(store.claim_key("unit_geo", "x", ttl).await.unwrap(), None);
}

pub async fn key_expiry(store: &dyn Store) {
    let short = Duration::from_millis(200);
    assert_eq!(store.claim_key("expiry:claim", "old", short).await.unwrap(), None);
    store.set_key("expiry:set", "old", short).await.unwrap();
    store
        .set_key("expiry:long", "stays", Duration::from_secs(60))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_eq!(
        store.get_key("expiry:claim").await.unwrap(),
        None,
        "claimed key expired"
    );
    assert_eq!(store.get_key("expiry:set").await.unwrap(), None, "set key expired");
    assert_eq!(store.get_key("expiry:long").await.unwrap().as_deref(), Some("stays"));
    assert_eq!(
        store.claim_key("expiry:claim", "new", short).await.unwrap(),
        None,
        "an expired key can be claimed again"
    );
    assert_eq!(store.get_key("expiry:claim").await.unwrap().as_deref(), Some("new"));
}

pub async fn units(store: &dyn Store) {
    // Lhasa: no other check puts units there.
    let lhasa = (29.6520, 91.1721);
    let mut with_position = unit("units-a", UnitStatus::Available, Some(lhasa));
    let without_position = unit("units-b", UnitStatus::OffDuty, None);
    store.put_unit(&with_position).await.unwrap();
    store.put_unit(&without_position).await.unwrap();

    assert_eq!(store.unit("units-a").await.unwrap(), Some(with_position.clone()));
    assert_eq!(store.unit("units-b").await.unwrap(), Some(without_position.clone()));
    assert_eq!(store.unit("units-unknown").await.unwrap(), None);
    let ids = ["units-b", "units-unknown", "units-a"].map(str::to_owned);
    assert_eq!(
        store.units_by_id(&ids).await.unwrap(),
        vec![Some(without_position.clone()), None, Some(with_position.clone())],
        "units_by_id() in the order asked, None for an unknown id"
    );
    assert_eq!(store.units_by_id(&[]).await.unwrap(), Vec::new());

    let listed: Vec<Unit> = store
        .units()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.id.starts_with("units-"))
        .collect();
    assert_eq!(
        listed,
        vec![with_position.clone(), without_position.clone()],
        "units() in id order"
    );

    let near = store.nearest_units(lhasa.0, lhasa.1, 1000.0, 10).await.unwrap();
    assert_eq!(near.iter().map(|n| n.unit.as_str()).collect::<Vec<_>>(), ["units-a"]);

    // Replacing a unit replaces everything, and losing the position takes
    // it out of the position index.
    with_position.status = UnitStatus::Busy;
    with_position.lat = None;
    with_position.lon = None;
    store.put_unit(&with_position).await.unwrap();
    assert_eq!(store.unit("units-a").await.unwrap(), Some(with_position.clone()));
    let near = store.nearest_units(lhasa.0, lhasa.1, 1000.0, 10).await.unwrap();
    assert!(
        near.is_empty(),
        "a unit without position is not near anything: {near:?}"
    );

    // Moving it moves it in the index.
    let moved_to = (lhasa.0 + 0.01, lhasa.1);
    with_position.lat = Some(moved_to.0);
    with_position.lon = Some(moved_to.1);
    store.put_unit(&with_position).await.unwrap();
    let near = store.nearest_units(lhasa.0, lhasa.1, 5000.0, 10).await.unwrap();
    assert_eq!(near.len(), 1, "{near:?}");
    let expected = haversine_m(lhasa, moved_to);
    assert!(
        (near[0].distance_m - expected).abs() < DISTANCE_TOLERANCE_M,
        "{near:?}, expected {expected}"
    );

    // Replacing never duplicates.
    let listed = store.units().await.unwrap();
    assert_eq!(listed.iter().filter(|u| u.id.starts_with("units-")).count(), 2);
}

pub async fn nearest_units(store: &dyn Store) {
    // Units around Jinan's centre, at roughly 0.4, 1.2, 2.8, 4.4 and 8.9 km,
    // one without position and one in Beijing.
    let placed = [
        ("near-a", UnitStatus::Available, (36.6718, 117.0221)),
        ("near-b", UnitStatus::OffDuty, (36.6610, 117.0310)),
        ("near-c", UnitStatus::Assigned, (36.6512, 117.0439)),
        ("near-d", UnitStatus::Available, (36.6990, 117.0507)),
        ("near-e", UnitStatus::Busy, (36.7480, 117.0204)),
        ("near-beijing", UnitStatus::Available, (39.9042, 116.4074)),
    ];
    for (id, status, position) in placed {
        store.put_unit(&unit(id, status, Some(position))).await.unwrap();
    }
    store
        .put_unit(&unit("near-nowhere", UnitStatus::Available, None))
        .await
        .unwrap();

    let expected = |ids: &[&str]| -> Vec<(String, f64)> {
        ids.iter()
            .map(|id| {
                let (_, _, position) = placed.iter().find(|p| p.0 == *id).expect("placed unit");
                ((*id).to_owned(), haversine_m(JINAN, *position))
            })
            .collect()
    };
    let check = |found: &[NearbyUnit], ids: &[&str]| {
        let want = expected(ids);
        assert_eq!(
            found.iter().map(|n| n.unit.as_str()).collect::<Vec<_>>(),
            ids,
            "nearest first: {found:?}"
        );
        for (got, (id, distance)) in found.iter().zip(want) {
            assert!(
                (got.distance_m - distance).abs() < DISTANCE_TOLERANCE_M,
                "{id}: {} m reported, {distance} m by haversine",
                got.distance_m
            );
        }
    };

    let (lat, lon) = JINAN;
    let found = store.nearest_units(lat, lon, 5_000.0, 10).await.unwrap();
    check(&found, &["near-a", "near-b", "near-c", "near-d"]);

    let found = store.nearest_units(lat, lon, 5_000.0, 2).await.unwrap();
    check(&found, &["near-a", "near-b"]);

    let found = store.nearest_units(lat, lon, 10_000.0, 10).await.unwrap();
    check(&found, &["near-a", "near-b", "near-c", "near-d", "near-e"]);

    let found = store.nearest_units(lat, lon, 2_000.0, 10).await.unwrap();
    check(&found, &["near-a", "near-b"]);

    let found = store.nearest_units(lat, lon, 500_000.0, 100).await.unwrap();
    check(
        &found,
        &["near-a", "near-b", "near-c", "near-d", "near-e", "near-beijing"],
    );

    assert!(
        store.nearest_units(lat, lon, 5_000.0, 0).await.unwrap().is_empty(),
        "limit 0"
    );
    assert!(
        store.nearest_units(lat, lon, 0.0, 10).await.unwrap().is_empty(),
        "radius 0"
    );
    assert!(
        store
            .nearest_units(-33.8688, 151.2093, 50_000.0, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing near Sydney"
    );
}

pub async fn claim_unit(store: &dyn Store) {
    // A position with all 17 significant digits must survive a claim
    // exactly. Kashgar: no other check puts units there.
    let available = unit(
        "claim-a",
        UnitStatus::Available,
        Some((39.467_664_321_987_65, 75.989_754_123_456_78)),
    );
    store.put_unit(&available).await.unwrap();

    let mut expected = available.clone();
    expected.status = UnitStatus::Assigned;
    expected.task = Some("task-1".to_owned());
    assert_eq!(
        store.claim_unit("claim-a", "task-1").await.unwrap(),
        Claim::Claimed(expected.clone())
    );
    assert_eq!(
        store.unit("claim-a").await.unwrap(),
        Some(expected.clone()),
        "the claim is stored"
    );

    assert_eq!(
        store.claim_unit("claim-a", "task-2").await.unwrap(),
        Claim::Unavailable(UnitStatus::Assigned),
        "a claimed unit cannot be claimed again"
    );
    assert_eq!(
        store.unit("claim-a").await.unwrap(),
        Some(expected),
        "a refused claim changes nothing"
    );

    store
        .put_unit(&unit("claim-busy", UnitStatus::Busy, None))
        .await
        .unwrap();
    assert_eq!(
        store.claim_unit("claim-busy", "task-3").await.unwrap(),
        Claim::Unavailable(UnitStatus::Busy)
    );
    assert_eq!(
        store.claim_unit("claim-unknown", "task-4").await.unwrap(),
        Claim::NotFound
    );

    // A unit made available again can be claimed again.
    let mut released = available.clone();
    released.status = UnitStatus::Available;
    store.put_unit(&released).await.unwrap();
    assert!(matches!(
        store.claim_unit("claim-a", "task-5").await.unwrap(),
        Claim::Claimed(u) if u.task.as_deref() == Some("task-5")
    ));
}

pub async fn claim_unit_race(store: &dyn Store) {
    store
        .put_unit(&unit("race-a", UnitStatus::Available, None))
        .await
        .unwrap();
    let tasks: Vec<String> = (0..20).map(|i| format!("race-task-{i}")).collect();
    let claims = futures::future::join_all(tasks.iter().map(|task| store.claim_unit("race-a", task))).await;

    let mut winners = Vec::new();
    for (task, claim) in tasks.iter().zip(claims) {
        match claim.unwrap() {
            Claim::Claimed(unit) => {
                assert_eq!(unit.task.as_ref(), Some(task));
                winners.push(task.clone());
            }
            Claim::Unavailable(status) => assert_eq!(status, UnitStatus::Assigned, "losers see the winner's claim"),
            Claim::NotFound => panic!("the unit exists"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one of 20 racing claims wins: {winners:?}");
    let stored = store.unit("race-a").await.unwrap().expect("unit exists");
    assert_eq!(stored.status, UnitStatus::Assigned);
    assert_eq!(stored.task.as_ref(), winners.first(), "the winner's task is stored");
}

pub async fn incidents(store: &dyn Store) {
    let open_ids = |incidents: Vec<Incident>| -> Vec<(String, u64)> {
        incidents
            .into_iter()
            .filter(|i| i.id.starts_with("inc-"))
            .map(|i| (i.id, i.version))
            .collect()
    };

    let v2 = incident("inc-a", 2, IncidentStatus::Dispatched);
    store.put_incident(&v2).await.unwrap();
    store
        .put_incident(&incident("inc-b", 1, IncidentStatus::New))
        .await
        .unwrap();
    assert_eq!(store.incident("inc-a").await.unwrap(), Some(v2.clone()));
    assert_eq!(store.incident("inc-unknown").await.unwrap(), None);

    // An older version arriving late changes nothing.
    store
        .put_incident(&incident("inc-a", 1, IncidentStatus::New))
        .await
        .unwrap();
    assert_eq!(
        store.incident("inc-a").await.unwrap(),
        Some(v2.clone()),
        "older version ignored"
    );

    // The same version again replaces (a redelivered record).
    let mut v2_again = v2.clone();
    v2_again.score = 70;
    store.put_incident(&v2_again).await.unwrap();
    assert_eq!(store.incident("inc-a").await.unwrap(), Some(v2_again.clone()));

    assert_eq!(
        open_ids(store.open_incidents().await.unwrap()),
        [("inc-a".to_owned(), 2), ("inc-b".to_owned(), 1)],
        "open incidents in id order"
    );

    // Closing takes it off the open list but keeps it readable; a late,
    // older open version must not reopen it.
    let closed = incident("inc-a", 3, IncidentStatus::Closed);
    store.put_incident(&closed).await.unwrap();
    store.put_incident(&v2_again).await.unwrap();
    assert_eq!(store.incident("inc-a").await.unwrap(), Some(closed));
    let diverted = incident("inc-b", 5, IncidentStatus::Diverted);
    store.put_incident(&diverted).await.unwrap();
    assert_eq!(store.incident("inc-b").await.unwrap(), Some(diverted));
    assert!(open_ids(store.open_incidents().await.unwrap()).is_empty());

    // Resolved is still open (somebody owes a closing).
    let resolved = incident("inc-c", 4, IncidentStatus::Resolved);
    store.put_incident(&resolved).await.unwrap();
    assert_eq!(
        open_ids(store.open_incidents().await.unwrap()),
        [("inc-c".to_owned(), 4)]
    );
    assert_eq!(
        store
            .open_incidents()
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.id == "inc-c"),
        Some(resolved),
        "open incidents come back whole"
    );
}

pub async fn windows(store: &dyn Store) {
    let keep = 10_000;
    let t0: i64 = 1_740_000_000_000;
    store.window_add("win-a", "call-1", t0 + 1_000, keep).await.unwrap();
    store.window_add("win-a", "call-2", t0 + 2_000, keep).await.unwrap();
    store.window_add("win-a", "call-3", t0 + 3_000, keep).await.unwrap();
    store.window_add("win-b", "other", t0 + 1_000, keep).await.unwrap();

    let range = |from: i64, to: i64| store.window_range("win-a", t0 + from, t0 + to);
    let at = |member: &str, ms: i64| (member.to_owned(), t0 + ms);

    assert_eq!(
        range(0, 5_000).await.unwrap(),
        [at("call-1", 1_000), at("call-2", 2_000), at("call-3", 3_000)],
        "oldest first"
    );
    assert_eq!(range(1_500, 2_500).await.unwrap(), [at("call-2", 2_000)]);
    assert_eq!(
        range(2_000, 3_000).await.unwrap(),
        [at("call-2", 2_000), at("call-3", 3_000)],
        "both bounds are inclusive"
    );
    assert!(range(3_001, 2_000).await.unwrap().is_empty(), "an empty interval");
    assert!(store.window_range("win-unknown", 0, i64::MAX).await.unwrap().is_empty());

    // Re-adding moves a member.
    store.window_add("win-a", "call-1", t0 + 4_000, keep).await.unwrap();
    assert_eq!(
        range(0, 5_000).await.unwrap(),
        [at("call-2", 2_000), at("call-3", 3_000), at("call-1", 4_000)]
    );

    // Ties are ordered by member.
    store.window_add("win-a", "call-0", t0 + 4_000, keep).await.unwrap();
    assert_eq!(
        range(4_000, 4_000).await.unwrap(),
        [at("call-0", 4_000), at("call-1", 4_000)]
    );

    // An add at 13.5 s keeps 10 s: members before 3.5 s go, 3.5 s would stay.
    store.window_add("win-a", "call-4", t0 + 13_500, keep).await.unwrap();
    assert_eq!(
        range(0, 20_000).await.unwrap(),
        [at("call-0", 4_000), at("call-1", 4_000), at("call-4", 13_500)]
    );
    store.window_add("win-a", "call-5", t0 + 14_000, keep).await.unwrap();
    assert_eq!(
        range(0, 20_000).await.unwrap(),
        [
            at("call-0", 4_000),
            at("call-1", 4_000),
            at("call-4", 13_500),
            at("call-5", 14_000)
        ],
        "a member exactly keep_ms old stays"
    );

    assert_eq!(
        store.window_range("win-b", t0, t0 + 20_000).await.unwrap(),
        [("other".to_owned(), t0 + 1_000)],
        "windows are independent"
    );
}

pub async fn history(store: &dyn Store) {
    let limits = HistoryLimits {
        max_age: Duration::from_secs(600),
        max_len: 100,
    };
    let mut appended = Vec::new();
    for i in 1..=5 {
        let a = store
            .history_append("hist-a", &format!("d{i}"), format!("p{i}").as_bytes(), limits)
            .await
            .unwrap();
        assert!(a.fresh, "a new dedupe key appends");
        appended.push(a.cursor);
    }
    let parts: Vec<(u64, u64)> = appended.iter().map(|c| cursor_parts(c)).collect();
    assert!(parts.windows(2).all(|w| w[0] < w[1]), "cursors increase: {appended:?}");

    let again = store
        .history_append("hist-a", "d3", b"something else", limits)
        .await
        .unwrap();
    assert_eq!(
        (again.cursor.as_str(), again.fresh),
        (appended[2].as_str(), false),
        "a known dedupe key"
    );

    let all = store.history_since("hist-a", None, 100).await.unwrap();
    assert!(!all.gap);
    assert_eq!(cursors(&all), appended.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        payloads(&all),
        [b"p1", b"p2", b"p3", b"p4", b"p5"],
        "duplicates were not appended"
    );

    let later = store.history_since("hist-a", Some(&appended[1]), 100).await.unwrap();
    assert!(!later.gap);
    assert_eq!(
        payloads(&later),
        [b"p3", b"p4", b"p5"],
        "exactly the entries after the cursor"
    );
    assert_eq!(
        cursors(&later),
        appended[2..].iter().map(String::as_str).collect::<Vec<_>>()
    );

    let limited = store.history_since("hist-a", Some(&appended[1]), 2).await.unwrap();
    assert_eq!(payloads(&limited), [b"p3", b"p4"], "at most limit, oldest first");
    assert!(!limited.gap);
    assert!(
        store.history_since("hist-a", None, 0).await.unwrap().entries.is_empty(),
        "limit 0"
    );

    let caught_up = store.history_since("hist-a", Some(&appended[4]), 100).await.unwrap();
    assert_eq!(caught_up, HistoryRead::default(), "nothing after the newest");
    let future = format!("{}-0", parts[4].0 + 3_600_000);
    let ahead = store.history_since("hist-a", Some(&future), 100).await.unwrap();
    assert_eq!(ahead, HistoryRead::default(), "nothing after a cursor from the future");

    assert_eq!(
        store.history_head("hist-a").await.unwrap().as_deref(),
        Some(appended[4].as_str())
    );
    assert_eq!(store.history_head("hist-unknown").await.unwrap(), None);
    assert_eq!(
        store.history_since("hist-unknown", None, 100).await.unwrap(),
        HistoryRead::default()
    );
    assert_eq!(
        store
            .history_since("hist-unknown", Some(&appended[0]), 100)
            .await
            .unwrap(),
        HistoryRead::default(),
        "a channel with no history has no gap"
    );

    // Dedupe keys belong to their channel, however the names split.
    for (channel, dedupe) in [("hist-b", "d1"), ("hist-b:x", "y"), ("hist-b", "x:y")] {
        let a = store.history_append(channel, dedupe, b"q", limits).await.unwrap();
        assert!(a.fresh, "{channel} / {dedupe} is new");
    }
    let b = store.history_since("hist-b", None, 100).await.unwrap();
    assert_eq!(b.entries.len(), 2);
    assert_eq!(store.history_since("hist-a", None, 100).await.unwrap().entries.len(), 5);
}

pub async fn history_trimmed_by_length(store: &dyn Store) {
    let limits = HistoryLimits {
        max_age: Duration::from_secs(600),
        max_len: 3,
    };
    let mut c = Vec::new();
    for i in 1..=6 {
        let a = store
            .history_append("trim-len", &format!("d{i}"), format!("e{i}").as_bytes(), limits)
            .await
            .unwrap();
        c.push(a.cursor);
    }

    let all = store.history_since("trim-len", None, 100).await.unwrap();
    assert_eq!(
        payloads(&all),
        [b"e4", b"e5", b"e6"],
        "only the newest max_len are kept"
    );
    assert!(!all.gap, "no cursor, no gap");

    // e2 and e3 were trimmed: a client that last saw e1 or e2 missed them.
    let missed = store.history_since("trim-len", Some(&c[0]), 100).await.unwrap();
    assert!(missed.gap, "e2 and e3 are gone");
    assert_eq!(
        payloads(&missed),
        [b"e4", b"e5", b"e6"],
        "what is left is still delivered"
    );
    assert!(store.history_since("trim-len", Some(&c[1]), 100).await.unwrap().gap);

    // A client that saw e3 missed nothing, though e3 itself is gone.
    let seen_last_trimmed = store.history_since("trim-len", Some(&c[2]), 100).await.unwrap();
    assert!(!seen_last_trimmed.gap);
    assert_eq!(payloads(&seen_last_trimmed), [b"e4", b"e5", b"e6"]);
    let recent = store.history_since("trim-len", Some(&c[3]), 100).await.unwrap();
    assert!(!recent.gap);
    assert_eq!(payloads(&recent), [b"e5", b"e6"]);

    // Cursors compare as numbers: "999-0" is older than everything, though
    // it sorts after every real cursor as a string.
    assert!(store.history_since("trim-len", Some("999-0"), 100).await.unwrap().gap);
    assert!(store.history_since("trim-len", Some("0-0"), 100).await.unwrap().gap);

    // A cursor that is not one: the client must start over from a snapshot.
    for garbage in ["garbage", "12", "12-", "-1", ""] {
        let read = store.history_since("trim-len", Some(garbage), 100).await.unwrap();
        assert!(read.gap, "malformed cursor {garbage:?} is a gap");
        assert_eq!(payloads(&read), [b"e4", b"e5", b"e6"], "with every retained entry");
    }

    // A duplicate of a trimmed entry is still recognised.
    let dup = store
        .history_append("trim-len", "d1", b"e1 again", limits)
        .await
        .unwrap();
    assert_eq!((dup.cursor.as_str(), dup.fresh), (c[0].as_str(), false));
    assert_eq!(
        store.history_head("trim-len").await.unwrap().as_deref(),
        Some(c[5].as_str())
    );

    // A channel that keeps nothing still hands out increasing cursors.
    let keep_nothing = HistoryLimits {
        max_age: Duration::from_secs(600),
        max_len: 0,
    };
    let first = store
        .history_append("trim-zero", "z1", b"z1", keep_nothing)
        .await
        .unwrap();
    let second = store
        .history_append("trim-zero", "z2", b"z2", keep_nothing)
        .await
        .unwrap();
    assert!(first.fresh && second.fresh);
    assert!(cursor_parts(&first.cursor) < cursor_parts(&second.cursor));
    assert_eq!(store.history_head("trim-zero").await.unwrap(), None);
    let read = store
        .history_since("trim-zero", Some(&first.cursor), 100)
        .await
        .unwrap();
    assert_eq!(
        read,
        HistoryRead {
            entries: Vec::new(),
            gap: true
        },
        "z2 was trimmed at once"
    );
    let read = store
        .history_since("trim-zero", Some(&second.cursor), 100)
        .await
        .unwrap();
    assert_eq!(read, HistoryRead::default());
}

pub async fn history_trimmed_by_age(store: &dyn Store) {
    let limits = HistoryLimits {
        max_age: Duration::from_millis(200),
        max_len: 100,
    };
    let old = store.history_append("trim-age", "old", b"old", limits).await.unwrap();
    let quiet_entry = store.history_append("trim-age-other", "x", b"x", limits).await.unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;

    let new = store.history_append("trim-age", "new", b"new", limits).await.unwrap();
    assert!(new.fresh);
    let all = store.history_since("trim-age", None, 100).await.unwrap();
    assert_eq!(
        payloads(&all),
        [b"new"],
        "entries older than max_age are trimmed on append"
    );

    let from_old = store.history_since("trim-age", Some(&old.cursor), 100).await.unwrap();
    assert!(!from_old.gap, "the client saw the only trimmed entry");
    assert_eq!(payloads(&from_old), [b"new"]);
    assert!(store.history_since("trim-age", Some("0-0"), 100).await.unwrap().gap);

    // Age trimming happens on append: a quiet channel keeps its entries.
    let quiet = store.history_since("trim-age-other", None, 100).await.unwrap();
    assert_eq!(cursors(&quiet), [quiet_entry.cursor.as_str()]);

    // The dedupe key lives as long as max_age.
    let again = store
        .history_append("trim-age", "old", b"old again", limits)
        .await
        .unwrap();
    assert!(again.fresh, "a dedupe key older than max_age is forgotten");
    assert!(cursor_parts(&again.cursor) > cursor_parts(&new.cursor));
}

/// Urumqi: where [`commit`] puts its units; no other check puts units there.
const URUMQI: (f64, f64) = (43.8256, 87.6168);

/// Writes of every kind that a commit with a broken expectation must not
/// make: a new incident, a newer version of `cm-inc-a`, a new unit, a key
/// set and a key deleted.
fn doomed_writes() -> Commit {
    Commit {
        incidents: vec![
            incident("cm-never-inc", 1, IncidentStatus::New),
            incident("cm-inc-a", 99, IncidentStatus::Closed),
        ],
        units: vec![unit("cm-never-unit", UnitStatus::Available, Some(URUMQI))],
        set_keys: vec![("cm:never".to_owned(), "x".to_owned(), Duration::from_secs(60))],
        delete_keys: vec!["cm:doomed".to_owned()],
        ..Commit::default()
    }
}

/// Asserts that none of [`doomed_writes`] was made, with `what` in every
/// message.
async fn assert_nothing_written(store: &dyn Store, what: &str) {
    assert_eq!(
        store.incident("cm-never-inc").await.unwrap(),
        None,
        "{what}: incident written"
    );
    assert!(
        !store
            .open_incidents()
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == "cm-never-inc"),
        "{what}: incident opened"
    );
    let inc_a = store.incident("cm-inc-a").await.unwrap().expect("cm-inc-a is stored");
    assert_eq!(inc_a.version, 4, "{what}: incident overwritten");
    assert_eq!(store.unit("cm-never-unit").await.unwrap(), None, "{what}: unit written");
    let near = store.nearest_units(URUMQI.0, URUMQI.1, 100.0, 10).await.unwrap();
    assert!(
        !near.iter().any(|n| n.unit == "cm-never-unit"),
        "{what}: unit indexed: {near:?}"
    );
    assert_eq!(store.get_key("cm:never").await.unwrap(), None, "{what}: key set");
    assert_eq!(
        store.get_key("cm:doomed").await.unwrap().as_deref(),
        Some("still here"),
        "{what}: key deleted"
    );
}

/// A commit checks every expectation first, then makes every write as the
/// single-item methods would, or makes none and says which expectation
/// broke.
pub async fn commit(store: &dyn Store) {
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(200);
    let cm_ids = |incidents: Vec<Incident>| -> Vec<(String, u64)> {
        incidents
            .into_iter()
            .filter(|i| i.id.starts_with("cm-"))
            .map(|i| (i.id, i.version))
            .collect()
    };
    let near_ids = |near: Vec<NearbyUnit>| -> Vec<String> { near.into_iter().map(|n| n.unit).collect() };

    assert_eq!(
        store.commit(&Commit::default()).await.unwrap(),
        Committed::Done,
        "an empty commit"
    );

    store.set_key("cm:fence", "epoch-1", long).await.unwrap();
    store.set_key("cm:old", "to delete", long).await.unwrap();
    store.set_key("cm:doomed", "still here", long).await.unwrap();
    store
        .put_unit(&unit("cm-u1", UnitStatus::Available, Some(URUMQI)))
        .await
        .unwrap();
    let Claim::Claimed(claimed) = store.claim_unit("cm-u1", "cm-task-1").await.unwrap() else {
        panic!("cm-u1 is available");
    };
    store
        .put_unit(&unit("cm-idle", UnitStatus::Available, None))
        .await
        .unwrap();

    // Every kind of write, under expectations that hold (a claim made with
    // claim_unit is kept). Positions with 17 significant digits must be
    // stored exactly.
    let inc_a = incident("cm-inc-a", 2, IncidentStatus::Dispatched);
    let inc_b = incident("cm-inc-b", 1, IncidentStatus::Closed);
    let u2_at = (43.835_612_345_678_91, 87.616_812_345_678_91);
    let u2 = unit("cm-u2", UnitStatus::Available, Some(u2_at));
    let u3 = unit("cm-u3", UnitStatus::OffDuty, None);
    let full = Commit {
        expect_keys: vec![("cm:fence".to_owned(), "epoch-1".to_owned())],
        expect_claims: vec![("cm-u1".to_owned(), "cm-task-1".to_owned())],
        expect_available: vec!["cm-idle".to_owned()],
        incidents: vec![inc_a.clone(), inc_b.clone()],
        units: vec![u2.clone(), u3.clone()],
        set_keys: vec![
            ("cm:applied".to_owned(), "rec-1".to_owned(), long),
            ("cm:both".to_owned(), "set".to_owned(), long),
            ("cm:short".to_owned(), "brief".to_owned(), short),
        ],
        delete_keys: vec!["cm:old".to_owned(), "cm:both".to_owned()],
    };
    assert_eq!(store.commit(&full).await.unwrap(), Committed::Done);
    assert_eq!(
        store.get_key("cm:short").await.unwrap().as_deref(),
        Some("brief"),
        "set with its own time to live"
    );
    assert_eq!(store.incident("cm-inc-a").await.unwrap(), Some(inc_a.clone()));
    assert_eq!(
        store.incident("cm-inc-b").await.unwrap(),
        Some(inc_b),
        "closed, still readable"
    );
    assert_eq!(
        cm_ids(store.open_incidents().await.unwrap()),
        [("cm-inc-a".to_owned(), 2)],
        "only the open one is open"
    );
    assert_eq!(store.unit("cm-u2").await.unwrap(), Some(u2.clone()));
    assert_eq!(store.unit("cm-u3").await.unwrap(), Some(u3));
    assert_eq!(store.unit("cm-u1").await.unwrap(), Some(claimed.clone()), "untouched");
    let near = near_ids(store.nearest_units(URUMQI.0, URUMQI.1, 5_000.0, 10).await.unwrap());
    assert_eq!(near, ["cm-u1", "cm-u2"], "the committed unit is indexed");
    assert_eq!(store.get_key("cm:applied").await.unwrap().as_deref(), Some("rec-1"));
    assert_eq!(
        store.get_key("cm:both").await.unwrap().as_deref(),
        Some("set"),
        "deleted, then set"
    );
    assert_eq!(store.get_key("cm:old").await.unwrap(), None, "deleted");
    assert_eq!(store.get_key("cm:fence").await.unwrap().as_deref(), Some("epoch-1"));

    // An older version never overwrites a newer one, also within one
    // commit; the rest of the commit is still made. A unit committed
    // without position leaves the index.
    let inc_a4 = incident("cm-inc-a", 4, IncidentStatus::OnScene);
    let mut u1_lost = claimed.clone();
    u1_lost.lat = None;
    u1_lost.lon = None;
    let versions = Commit {
        incidents: vec![
            incident("cm-inc-a", 1, IncidentStatus::New),
            inc_a4.clone(),
            incident("cm-inc-a", 3, IncidentStatus::Dispatched),
        ],
        units: vec![u1_lost.clone()],
        set_keys: vec![("cm:applied".to_owned(), "rec-2".to_owned(), long)],
        ..Commit::default()
    };
    assert_eq!(store.commit(&versions).await.unwrap(), Committed::Done);
    assert_eq!(
        store.incident("cm-inc-a").await.unwrap(),
        Some(inc_a4.clone()),
        "newest wins"
    );
    assert_eq!(store.get_key("cm:applied").await.unwrap().as_deref(), Some("rec-2"));
    assert_eq!(store.unit("cm-u1").await.unwrap(), Some(u1_lost));
    let near = near_ids(store.nearest_units(URUMQI.0, URUMQI.1, 5_000.0, 10).await.unwrap());
    assert_eq!(near, ["cm-u2"], "a unit without position leaves the index");

    // A wrong or missing expected key writes nothing and says what it found;
    // expectations are checked in order, after the ones that hold.
    let broken_keys = [
        (
            vec![("cm:fence", "epoch-0")],
            Committed::KeyChanged {
                key: "cm:fence".to_owned(),
                found: Some("epoch-1".to_owned()),
            },
        ),
        (
            vec![("cm:fence", "epoch-1"), ("cm:missing", "epoch-1")],
            Committed::KeyChanged {
                key: "cm:missing".to_owned(),
                found: None,
            },
        ),
    ];
    for (expect, outcome) in broken_keys {
        let broken = Commit {
            expect_keys: expect.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            expect_claims: vec![("cm-u1".to_owned(), "cm-task-1".to_owned())],
            ..doomed_writes()
        };
        assert_eq!(store.commit(&broken).await.unwrap(), outcome);
        assert_nothing_written(store, &format!("{outcome:?}")).await;
    }

    // A lost claim writes nothing: the unit works on another task, on none,
    // or is unknown.
    let lost_claims = [
        ("cm-u1", "cm-task-2", Some("cm-task-1")),
        ("cm-idle", "cm-task-1", None),
        ("cm-nobody", "cm-task-1", None),
    ];
    for (unit_id, task, found) in lost_claims {
        let broken = Commit {
            expect_keys: vec![("cm:fence".to_owned(), "epoch-1".to_owned())],
            expect_claims: vec![
                ("cm-u1".to_owned(), "cm-task-1".to_owned()),
                (unit_id.to_owned(), task.to_owned()),
            ],
            ..doomed_writes()
        };
        let outcome = Committed::ClaimLost {
            unit: unit_id.to_owned(),
            task: found.map(str::to_owned),
        };
        assert_eq!(store.commit(&broken).await.unwrap(), outcome);
        assert_nothing_written(store, &format!("{outcome:?}")).await;
    }

    // A unit expected available: one that works on a task, one off duty,
    // an unknown one each write nothing.
    store
        .put_unit(&unit("cm-off", UnitStatus::OffDuty, None))
        .await
        .unwrap();
    let not_available = [("cm-u1", Some("cm-task-1")), ("cm-off", None), ("cm-nobody", None)];
    for (unit_id, found) in not_available {
        let broken = Commit {
            expect_keys: vec![("cm:fence".to_owned(), "epoch-1".to_owned())],
            expect_available: vec!["cm-idle".to_owned(), unit_id.to_owned()],
            ..doomed_writes()
        };
        let outcome = Committed::ClaimLost {
            unit: unit_id.to_owned(),
            task: found.map(str::to_owned),
        };
        assert_eq!(store.commit(&broken).await.unwrap(), outcome);
        assert_nothing_written(store, &format!("{outcome:?}")).await;
    }

    // Expectations alone, all holding: nothing to write, done.
    let available = Commit {
        expect_available: vec!["cm-idle".to_owned()],
        ..Commit::default()
    };
    assert_eq!(store.commit(&available).await.unwrap(), Committed::Done);
    let checks_only = Commit {
        expect_keys: vec![("cm:fence".to_owned(), "epoch-1".to_owned())],
        expect_claims: vec![("cm-u1".to_owned(), "cm-task-1".to_owned())],
        ..Commit::default()
    };
    assert_eq!(store.commit(&checks_only).await.unwrap(), Committed::Done);

    // Hundreds of entries in one commit.
    let n = 300;
    let big = Commit {
        expect_keys: vec![("cm:fence".to_owned(), "epoch-1".to_owned()); n],
        incidents: (0..n)
            .map(|i| incident(&format!("cm-big-{i}"), 1, IncidentStatus::New))
            .collect(),
        units: (0..n)
            .map(|i| unit(&format!("cm-big-{i}"), UnitStatus::OffDuty, None))
            .collect(),
        set_keys: (0..n).map(|i| (format!("cm:big:{i}"), format!("v{i}"), long)).collect(),
        delete_keys: (0..n).map(|i| format!("cm:big-gone:{i}")).collect(),
        ..Commit::default()
    };
    assert_eq!(store.commit(&big).await.unwrap(), Committed::Done);
    let keys: Vec<String> = (0..n).map(|i| format!("cm:big:{i}")).collect();
    let values = store.get_keys(&keys).await.unwrap();
    assert!(
        values
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_deref() == Some(format!("v{i}").as_str())),
        "every key of a large commit is set"
    );
    let ids: Vec<String> = (0..n).map(|i| format!("cm-big-{i}")).collect();
    assert!(store.units_by_id(&ids).await.unwrap().iter().all(Option::is_some));
    let open = cm_ids(store.open_incidents().await.unwrap());
    assert_eq!(open.iter().filter(|(id, _)| id.starts_with("cm-big-")).count(), n);

    // Time to live: the short key expires, the others stay.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get_key("cm:short").await.unwrap(), None, "short key expired");
    assert_eq!(store.get_key("cm:applied").await.unwrap().as_deref(), Some("rec-2"));
}
