//! What a chaos run prints: one JSON object, or a table a person reads.
//! Every figure is printed whatever its value; nothing is left out when
//! it is not zero.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::{Figures, Handover, Seen};
use super::faults::Done;
use super::load::CallStats;
use super::terminals::TerminalStats;

#[derive(Debug, Serialize)]
pub struct Report {
    /// True when every figure is zero.
    pub ok: bool,
    /// The command that repeats this run's schedule.
    pub reproduce: String,
    pub seed: u64,
    pub load_seconds: f64,
    pub quiesce_seconds: f64,
    /// False when the routers still had lag, or records kept coming, when
    /// the quiesce gave up: the figures may then count work in progress.
    pub quiesced: bool,
    pub run_seconds: f64,
    pub calls: CallStats,
    pub terminals: TerminalStats,
    /// Faults done, by kind.
    pub faults: BTreeMap<String, u64>,
    pub fault_log: Vec<Done>,
    pub figures: Figures,
    pub handover_ms: Handover,
    pub seen: Seen,
    /// Records read per topic.
    pub topics: BTreeMap<String, u64>,
    /// Partitions whose oldest records the broker had dropped.
    pub truncated: Vec<String>,
    /// Services that exited without being killed.
    pub unexpected_exits: Vec<String>,
    pub examples: BTreeMap<&'static str, Vec<String>>,
    /// The run's directory (children's logs, accepted ids, terminal log),
    /// kept when a figure is not zero.
    pub logs: Option<String>,
}

pub fn print_table(r: &Report) {
    println!(
        "qzx chaos — seed {}, {:.0} s of load, {} faults, {:.0} s in all{}",
        r.seed,
        r.load_seconds,
        r.fault_log.len(),
        r.run_seconds,
        if r.quiesced {
            String::new()
        } else {
            format!("; NOT quiet after {:.0} s", r.quiesce_seconds)
        }
    );
    println!();
    let row = |name: &str, value: String| println!("{name:<48} {value:>14}");
    let c = &r.calls;
    row("calls sent (distinct source ids)", c.calls.to_string());
    row("calls accepted (202)", c.accepted.to_string());
    row(
        "requests (single, bursts, retries)",
        format!("{} ({}, {}, {})", c.requests, c.single_requests, c.bursts, c.retries),
    );
    let answers: Vec<String> = c.answers.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    row("answers", answers.join(" "));
    row("calls refused / given up", format!("{} / {}", c.refused, c.given_up));
    let t = &r.terminals;
    row(
        "terminals (connects, reconnects, gaps)",
        format!("{} ({}, {}, {})", t.units, t.connects, t.reconnects, t.gaps),
    );
    row(
        "tasks received / cleared by terminals",
        format!("{} / {}", t.tasks_received, t.tasks_cleared),
    );
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    row("faults", faults.join(" "));
    println!();
    for f in &r.fault_log {
        println!(
            "  {:>6.1} s  {:<14} {}{}",
            f.at_s,
            f.kind.as_str(),
            f.target,
            f.error
                .as_deref()
                .map(|e| format!("  (failed: {e})"))
                .unwrap_or_default()
        );
    }
    println!();
    let f = &r.figures;
    println!("{:<48} {:>14}", "figure (each should be 0)", "value");
    row("lost (accepted, in no incident)", f.lost.to_string());
    row(
        "ingest duplicates (one source_id, 2+ events)",
        f.ingest_duplicates.to_string(),
    );
    row(
        "double-applied (an event in 2+ incidents)",
        f.double_applied.to_string(),
    );
    row("version forks (one version, 2 contents)", f.version_forks.to_string());
    row("ghost tasks", f.ghost_tasks.to_string());
    row("units with two open tasks", f.units_with_two_open_tasks.to_string());
    row("leaked claims", f.leaked_claims.to_string());
    row("terminal misses", f.terminal_misses.to_string());
    row(
        "open incidents not in the store",
        f.open_incidents_not_in_store.to_string(),
    );
    println!();
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.0} ms", v));
    let h = &r.handover_ms;
    row(
        &format!("router hand-over p50 / p99 ({} kills)", h.kills),
        format!("{} / {}", ms(h.p50_ms), ms(h.p99_ms)),
    );
    let each: Vec<String> = h.each_ms.iter().map(|v| ms(*v)).collect();
    row("  each", each.join(", "));
    let s = &r.seen;
    row(
        "events, incidents (versions), tasks (versions)",
        format!(
            "{}, {} ({}), {} ({})",
            s.events, s.incidents, s.incident_versions, s.tasks, s.task_versions
        ),
    );
    row("open tasks at the end", s.open_tasks_at_end.to_string());
    if !r.truncated.is_empty() {
        println!("partitions the broker had truncated: {}", r.truncated.join("; "));
    }
    if !r.unexpected_exits.is_empty() {
        println!("services that exited by themselves: {}", r.unexpected_exits.join(", "));
    }
    for (figure, list) in &r.examples {
        println!("{figure}: {}", list.join("; "));
    }
    if let Some(logs) = &r.logs {
        println!("logs: {logs}");
    }
    println!("repeat: {}", r.reproduce);
}
