//! The yardstick for the router: an offline model of a naive dispatcher
//! that always sends the nearest available unit by straight-line distance,
//! regardless of deadlines, run on the same city, the same seed and the
//! same unit behaviour (sign-in delays, Manhattan driving at the unit's
//! speed, time on scene) as the live simulator. Its 1-3-5 outcomes go next
//! to the deployment's in the run's report.
//!
//! A model, not a deployment: which reports become incidents follows the
//! configuration's documented rules in a simplified form (a repeat call
//! joins its incident; a non-police call without a danger word is diverted;
//! priority is the category's base priority, one higher with a danger word,
//! one lower for a sensor alarm below 0.5 confidence), units wait at home
//! between tasks instead of patrolling, and nothing is re-dispatched. Times
//! are simulated seconds against the unscaled targets. Pure computation; no
//! IO, no clock.

// Percentiles as the api computes its KPIs: the two are compared.
use bus::stats::percentile;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bus::Config;
use bus::config::AreaType;
use bus::geo::haversine_m;
use bus::model::Stage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::StageOutcome;
use crate::agent::Behaviour;
use crate::city::{Grid, Path};
use crate::generate::{Generator, Item, Planned};

/// The baseline's outcomes over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BaselineReport {
    /// Incidents dispatched.
    pub incidents: u64,
    pub diverted: u64,
    pub repeats: u64,
    /// Unit dispatches that had to wait for a unit to come free.
    pub waited_for_unit: u64,
    /// Per stage (`respond`, `arrive`, `reinforce`); times in simulated
    /// seconds from the report.
    pub stages: HashMap<String, StageOutcome>,
}

struct ModelUnit {
    home: [f64; 2],
    behaviour: Behaviour,
    /// Where the unit became free, and when; it then heads home.
    free_from: [f64; 2],
    free_at: f64,
    way_home: Option<Path>,
}

impl ModelUnit {
    fn position_at(&self, t: f64) -> [f64; 2] {
        match &self.way_home {
            Some(path) => path.at((t - self.free_at).max(0.0) * self.behaviour.patrol_speed_mps()),
            None => self.free_from,
        }
    }
}

struct ModelIncident {
    at: f64,
    location: [f64; 2],
    targets: [f64; 3],
    needed: usize,
    acks: Vec<f64>,
    arrivals: Vec<f64>,
}

/// Runs the nearest-unit baseline over `duration` of simulated time from
/// `start_hour`, with the reports the live simulator would send for `seed`.
pub fn baseline(config: &Config, seed: u64, start_hour: f64, duration: Duration) -> BaselineReport {
    let mut generator = Generator::new(config, seed, "baseline", start_hour);
    let mut planned = Vec::new();
    while let Some(p) = generator.next() {
        if p.at > duration {
            break;
        }
        planned.push(p);
    }
    baseline_of(config, seed, &planned)
}

