//! KPIs and coverage, computed on request from the Store and the local
//! view: counts by status and priority, the 1-3-5 stages (met, breached,
//! pending, share met, p50/p90 response time), repeat hotspots from the
//! router's `hotspot:<cell>` windows, and per-cell reachability by the
//! available units. Read-only; never changes state.

use bus::stats::percentile;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bus::auth::Claims;
use bus::config::RouterConfig;
use bus::geo::haversine_m;
use bus::model::{Incident, SlaState, Stage, Timestamp, Unit, UnitStatus};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// Reachability thresholds of the 1-3-5 circles, seconds.
pub const THRESHOLDS_S: [f64; 3] = [60.0, 180.0, 300.0];
const HOTSPOTS_SHOWN: usize = 10;

/// One grid cell of the city with its centre and jurisdiction.
#[derive(Debug, Clone)]
pub struct Cell {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub jurisdiction: String,
}

pub fn city_cells(city: &bus::geo::CityMap) -> Vec<Cell> {
    city.cells()
        .into_iter()
        .filter_map(|id| {
            let [lat, lon] = bus::geo::cell_centre(&id)?;
            let jurisdiction = city.place(lat, lon).jurisdiction;
            Some(Cell {
                id,
                lat,
                lon,
                jurisdiction,
            })
        })
        .collect()
}

/// `GET /api/v1/stats`: the KPIs of the incidents created in the window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsBody {
    pub window_s: u64,
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// How many incidents were created in the window.
    pub incidents: usize,
    /// Counts by incident status; a status without incidents is absent.
    pub by_status: BTreeMap<String, u64>,
    /// Counts by priority (`"1"` to `"4"`); a priority without incidents is
    /// absent.
    pub by_priority: BTreeMap<String, u64>,
    pub stages: Stages,
    /// The cells with repeat calls, most first (at most ten).
    pub hotspots: Vec<Hotspot>,
}

/// The three stages of the 1-3-5 clock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stages {
    pub respond: StageStats,
    pub arrive: StageStats,
    pub reinforce: StageStats,
}

/// One stage over the window: its SLA states, and response times from the
/// task statuses the api saw.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StageStats {
    pub met: u64,
    pub breached: u64,
    pub pending: u64,
    /// The stage did not apply.
    #[serde(rename = "n/a")]
    pub not_applicable: u64,
    /// Met over decided (met + breached); null when none is decided.
    #[schema(required = true)]
    pub share_met: Option<f64>,
    /// Seconds from creation to reaching the stage; null without samples.
    #[schema(required = true)]
    pub p50_s: Option<f64>,
    #[schema(required = true)]
    pub p90_s: Option<f64>,
    pub samples: usize,
}

/// A cell with at least two incidents in the router's repeat window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hotspot {
    pub cell: String,
    pub count: usize,
    /// The cell's centre; null when the cell id does not parse.
    #[schema(required = true)]
    pub lat: Option<f64>,
    #[schema(required = true)]
    pub lon: Option<f64>,
}

pub async fn compute(state: &AppState, claims: &Claims, window: Duration) -> Result<StatsBody, ApiError> {
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
    let incidents: Vec<Incident> = crate::rest::all_incidents(state, true)
        .await?
        .into_iter()
        .filter(|i| i.created_at >= from && claims.covers(&i.jurisdiction))
        .collect();

    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_priority: BTreeMap<String, u64> = BTreeMap::new();
    for i in &incidents {
        *by_status.entry(i.status.as_str().to_owned()).or_default() += 1;
        *by_priority.entry(i.priority.to_string()).or_default() += 1;
    }

    let stage = |stage: Stage| stage_stats(state, &incidents, stage);
    let stages = Stages {
        respond: stage(Stage::Respond),
        arrive: stage(Stage::Arrive),
        reinforce: stage(Stage::Reinforce),
    };

    let cells: HashSet<&str> = incidents.iter().filter_map(|i| i.cell.as_deref()).collect();
    let mut hotspots = Vec::new();
    for cell in cells {
        let members = state
            .store
            .window_range(
                &format!("hotspot:{cell}"),
                from.timestamp_millis(),
                now.timestamp_millis(),
            )
            .await?;
        if members.len() >= 2 {
            let centre = bus::geo::cell_centre(cell);
            hotspots.push(Hotspot {
                cell: cell.to_owned(),
                count: members.len(),
                lat: centre.map(|c| c[0]),
                lon: centre.map(|c| c[1]),
            });
        }
    }
    hotspots.sort_by_key(|h| std::cmp::Reverse(h.count));
    hotspots.truncate(HOTSPOTS_SHOWN);

    Ok(StatsBody {
        window_s: window.as_secs(),
        from,
        to: now,
        incidents: incidents.len(),
        by_status,
        by_priority,
        stages,
        hotspots,
    })
}

