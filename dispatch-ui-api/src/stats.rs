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
use bus::model::{Incident, SlaState, Stage, Unit, UnitStatus};
use serde_json::{Value, json};

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

pub async fn compute(state: &AppState, claims: &Claims, window: Duration) -> Result<Value, ApiError> {
    let now = chrono::Utc::now();
    let from = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
    let incidents: Vec<Incident> = crate::rest::all_incidents(state, true)
        .await?
        .into_iter()
        .filter(|i| i.created_at >= from && claims.covers(&i.jurisdiction))
        .collect();

    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_priority: BTreeMap<String, u64> = BTreeMap::new();
    for i in &incidents {
        *by_status.entry(i.status.as_str()).or_default() += 1;
        *by_priority.entry(i.priority.to_string()).or_default() += 1;
    }

    let mut stages = serde_json::Map::new();
    for stage in Stage::ALL {
        let (mut met, mut breached, mut pending, mut na) = (0u64, 0u64, 0u64, 0u64);
        let mut times = Vec::new();
        for i in &incidents {
            match i.sla.get(stage) {
                SlaState::Met => met += 1,
                SlaState::Breached => breached += 1,
                SlaState::Pending => pending += 1,
                SlaState::NotApplicable => na += 1,
            }
            if let Some(t) = response_time(state, i, stage) {
                times.push(t);
            }
        }
        times.sort_by(f64::total_cmp);
        let decided = met + breached;
        stages.insert(
            stage.as_str().to_owned(),
            json!({
                "met": met, "breached": breached, "pending": pending, "n/a": na,
                "share_met": (decided > 0).then(|| met as f64 / decided as f64),
                "p50_s": percentile(&times, 50.0), "p90_s": percentile(&times, 90.0),
                "samples": times.len(),
            }),
        );
    }

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
            hotspots.push(json!({
                "cell": cell, "count": members.len(),
                "lat": centre.map(|c| c[0]), "lon": centre.map(|c| c[1]),
            }));
        }
    }
    hotspots.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    hotspots.truncate(HOTSPOTS_SHOWN);

    Ok(json!({
        "window_s": window.as_secs(),
        "from": from, "to": now,
        "incidents": incidents.len(),
        "by_status": by_status,
        "by_priority": by_priority,
        "stages": stages,
        "hotspots": hotspots,
    }))
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

/// For each cell: the best straight-line travel time of an available unit
/// (distance × road factor / unit speed) and which circles it falls in.
pub fn coverage(cells: &[Cell], units: &[Unit], road_factor: f64, router: &RouterConfig, claims: &Claims) -> Value {
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
        let within: Vec<bool> = THRESHOLDS_S.iter().map(|t| best.is_some_and(|b| b <= *t)).collect();
        for (i, w) in within.iter().enumerate() {
            covered[i] += u64::from(*w);
        }
        out.push(json!({
            "cell": cell.id, "lat": cell.lat, "lon": cell.lon, "jurisdiction": cell.jurisdiction,
            "best_s": best.map(|b| b.round()),
            "within_60s": within[0], "within_180s": within[1], "within_300s": within[2],
        }));
    }
    let total = out.len() as f64;
    let share = |n: u64| if total > 0.0 { n as f64 / total } else { 0.0 };
    json!({
        "cells": out,
        "total_cells": out.len(),
        "available_units": available.len(),
        "share_60s": share(covered[0]), "share_180s": share(covered[1]), "share_300s": share(covered[2]),
    })
}