/// The baseline over given reports (in time order).
pub fn baseline_of(config: &Config, seed: u64, planned: &[Planned]) -> BaselineReport {
    let grid = Arc::new(Grid::new(config));
    let mut rng = StdRng::seed_from_u64(seed ^ 0xba5e_11e0);
    let mut units: Vec<ModelUnit> = config
        .units
        .iter()
        .map(|u| ModelUnit {
            home: u.home,
            behaviour: Behaviour::new(config.router.speed_kmh(u.unit_type), config.sim.late_ack_share),
            free_from: u.home,
            free_at: 0.0,
            way_home: None,
        })
        .collect();
    let mut report = BaselineReport::default();
    let mut incidents: Vec<ModelIncident> = Vec::new();
    // One entry per unit an incident still needs, oldest first.
    let mut waiting: VecDeque<usize> = VecDeque::new();

    for p in planned {
        let t = p.at.as_secs_f64();
        serve_waiting(&mut units, &mut incidents, &mut waiting, &grid, &mut rng, Some(t));
        let Some((location, priority)) = assess(config, p, &mut report) else {
            continue;
        };
        let area_type = config
            .jurisdiction(grid.jurisdiction_of(location).unwrap_or(""))
            .map_or(AreaType::Urban, |j| j.area_type);
        let Some(target) = config
            .sla_target(area_type, priority)
            .or_else(|| config.sla_target(AreaType::Urban, priority))
        else {
            continue;
        };
        report.incidents += 1;
        let index = incidents.len();
        incidents.push(ModelIncident {
            at: t,
            location,
            targets: [
                target.respond_s as f64,
                target.arrive_s as f64,
                target.reinforce_s as f64,
            ],
            needed: target.reinforce_units.max(1) as usize,
            acks: Vec::new(),
            arrivals: Vec::new(),
        });
        for _ in 0..incidents[index].needed {
            match nearest_free(&units, location, t) {
                Some(u) => dispatch(&mut units[u], &mut incidents[index], t, &grid, &mut rng),
                None => {
                    report.waited_for_unit += 1;
                    waiting.push_back(index);
                }
            }
        }
    }
    serve_waiting(&mut units, &mut incidents, &mut waiting, &grid, &mut rng, None);

    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        let mut outcome = StageOutcome::default();
        let mut times = Vec::new();
        for incident in &incidents {
            let mut arrivals = incident.arrivals.clone();
            arrivals.sort_by(f64::total_cmp);
            let reached = match stage {
                Stage::Respond => incident.acks.iter().copied().reduce(f64::min),
                Stage::Arrive => arrivals.first().copied(),
                Stage::Reinforce => arrivals.get(incident.needed - 1).copied(),
            };
            match reached {
                Some(at) => {
                    let took = at - incident.at;
                    times.push(took);
                    if took <= incident.targets[i] {
                        outcome.met += 1;
                    } else {
                        outcome.breached += 1;
                    }
                }
                None => outcome.pending += 1,
            }
        }
        times.sort_by(f64::total_cmp);
        let decided = outcome.met + outcome.breached;
        outcome.share_met = (decided > 0).then(|| outcome.met as f64 / decided as f64);
        outcome.p50_s = percentile(&times, 50.0);
        outcome.p90_s = percentile(&times, 90.0);
        report.stages.insert(stage.as_str().to_owned(), outcome);
    }
    report
}

/// Whether a report makes a new incident, where, and at which priority.
fn assess(config: &Config, p: &Planned, report: &mut BaselineReport) -> Option<([f64; 2], u8)> {
    // A repeat call, or a call about an alarm: the router links or fuses it
    // into the incident that exists.
    if p.repeat_of.is_some() || p.about_alarm.is_some() {
        report.repeats += 1;
        return None;
    }
    let (kind, text, location, confidence) = match &p.item {
        Item::Event(v) => (
            v["kind"].as_str().unwrap_or("unknown").to_owned(),
            v["text"].as_str().unwrap_or("").to_lowercase(),
            [v["location"]["lat"].as_f64()?, v["location"]["lon"].as_f64()?],
            v["sensor"]["confidence"].as_f64(),
        ),
        Item::Cap(alert) => (
            "unknown".to_owned(),
            format!("{} {}", alert.headline, alert.description).to_lowercase(),
            [alert.lat, alert.lon],
            None,
        ),
    };
    let category = config.category(&kind).or_else(|| config.category("unknown"));
    let danger = config
        .router
        .keywords
        .iter()
        .filter(|k| k.danger)
        .any(|k| k.words.iter().any(|w| text.contains(&w.to_lowercase())));
    if category.is_some_and(|c| c.divert_to.is_some()) && !danger {
        report.diverted += 1;
        return None;
    }
    let mut priority = category.map_or(3, |c| c.base_priority);
    if danger {
        priority = priority.saturating_sub(1);
    }
    if confidence.is_some_and(|c| c < 0.5) {
        priority += 1;
    }
    Some((location, priority.clamp(1, 4)))
}

