//! The router's core per event: score, look for a repeat among the open
//! incidents, create the incident and rank the units — with 1,000 units
//! online and 10,000 open incidents, excluding Kafka and Store round trips
//! (the Store's nearest-unit search is stood in for by a scan here).

use std::hint::black_box;
use std::sync::Arc;

use bus::Config;
use bus::geo::{CityMap, haversine_m};
use bus::model::{Event, Incident, InputEvent, Location, Source, Unit, UnitStatus, UnitType};
use criterion::{Criterion, criterion_group, criterion_main};
use router::engine::Candidate;
use router::index::SpatialIndex;
use router::{Engine, StraightLine};

/// A deterministic spread over the demo city's station areas.
fn point(i: usize) -> (f64, f64) {
    let a = (i * 7919 % 10_000) as f64 / 10_000.0;
    let b = (i * 104_729 % 10_000) as f64 / 10_000.0;
    (36.634 + a * 0.052, 116.983 + b * 0.078)
}

fn event(city: &CityMap, kind: &str, text: &str, lat: f64, lon: f64, at: chrono::DateTime<chrono::Utc>) -> Event {
    let input = InputEvent {
        source: Source::Call110,
        source_id: bus::model::new_id(),
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
        attrs: serde_json::Map::new(),
        flags: Vec::new(),
    };
    bus::validate::normalise(input, city, at)
}

fn bench(c: &mut Criterion) {
    let config = Arc::new(Config::defaults());
    let engine = Engine::new(config.clone(), Arc::new(StraightLine::new(&config.router)));
    let city = CityMap::new(&config);
    let now = chrono::Utc::now();
    let kinds = ["theft", "dispute", "fraud", "traffic_accident", "assault"];
    let incidents: Vec<Incident> = (0..10_000)
        .map(|i| {
            let (lat, lon) = point(i);
            let at = now - chrono::Duration::seconds((i % 1800) as i64);
            let ev = event(&city, kinds[i % kinds.len()], "", lat, lon, at);
            let score = engine.scorer().score(&ev, 1);
            engine.new_incident(&ev, &score, at)
        })
        .collect();
    let units: Vec<Unit> = (0..1_000)
        .map(|i| {
            let (lat, lon) = point(i * 13 + 5);
            Unit {
                reason: None,
                id: format!("u-{i}"),
                unit_type: UnitType::ALL[i % 5],
                jurisdiction: city.place(lat, lon).jurisdiction,
                status: if i % 3 == 0 {
                    UnitStatus::Assigned
                } else {
                    UnitStatus::Available
                },
                lat: Some(lat),
                lon: Some(lon),
                at: now,
                task: None,
                version: 0,
                speed_kmh: None,
                name: None,
            }
        })
        .collect();
    let mut index = SpatialIndex::new(engine.link_reach_m());
    for i in &incidents {
        index.insert(i);
    }
    let by_id: std::collections::HashMap<&str, &Incident> = incidents.iter().map(|i| (i.id.as_str(), i)).collect();
    // A new matter: no open incident nearby links to it.
    let ev = event(&city, "fire", "居民楼起火，有人被困", 36.6620, 117.0200, now);

    c.bench_function("part: score", |b| b.iter(|| engine.scorer().score(black_box(&ev), 1)));
    c.bench_function("part: link among 10,000", |b| {
        b.iter(|| {
            let near = index.near(36.6620, 117.0200).filter_map(|id| by_id.get(id).copied());
            engine.find_link(black_box(&ev), near).is_none()
        })
    });
    let score = engine.scorer().score(&ev, 1);
    c.bench_function("part: new incident", |b| {
        b.iter(|| engine.new_incident(black_box(&ev), &score, now))
    });
    c.bench_function("score+link+route one event (1,000 units, 10,000 open incidents)", |b| {
        b.iter(|| {
            let score = engine.scorer().score(black_box(&ev), 1);
            let near = index.near(36.6620, 117.0200).filter_map(|id| by_id.get(id).copied());
            let link = engine.find_link(black_box(&ev), near);
            assert!(link.is_none());
            let incident = engine.new_incident(&ev, &score, now);
            let loc = incident.location.as_ref().map(|l| (l.lat, l.lon)).unwrap_or_default();
            // Stand-in for the Store's GEO search: nearest 20 available.
            let mut near: Vec<(f64, &Unit)> = units
                .iter()
                .filter(|u| u.status == UnitStatus::Available)
                .filter_map(|u| {
                    let d = haversine_m(loc.0, loc.1, u.lat?, u.lon?);
                    (d <= config.router.search_radius_m).then_some((d, u))
                })
                .collect();
            let k = config.router.candidate_units.min(near.len());
            near.select_nth_unstable_by(k.saturating_sub(1), |a, b| a.0.total_cmp(&b.0));
            let candidates = near[..k]
                .iter()
                .map(|(d, u)| Candidate {
                    unit: (*u).clone(),
                    distance_m: *d,
                })
                .collect();
            black_box(engine.rank(&incident, candidates, now))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
