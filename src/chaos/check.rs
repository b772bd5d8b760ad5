//! The checks of a chaos run: what qzx promises, counted on what a plain
//! Kafka consumer reads from the topics, what the Store holds, what ingest
//! answered and what the terminals got. Every figure is a count of
//! broken promises (zero when qzx kept them), but the hand-over time,
//! which is measured. The checks never repair or retry anything of the
//! system; they only wait where qzx promises a delay (the reconciler,
//! the Store's rebuild).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bus::Topic;
use bus::model::{Event, Incident, Task, UnitStatus};
use bus::store::{RedisStore, Store as _};
use serde::Serialize;
use serde_json::Value;

use super::load::Accepted;
use super::topics::Read;

/// How long the Store may take to free a claim no task explains (README:
/// "within about 20 s") or to list again an incident lost with Redis.
const STORE_SETTLES_WITHIN: Duration = Duration::from_secs(40);
/// Examples kept per figure, for the report and a reproduction.
const EXAMPLES: usize = 5;
/// Events posted this long after a router kill say which partitions must
/// move again for the hand-over to be over.
const HANDOVER_WINDOW_MS: i64 = 20_000;

/// Counts of broken promises; each should be zero.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Figures {
    /// Accepted calls (an id in a 202) whose event is in no incident.
    pub lost: u64,
    /// Source ids that became two or more events on the events topic.
    pub ingest_duplicates: u64,
    /// Events found in two or more incidents.
    pub double_applied: u64,
    /// Incident versions published with two different contents.
    pub version_forks: u64,
    /// Open tasks (newest version) whose incident's newest version does not
    /// list them open.
    pub ghost_tasks: u64,
    /// Units holding two or more open tasks.
    pub units_with_two_open_tasks: u64,
    /// Units the Store shows assigned, en route or on scene for a task that
    /// is not open (or none), still so after the reconciler's delay.
    pub leaked_claims: u64,
    /// Tasks issued to a unit whose terminal never got any version of them,
    /// by push or snapshot (tasks cancelled before it could are apart).
    pub terminal_misses: u64,
    /// Open incidents (newest version on the topic) the Store does not hold
    /// as open, after the rebuild's delay.
    pub open_incidents_not_in_store: u64,
}

impl Figures {
    pub fn broken(&self) -> u64 {
        self.lost
            + self.ingest_duplicates
            + self.double_applied
            + self.version_forks
            + self.ghost_tasks
            + self.units_with_two_open_tasks
            + self.leaked_claims
            + self.terminal_misses
            + self.open_incidents_not_in_store
    }
}

/// What the checks counted besides the figures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Seen {
    /// Distinct event ids on the events topic.
    pub events: u64,
    pub incidents: u64,
    pub incident_versions: u64,
    pub tasks: u64,
    pub task_versions: u64,
    /// Of the lost calls, those not even on the events topic (a 202 for an
    /// event Kafka does not have).
    pub lost_not_on_events_topic: u64,
    /// Tasks cancelled before their terminal got any version (not misses).
    pub unseen_cancelled_tasks: u64,
    /// Tasks still open at the end (their unit's terminal gave up or never
    /// got them).
    pub open_tasks_at_end: u64,
}

/// Time from a router's SIGKILL until every events partition with calls
/// after it produced an incident version again (the dead router's
/// partitions are the last: they wait for the group to hand them over).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Handover {
    pub kills: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Per kill, in order; `null` when some partition never moved again.
    pub each_ms: Vec<Option<f64>>,
}

pub struct Outcome {
    pub figures: Figures,
    pub seen: Seen,
    pub handover: Handover,
    /// Up to five ids per non-zero figure.
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

pub struct Inputs<'a> {
    pub read: &'a Read,
    pub accepted: &'a [Accepted],
    /// Unit → every task id its terminal got.
    pub received: &'a HashMap<String, HashSet<String>>,
    /// Router kills, ms since the epoch.
    pub kills_ms: &'a [i64],
    pub redis_url: &'a str,
    pub key_prefix: &'a str,
}

