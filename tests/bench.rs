//! `qzx bench --json` as a script reads it: one JSON object with every
//! figure the README's table names, measured on a real (embedded) broker
//! with every task delivered at a gentle rate. Figures are not asserted
//! here beyond being measured at all: targets live in the README.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_prints_one_json_object_with_every_figure() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qzx"));
    for (k, _) in std::env::vars() {
        if k.starts_with("QZX_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args([
            "bench",
            "--json",
            "--rate",
            "50",
            "--seconds",
            "2",
            "--connections",
            "200",
            "--units",
            "20",
        ])
        .output()
        .expect("qzx bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qzx bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");

    let rate = |v: &Value| v["per_second"].as_f64().unwrap_or(0.0);
    let ceilings = &report["ceilings"];
    for name in [
        "raw_produce",
        "raw_consume",
        "http_relay_single_event_requests",
        "http_relay_ndjson_batches_of_500",
        "ws_broadcast",
    ] {
        assert!(rate(&ceilings[name]) > 0.0, "ceiling {name} measured: {ceilings}");
    }
    // Ingest produces each event once and both the router and the api
    // read it, so the pipeline moves it at least three times.
    let moves = &ceilings["kafka_moves"];
    let figure = |name: &str| moves[name].as_f64().unwrap_or(0.0);
    assert!(figure("produced_per_event") >= 1.0, "{moves}");
    assert!(figure("consumed_per_event") >= 2.0, "{moves}");
    assert!(figure("bound_events_per_second") > 0.0, "{moves}");

    let latency = &report["latency"];
    assert_eq!(latency["sent"], 100, "{latency}");
    assert_eq!(latency["accepted"], 100, "every event accepted: {latency}");
    assert_eq!(
        latency["tasks_received"], 100,
        "every task reached a terminal: {latency}"
    );
    let p50 = latency["p50_ms"].as_f64().unwrap();
    let p99 = latency["p99_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99, "{latency}");

    let steps = report["max_sustained_rate"]["steps"].as_array().expect("rate steps");
    assert!(!steps.is_empty());
    assert_eq!(steps[0]["rate"], 100, "the search starts at 100 events/s");

    let ingest = &report["ingest"];
    assert!(rate(&ingest["single_event_requests"]) > 0.0, "{ingest}");
    assert!(rate(&ingest["ndjson_batches_of_500"]) > 0.0, "{ingest}");
    assert!(ingest["batch_share_of_http_relay"].as_f64().unwrap() > 0.0, "{ingest}");
    assert!(ingest["batch_share_of_kafka_bound"].as_f64().unwrap() > 0.0, "{ingest}");

    let ws = &report["websocket"];
    assert_eq!(ws["connected"], 200, "every idle connection held: {ws}");
    assert!(rate(&ws["pushes"]) > 0.0, "{ws}");

    let cpu = report["cpu_seconds_per_1000_events"].as_object().expect("cpu figures");
    for process in ["all", "embedded broker", "bench"] {
        assert!(cpu.contains_key(process), "cpu of {process}: {cpu:?}");
    }
    assert_eq!(report["store"], "memory");
}