fn stage_stats(state: &AppState, incidents: &[Incident], stage: Stage) -> StageStats {
    let (mut met, mut breached, mut pending, mut not_applicable) = (0u64, 0u64, 0u64, 0u64);
    let mut times = Vec::new();
    for i in incidents {
        match i.sla.get(stage) {
            SlaState::Met => met += 1,
            SlaState::Breached => breached += 1,
            SlaState::Pending => pending += 1,
            SlaState::NotApplicable => not_applicable += 1,
        }
        if let Some(t) = response_time(state, i, stage) {
            times.push(t);
        }
    }
    times.sort_by(f64::total_cmp);
    let decided = met + breached;
    StageStats {
        met,
        breached,
        pending,
        not_applicable,
        share_met: (decided > 0).then(|| met as f64 / decided as f64),
        p50_s: percentile(&times, 50.0),
        p90_s: percentile(&times, 90.0),
        samples: times.len(),
    }
}

/// Seconds from the incident's creation to reaching `stage`, from the
/// task statuses the api saw.
fn response_time(state: &AppState, incident: &Incident, stage: Stage) -> Option<f64> {
    let times = state.view.stage_times(&incident.id)?;
    let reached = match stage {
        Stage::Respond => times.acknowledged?,
        Stage::Arrive => times.on_scene.first()?.1,
        Stage::Reinforce => {
            let area = state
                .config
                .jurisdiction(&incident.jurisdiction)
                .map(|j| j.area_type)
                .unwrap_or(bus::config::AreaType::Urban);
            let needed = state
                .config
                .sla_target(area, incident.priority)
                .map_or(1, |t| t.reinforce_units.max(1)) as usize;
            times.on_scene.get(needed - 1)?.1
        }
    };
    let secs = (reached - incident.created_at).num_milliseconds() as f64 / 1000.0;
    (secs >= 0.0).then_some(secs)
}

/// `GET /api/v1/coverage`: per grid cell of the caller's jurisdictions,
/// the best travel time of an available unit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CoverageBody {
    pub cells: Vec<CoverageCell>,
    pub total_cells: usize,
    /// Available units with a position.
    pub available_units: usize,
    /// Share of the cells reachable within 60 s (0 to 1; 0 without cells).
    pub share_60s: f64,
    pub share_180s: f64,
    pub share_300s: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CoverageCell {
    pub cell: String,
    pub lat: f64,
    pub lon: f64,
    pub jurisdiction: String,
    /// Seconds, rounded; null when no unit is available.
    #[schema(required = true)]
    pub best_s: Option<f64>,
    pub within_60s: bool,
    pub within_180s: bool,
    pub within_300s: bool,
}

/// For each cell: the best straight-line travel time of an available unit
/// (distance × road factor / unit speed) and which circles it falls in.
pub fn coverage(
    cells: &[Cell],
    units: &[Unit],
    road_factor: f64,
    router: &RouterConfig,
    claims: &Claims,
) -> CoverageBody {
    let available: Vec<(f64, f64, f64)> = units
        .iter()
        .filter(|u| u.status == UnitStatus::Available)
        .filter_map(|u| {
            let speed_ms = router.speed_kmh(u.unit_type) / 3.6;
            Some((u.lat?, u.lon?, speed_ms))
        })
        .filter(|(_, _, s)| *s > 0.0)
        .collect();
    let mut covered = [0u64; 3];
    let mut out = Vec::new();
    for cell in cells.iter().filter(|c| claims.covers(&c.jurisdiction)) {
        let best = available
            .iter()
            .map(|(lat, lon, speed)| haversine_m(cell.lat, cell.lon, *lat, *lon) * road_factor / speed)
            .min_by(f64::total_cmp);
        let within = THRESHOLDS_S.map(|t| best.is_some_and(|b| b <= t));
        for (i, w) in within.iter().enumerate() {
            covered[i] += u64::from(*w);
        }
        out.push(CoverageCell {
            cell: cell.id.clone(),
            lat: cell.lat,
            lon: cell.lon,
            jurisdiction: cell.jurisdiction.clone(),
            best_s: best.map(f64::round),
            within_60s: within[0],
            within_180s: within[1],
            within_300s: within[2],
        });
    }
    let total = out.len() as f64;
    let share = |n: u64| if total > 0.0 { n as f64 / total } else { 0.0 };
    CoverageBody {
        total_cells: out.len(),
        available_units: available.len(),
        share_60s: share(covered[0]),
        share_180s: share(covered[1]),
        share_300s: share(covered[2]),
        cells: out,
    }
}
