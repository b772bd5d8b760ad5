//! The per-event CPU cost of ingest: validation + normalisation +
//! serialisation of one event (target ≤ 5 µs), and parsing a CAP alert.
//! `cargo bench -p ingest`.

use std::hint::black_box;

use bus::Config;
use bus::geo::CityMap;
use bus::validate::{InputRules, normalise, validate_input};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};

const CALL: &str = r#"{"source":"call110","source_id":"110-20261122-000123","kind":"robbery","occurred_at":"2026-11-22T14:00:00+08:00","location":{"lat":36.6683,"lon":117.0204,"address":"历下区泉城路1号"},"text":"两名男子持刀抢劫路人","caller":{"phone":"13800000000"},"sensor":{"device_id":"cam-0231","type":"video","confidence":0.93},"attrs":{}}"#;

fn one_event(c: &mut Criterion) {
    let config = Config::defaults();
    let rules = InputRules::new(&config);
    let city = CityMap::new(&config);
    c.bench_function("parse+validate+normalise+serialise one event", |b| {
        b.iter(|| {
            let items = ingest::body::split(black_box(CALL.as_bytes()), ingest::body::Framing::Json, 10).unwrap();
            let value = items[0].value.as_ref().unwrap();
            let input = validate_input(value, &rules, None, Utc::now()).unwrap();
            let event = normalise(input, &city, Utc::now());
            black_box(serde_json::to_vec(&event).unwrap())
        })
    });
}

/// The stages one by one, to see where the time goes.
fn stages(c: &mut Criterion) {
    let config = Config::defaults();
    let rules = InputRules::new(&config);
    let city = CityMap::new(&config);
    let value: serde_json::Value = serde_json::from_str(CALL).unwrap();
    let input = validate_input(&value, &rules, None, Utc::now()).unwrap();
    let event = normalise(input.clone(), &city, Utc::now());
    c.bench_function("stage: split body", |b| {
        b.iter(|| black_box(ingest::body::split(black_box(CALL.as_bytes()), ingest::body::Framing::Json, 10).unwrap()))
    });
    c.bench_function("stage: validate", |b| {
        b.iter(|| black_box(validate_input(black_box(&value), &rules, None, Utc::now()).unwrap()))
    });
    c.bench_function("stage: normalise", |b| {
        b.iter(|| black_box(normalise(black_box(input.clone()), &city, Utc::now())))
    });
    c.bench_function("stage: serialise", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&event)).unwrap()))
    });
}

fn cap_alert(c: &mut Criterion) {
    let xml = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/cap/v1dot2_appendix_a2_thunderstorm.xml"
    ))
    .unwrap();
    c.bench_function("cap alert to inputs (thunderstorm)", |b| {
        b.iter(|| black_box(ingest::cap::alert_to_inputs(black_box(&xml), 4000, 32).unwrap()))
    });
}

criterion_group!(benches, one_event, stages, cap_alert);
criterion_main!(benches);
