//! The short chaos run of CI: `qzx chaos` (the binary cargo built) for 75
//! seconds of calls with five faults on a fixed seed — two router kills
//! right after a burst, an ingest kill 1–3 ms into a burst's request, a
//! Redis SIGKILL and restart, an api kill — and every figure must be zero.
//! It starts every server itself (`qzx broker`, redis-server, the
//! services); without redis-server on PATH it says so and passes
//! (scripts/test.sh installs it, and under it, `TEST_STACK=1`, a missing
//! redis-server fails). Figures known not to be zero yet are printed,
//! not asserted (`KNOWN_FAILURES`). The long form is `qzx chaos --seconds
//! 300` (README, Reliability).

use std::process::Command;

/// Figures this run is known to find not zero on main, each written up in
/// README.md (Reliability, Known failures) with its seed. They are printed
/// with their value, never hidden; every other figure must be zero. Take a
/// name out once its defect is fixed (the run says when it read zero).
const KNOWN_FAILURES: [&str; 3] = ["leaked_claims", "double_applied", "ingest_duplicates"];

const SECONDS: &str = "75";
const FAULTS: &str = "5";
const SEED: &str = "18";

fn redis_server_found() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .any(|dir| dir.join("redis-server").is_file())
}

#[test]
fn a_short_chaos_run_loses_nothing() {
    if !redis_server_found() {
        assert!(
            std::env::var_os("TEST_STACK").is_none(),
            "redis-server is not on PATH, and scripts/test.sh should have installed it"
        );
        println!("skipped: the chaos run starts a redis-server of its own and none is on PATH");
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_qzx"))
        .args([
            "chaos",
            "--json",
            "--seconds",
            SECONDS,
            "--faults",
            FAULTS,
            "--seed",
            SEED,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running qzx chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "qzx chaos printed no JSON report ({e}; {}):\n{stdout}\n{stderr}",
            output.status
        )
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());

    let faults = &report["faults"];
    assert!(faults["router_kill"].as_u64() >= Some(2), "router kills: {faults}");
    assert_eq!(faults["ingest_kill"], 1, "{faults}");
    assert_eq!(faults["redis_restart"], 1, "{faults}");
    assert!(report["calls"]["accepted"].as_u64() > Some(100), "{}", report["calls"]);
    assert!(
        report["terminals"]["tasks_received"].as_u64() > Some(20),
        "{}",
        report["terminals"]
    );
    assert_eq!(report["quiesced"], true, "the system did not fall quiet");
    let figures = report["figures"].as_object().expect("figures");
    for known in KNOWN_FAILURES {
        match figures.get(known).and_then(|v| v.as_u64()) {
            Some(0) => println!("known failure {known} read 0 this time (fixed? see README, Reliability)"),
            Some(n) => println!("KNOWN FAILURE {known} = {n}: {}", report["examples"][known]),
            None => panic!("no figure {known} in the report"),
        }
    }
    let broken: Vec<String> = figures
        .iter()
        .filter(|(k, _)| !KNOWN_FAILURES.contains(&k.as_str()))
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    assert!(
        broken.is_empty(),
        "figures not zero: {broken:?}; examples {}; logs in {}; repeat with `{}`",
        report["examples"],
        report["logs"],
        report["reproduce"]
    );
    // `ok` and the exit code count every figure, the known ones too.
    assert_eq!(
        report["ok"],
        output.status.success(),
        "exit {} with ok {}",
        output.status,
        report["ok"]
    );
}