fn nearest_free(units: &[ModelUnit], location: [f64; 2], t: f64) -> Option<usize> {
    units
        .iter()
        .enumerate()
        .filter(|(_, u)| u.free_at <= t)
        .map(|(i, u)| {
            let p = u.position_at(t);
            (i, haversine_m(p[0], p[1], location[0], location[1]))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

fn dispatch(unit: &mut ModelUnit, incident: &mut ModelIncident, t: f64, grid: &Grid, rng: &mut StdRng) {
    let from = unit.position_at(t);
    let (ack, _) = unit.behaviour.sample_ack_delay(rng);
    let ack_at = t + ack.as_secs_f64();
    let drive = grid.path(from, incident.location).length_m() / unit.behaviour.speed_mps();
    let arrive_at = ack_at + drive;
    let clear_at = arrive_at + unit.behaviour.sample_on_scene(rng).as_secs_f64();
    incident.acks.push(ack_at);
    incident.arrivals.push(arrive_at);
    unit.free_from = incident.location;
    unit.free_at = clear_at;
    unit.way_home = Some(grid.path(incident.location, unit.home));
}

/// Gives units that come free (before `until`, or ever) to the incidents
/// waiting for one, oldest first.
fn serve_waiting(
    units: &mut [ModelUnit],
    incidents: &mut [ModelIncident],
    waiting: &mut VecDeque<usize>,
    grid: &Grid,
    rng: &mut StdRng,
    until: Option<f64>,
) {
    while let Some(&index) = waiting.front() {
        // While anything waits, every unit is busy: the next to come free
        // takes the oldest need.
        let Some((u, free_at)) = units
            .iter()
            .enumerate()
            .map(|(i, u)| (i, u.free_at))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        if until.is_some_and(|t| free_at > t) {
            return;
        }
        waiting.pop_front();
        dispatch(&mut units[u], &mut incidents[index], free_at, grid, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(at_s: u64, kind: &str, text: &str, lat: f64, lon: f64) -> Planned {
        Planned {
            at: Duration::from_secs(at_s),
            item: Item::Event(json!({
                "source": "call110", "source_id": format!("c{at_s}"), "kind": kind, "text": text,
                "location": {"lat": lat, "lon": lon}
            })),
            repeat_of: None,
            about_alarm: None,
        }
    }

    #[test]
    fn the_nearest_unit_goes_and_the_stages_are_measured_from_the_report() {
        let mut config = Config::defaults();
        config.units.retain(|u| u.id == "quancheng-01" || u.id == "dikou-01");
        config.sim.late_ack_share = 0.0;
        // A theft (P3, one unit) right next to quancheng-01's home.
        let report = baseline_of(&config, 1, &[call(10, "theft", "手机被偷", 36.6612, 117.0171)]);
        assert_eq!(report.incidents, 1);
        let respond = &report.stages["respond"];
        assert_eq!((respond.met, respond.breached), (1, 0));
        let took = respond.p50_s.unwrap();
        assert!((10.0..=40.0).contains(&took), "{took}");
        // Arrival is the ack plus a very short drive: the near unit went.
        let arrive = report.stages["arrive"].p50_s.unwrap();
        assert!(arrive - took < 30.0, "{arrive} after ack {took}");
    }

    #[test]
    fn noise_is_diverted_unless_dangerous_and_repeats_join() {
        let config = Config::defaults();
        let mut repeat = call(20, "noise", "噪音", 36.6612, 117.0171);
        repeat.repeat_of = Some("c10".into());
        let report = baseline_of(
            &config,
            1,
            &[
                call(10, "noise", "楼上噪音", 36.6612, 117.0171),
                repeat,
                call(30, "noise", "邻居拿刀威胁", 36.6612, 117.0171),
            ],
        );
        assert_eq!((report.diverted, report.repeats, report.incidents), (1, 1, 1));
    }

    #[test]
    fn a_p1_needs_two_units_and_waits_when_the_city_is_out_of_units() {
        let mut config = Config::defaults();
        config.units.retain(|u| u.id == "quancheng-01");
        let report = baseline_of(&config, 1, &[call(10, "robbery", "持刀抢劫", 36.6612, 117.0171)]);
        // One unit for a two-unit incident: the second dispatch waits for it
        // to clear, so reinforcement is late.
        assert_eq!(report.waited_for_unit, 1);
        assert_eq!(report.stages["reinforce"].breached, 1);
        assert!(report.stages["reinforce"].p50_s.unwrap() > 300.0);
    }

    #[test]
    fn an_hour_of_the_city_gives_every_stage_an_outcome_and_repeats_for_a_seed() {
        let config = Config::defaults();
        let a = baseline(&config, 20261122, 20.0, Duration::from_secs(3600));
        let b = baseline(&config, 20261122, 20.0, Duration::from_secs(3600));
        assert_eq!(a, b);
        // About 30 incidents in an evening hour of the demo city.
        assert!(a.incidents > 15, "{a:?}");
        for stage in ["respond", "arrive", "reinforce"] {
            let s = &a.stages[stage];
            assert_eq!(s.pending, 0, "every incident is worked to the end");
            assert!(s.share_met.is_some() && s.p50_s <= s.p90_s, "{stage}: {s:?}");
        }
    }
}