pub async fn run(inputs: Inputs<'_>) -> anyhow::Result<Outcome> {
    let mut figures = Figures::default();
    let mut seen = Seen::default();
    let mut examples: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut example = |figure: &'static str, what: String| {
        let list = examples.entry(figure).or_default();
        if list.len() < EXAMPLES {
            list.push(what);
        }
    };

    // The events topic: partition of each event, and the ids of each call.
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut event_times: Vec<(i64, i32)> = Vec::new();
    let mut ids_of_call: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    // The incidents topic.
    let mut incidents_of_event: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut contents: HashMap<(String, u64), Value> = HashMap::new();
    let mut forks: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut latest: HashMap<String, Incident> = HashMap::new();
    let mut incident_times: Vec<(i64, Vec<String>)> = Vec::new();
    // The tasks topic.
    let mut latest_task: HashMap<String, Task> = HashMap::new();
    for record in &inputs.read.records {
        match record.topic {
            Topic::Events => {
                let Ok(event) = serde_json::from_slice::<Event>(&record.payload) else {
                    continue;
                };
                partition_of.insert(event.id.clone(), record.partition);
                event_times.push((record.timestamp_ms, record.partition));
                let source = serde_json::to_value(event.input.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                ids_of_call
                    .entry((source, event.input.source_id.clone()))
                    .or_default()
                    .insert(event.id);
            }
            Topic::Incidents => {
                let Ok(value) = serde_json::from_slice::<Value>(&record.payload) else {
                    continue;
                };
                let Ok(incident) = serde_json::from_value::<Incident>(value.clone()) else {
                    continue;
                };
                seen.incident_versions += 1;
                let key = (incident.id.clone(), incident.version);
                match contents.get(&key) {
                    Some(first) if *first != value => {
                        forks.insert(key);
                    }
                    Some(_) => {}
                    None => {
                        contents.insert(key, value);
                    }
                }
                for e in &incident.events {
                    incidents_of_event
                        .entry(e.clone())
                        .or_default()
                        .insert(incident.id.clone());
                }
                incident_times.push((record.timestamp_ms, incident.events.clone()));
                if latest.get(&incident.id).is_none_or(|l| l.version < incident.version) {
                    latest.insert(incident.id.clone(), incident);
                }
            }
            Topic::Tasks => {
                let Ok(task) = serde_json::from_slice::<Task>(&record.payload) else {
                    continue;
                };
                seen.task_versions += 1;
                if latest_task.get(&task.id).is_none_or(|t| t.version < task.version) {
                    latest_task.insert(task.id.clone(), task);
                }
            }
            _ => {}
        }
    }
    seen.events = partition_of.len() as u64;
    seen.incidents = latest.len() as u64;
    seen.tasks = latest_task.len() as u64;

    // Lost: an accepted id in no incident.
    for call in inputs.accepted {
        for id in &call.ids {
            if !incidents_of_event.contains_key(id) {
                figures.lost += 1;
                if !partition_of.contains_key(id) {
                    seen.lost_not_on_events_topic += 1;
                }
                example("lost", format!("{} (event {id})", call.source_id));
            }
        }
    }
    // Ingest duplicates: one call, two events.
    for ((_, source_id), ids) in &ids_of_call {
        if ids.len() > 1 {
            figures.ingest_duplicates += 1;
            let events: Vec<String> = ids
                .iter()
                .map(|id| {
                    let incidents = incidents_of_event.get(id).cloned().unwrap_or_default();
                    format!(
                        "{id} in incident {}",
                        incidents.into_iter().collect::<Vec<_>>().join(" and ")
                    )
                })
                .collect();
            example("ingest_duplicates", format!("{source_id}: {}", events.join(", ")));
        }
    }
    // Double-applied: one event, two incidents.
    for (event, incidents) in &incidents_of_event {
        if incidents.len() > 1 {
            figures.double_applied += 1;
            example(
                "double_applied",
                format!(
                    "event {event} in {}",
                    incidents.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    figures.version_forks = forks.len() as u64;
    for (id, version) in forks {
        example("version_forks", format!("incident {id} v{version}"));
    }

    // Tasks: ghosts, two open per unit, terminal misses.
    let mut open_of_unit: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for task in latest_task.values() {
        if task.status.is_open() {
            seen.open_tasks_at_end += 1;
            open_of_unit.entry(&task.unit).or_default().push(&task.id);
            let listed = latest
                .get(&task.incident)
                .is_some_and(|i| i.units.iter().any(|u| u.task == task.id && u.status.is_open()));
            if !listed {
                figures.ghost_tasks += 1;
                example(
                    "ghost_tasks",
                    format!("task {} v{} of incident {}", task.id, task.version, task.incident),
                );
            }
        }
        let got = inputs
            .received
            .get(&task.unit)
            .is_some_and(|tasks| tasks.contains(&task.id));
        if !got {
            if task.status == bus::model::TaskStatus::Cancelled {
                seen.unseen_cancelled_tasks += 1;
            } else {
                figures.terminal_misses += 1;
                example(
                    "terminal_misses",
                    format!(
                        "task {} v{} ({}) for unit {}",
                        task.id,
                        task.version,
                        task.status.as_str(),
                        task.unit
                    ),
                );
            }
        }
    }
    for (unit, tasks) in &open_of_unit {
        if tasks.len() > 1 {
            figures.units_with_two_open_tasks += 1;
            example("units_with_two_open_tasks", format!("{unit}: {}", tasks.join(", ")));
        }
    }

    // The Store, given the delays qzx promises.
    let store = RedisStore::connect(inputs.redis_url, inputs.key_prefix).await?;
    let open: BTreeSet<&String> = latest.values().filter(|i| i.status.is_open()).map(|i| &i.id).collect();
    let started = Instant::now();
    let (leaked, missing) = loop {
        let units = store.units().await.unwrap_or_default();
        let leaked: Vec<String> = units
            .iter()
            .filter(|u| {
                matches!(
                    u.status,
                    UnitStatus::Assigned | UnitStatus::EnRoute | UnitStatus::OnScene
                )
            })
            .filter(|u| {
                !u.task
                    .as_ref()
                    .and_then(|t| latest_task.get(t))
                    .is_some_and(|t| t.status.is_open())
            })
            .map(|u| {
                let task = u.task.as_deref().unwrap_or("none");
                let on_topic = latest_task.get(task).map_or("not on the topic".to_owned(), |t| {
                    format!("v{} {}", t.version, t.status.as_str())
                });
                format!("{} {} for task {task} ({on_topic})", u.id, u.status.as_str())
            })
            .collect();
        let stored: BTreeSet<String> = store
            .open_incidents()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.id)
            .collect();
        let missing: Vec<String> = open
            .iter()
            .filter(|id| !stored.contains(id.as_str()))
            .map(|id| (*id).clone())
            .collect();
        if (leaked.is_empty() && missing.is_empty()) || started.elapsed() > STORE_SETTLES_WITHIN {
            break (leaked, missing);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    figures.leaked_claims = leaked.len() as u64;
    for l in leaked {
        example("leaked_claims", l);
    }
    figures.open_incidents_not_in_store = missing.len() as u64;
    for m in missing {
        example("open_incidents_not_in_store", format!("incident {m}"));
    }

    let handover = handover(inputs.kills_ms, &event_times, &partition_of, &incident_times);
    Ok(Outcome {
        figures,
        seen,
        handover,
        examples,
    })
}

/// For each kill: the latest, over the events partitions that got calls
/// within `HANDOVER_WINDOW_MS` after it, of the first incident version
/// produced after the kill that holds an event of that partition.
fn handover(
    kills_ms: &[i64],
    event_times: &[(i64, i32)],
    partition_of: &HashMap<String, i32>,
    incident_times: &[(i64, Vec<String>)],
) -> Handover {
    let mut each = Vec::new();
    for &kill in kills_ms {
        let active: BTreeSet<i32> = event_times
            .iter()
            .filter(|(t, _)| *t >= kill && *t <= kill + HANDOVER_WINDOW_MS)
            .map(|(_, p)| *p)
            .collect();
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for (t, events) in incident_times.iter().filter(|(t, _)| *t > kill) {
            for p in events.iter().filter_map(|e| partition_of.get(e)) {
                let slot = first.entry(*p).or_insert(*t);
                *slot = (*slot).min(*t);
            }
        }
        let worst = active
            .iter()
            .map(|p| first.get(p).map(|t| (t - kill) as f64))
            .try_fold(0.0f64, |acc, t| t.map(|t| acc.max(t)));
        each.push(worst);
    }
    let mut done: Vec<f64> = each.iter().flatten().copied().collect();
    done.sort_by(f64::total_cmp);
    Handover {
        kills: kills_ms.len(),
        p50_ms: bus::stats::percentile(&done, 50.0),
        p99_ms: bus::stats::percentile(&done, 99.0),
        max_ms: done.last().copied(),
        each_ms: each,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_over_waits_for_the_slowest_partition_with_calls() {
        let partition_of: HashMap<String, i32> = [("a".to_owned(), 0), ("b".to_owned(), 1), ("c".to_owned(), 2)].into();
        // Calls on partitions 0 and 1 after the kill at 1000; 2 had none.
        let events = [(1100, 0), (1200, 1), (500, 2)];
        let incidents = vec![
            (900, vec!["b".to_owned()]),  // before the kill: not counted
            (1150, vec!["a".to_owned()]), // partition 0 at once
            (7000, vec!["b".to_owned()]), // partition 1 after 6 s
            (9000, vec!["a".to_owned(), "b".to_owned()]),
        ];
        let h = handover(&[1000], &events, &partition_of, &incidents);
        assert_eq!(h.each_ms, vec![Some(6000.0)]);
        // A partition that never moves again leaves the kill unmeasured.
        let h = handover(&[1000], &events, &partition_of, &incidents[..2]);
        assert_eq!(h.each_ms, vec![None]);
        assert_eq!(h.max_ms, None);
    }
}
