//! The pure core of the router: given configuration, the incidents it holds
//! and an explicit `now`, it decides — new incidents, repeat links,
//! diversion, desks, deadlines, unit ranking, SLA stages met or breached,
//! incident status from its tasks. The IO edge ([`crate::service`]) feeds it
//! and publishes what it decided.
//!
//! Must never do IO or read the wall clock: every time it needs is passed
//! in, so tests drive the 1-3-5 clock without waiting.

use std::collections::HashMap;
use std::sync::Arc;

use bus::config::{AreaType, Config, SlaTarget};
use bus::geo::{CityMap, haversine_m};
use bus::model::{
    Deadlines, Event, Flag, Incident, IncidentStatus, Location, Sla, SlaState, Source, Stage, Task, TaskKind,
    TaskStatus, TimelineEntry, Timestamp, Unit, UnitType, add_flag, new_id,
};

use crate::score::{Score, Scorer};
use crate::travel::TravelTime;

/// Who the router signs its own timeline entries with.
pub const BY_ROUTER: &str = "router";

/// Why an event joined an existing incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Same or related kind, close in space and time (重复警情).
    Repeat,
    /// A sensor alarm and a call about the same place and time.
    Fusion,
}

/// A unit that could take a task, with its straight-line distance.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub unit: Unit,
    pub distance_m: f64,
}

/// A candidate after ranking, with its predicted travel time.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub unit: Unit,
    pub eta_s: u32,
    /// Predicted to arrive before the incident's arrive deadline.
    pub in_time: bool,
}

/// The router's decisions, over configuration and a travel-time model.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Arc<Config>,
    scorer: Scorer,
    city: CityMap,
    travel: Arc<dyn TravelTime>,
}

impl Engine {
    pub fn new(config: Arc<Config>, travel: Arc<dyn TravelTime>) -> Engine {
        Engine {
            scorer: Scorer::new(&config),
            city: CityMap::new(&config),
            config,
            travel,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn city(&self) -> &CityMap {
        &self.city
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    fn area_type(&self, jurisdiction: &str) -> AreaType {
        self.config
            .jurisdiction(jurisdiction)
            .map_or(AreaType::Urban, |j| j.area_type)
    }

    /// The 1-3-5 targets for an incident of this jurisdiction and priority.
    pub fn sla_target(&self, jurisdiction: &str, priority: u8) -> Option<&SlaTarget> {
        self.config.sla_target(self.area_type(jurisdiction), priority)
    }

    /// How many units must be on scene for the reinforce stage.
    pub fn reinforce_units(&self, jurisdiction: &str, priority: u8) -> u32 {
        self.sla_target(jurisdiction, priority)
            .map_or(1, |t| t.reinforce_units.max(1))
    }

    /// Deadlines counted from `from` (the first event's receipt).
    pub fn deadlines(&self, jurisdiction: &str, priority: u8, from: Timestamp) -> Option<Deadlines> {
        let t = self.sla_target(jurisdiction, priority)?;
        let at = |s: u64| from + chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000));
        Some(Deadlines {
            respond: at(t.respond_s),
            arrive: at(t.arrive_s),
            reinforce: at(t.reinforce_s),
        })
    }

    /// Where units are sent: the incident's location, else its
    /// jurisdiction's centre (an alert routed by area name). None for an
    /// unlocated call: its jurisdiction is only the fallback, and a unit
    /// sent to the middle of the city goes nowhere useful, so a person
    /// places it (the command desk) or assigns a unit, and meanwhile the
    /// no-unit escalation reaches the supervisor.
    pub fn dispatch_point(&self, incident: &Incident) -> Option<(f64, f64)> {
        if let Some(loc) = &incident.location {
            return Some((loc.lat, loc.lon));
        }
        if is_unlocated(incident) {
            return None;
        }
        self.config
            .jurisdiction(&incident.jurisdiction)
            .map(|j| (j.centre[0], j.centre[1]))
    }

    /// The furthest an event may be from an incident it joins.
    pub fn link_reach_m(&self) -> f64 {
        let r = &self.config.router;
        r.repeat_distance_m.max(r.fusion_distance_m)
    }

    /// Same kind, or one lists the other as related.
    pub fn related(&self, a: &str, b: &str) -> bool {
        a == b
            || self
                .scorer
                .category(a)
                .is_some_and(|c| c.related.iter().any(|r| r == b))
            || self
                .scorer
                .category(b)
                .is_some_and(|c| c.related.iter().any(|r| r == a))
    }

    /// The open incident `event` repeats or fuses with, nearest first.
    /// Only incidents of the event's jurisdiction: they are the ones this
    /// router instance owns.
    pub fn find_link<'a>(
        &self,
        event: &Event,
        open: impl IntoIterator<Item = &'a Incident>,
    ) -> Option<(&'a Incident, Link, f64)> {
        let loc = event.input.location.as_ref()?;
        let r = &self.config.router;
        // Cheap reject before the great-circle distance: one degree of
        // latitude is ~111 km everywhere, so a larger gap is out of reach.
        let reach_deg = self.link_reach_m() / METRES_PER_DEGREE;
        let mut best: Option<(&Incident, Link, f64)> = None;
        for incident in open {
            if incident
                .location
                .as_ref()
                .is_none_or(|at| (at.lat - loc.lat).abs() > reach_deg)
            {
                continue;
            }
            if !incident.status.is_open()
                || incident.status == IncidentStatus::Resolved
                || incident.jurisdiction != event.jurisdiction
                || incident.events.contains(&event.id)
            {
                continue;
            }
            let Some(at) = &incident.location else { continue };
            let distance = haversine_m(loc.lat, loc.lon, at.lat, at.lon);
            let age_s = (event.received_at - incident.created_at).num_seconds().abs();
            let link = if self.related(&event.input.kind, &incident.kind)
                && distance <= r.repeat_distance_m
                && age_s <= i64::try_from(r.repeat_window_s).unwrap_or(i64::MAX)
            {
                Some(Link::Repeat)
            } else if distance <= r.fusion_distance_m
                && age_s <= i64::try_from(r.fusion_window_s).unwrap_or(i64::MAX)
                && fusable(event.input.source, incident)
            {
                Some(Link::Fusion)
            } else {
                None
            };
            if let Some(link) = link
                && best.as_ref().is_none_or(|(_, _, d)| distance < *d)
            {
                best = Some((incident, link, distance));
            }
        }
        best
    }

    /// A new incident from its first event. Diverts a non-police category
    /// unless the text shows danger; routes to desks; sets deadlines.
    pub fn new_incident(&self, event: &Event, score: &Score, now: Timestamp) -> Incident {
        let by = event.input.source.as_str();
        let category = self.scorer.category(&event.input.kind);
        let mut timeline = vec![entry(
            now,
            format!(
                "created from {} event {} ({})",
                event.input.source.as_str(),
                event.id,
                event.input.source_id
            ),
            by,
        )];
        timeline.push(entry(
            now,
            format!(
                "scored {} priority {}: {}",
                score.score,
                score.priority,
                score.reasons.join("; ")
            ),
            BY_ROUTER,
        ));

        let mut diverted_to = None;
        if let Some(agency) = category.and_then(|c| c.divert_to.clone()) {
            if score.danger {
                timeline.push(entry(
                    now,
                    format!(
                        "not diverted to {agency}: signs of danger ({})",
                        score.danger_labels.join(", ")
                    ),
                    BY_ROUTER,
                ));
            } else {
                timeline.push(entry(
                    now,
                    format!("diverted to {agency}: not a police matter"),
                    BY_ROUTER,
                ));
                diverted_to = Some(agency);
            }
        }

        let mut desks: Vec<String> = category.map(|c| c.desks.clone()).unwrap_or_default();
        if desks.is_empty()
            && let Some(unknown) = self.scorer.category("unknown")
        {
            desks.clone_from(&unknown.desks);
        }
        let unlocated = event.input.location.is_none() && event.input.flags.contains(&Flag::Unlocated);
        // A call nobody can place needs a person: the command desk places
        // it, as it takes every P1.
        if (score.priority == 1 || unlocated) && diverted_to.is_none() {
            add_desk(&mut desks, &self.config.router.command_desk);
        }
        timeline.push(entry(now, format!("routed to desks {}", desks.join(", ")), BY_ROUTER));

        let (status, sla, deadlines) = if diverted_to.is_some() {
            (IncidentStatus::Diverted, not_applicable(), None)
        } else {
            (
                IncidentStatus::New,
                Sla::default(),
                self.deadlines(&event.jurisdiction, score.priority, event.received_at),
            )
        };
        if event
            .input
            .attrs
            .get("outside_jurisdictions")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            timeline.push(entry(
                now,
                format!("outside every station area: handled by {}", event.jurisdiction),
                BY_ROUTER,
            ));
        }

        if unlocated && diverted_to.is_none() {
            let address = event.input.attrs.get("address").and_then(serde_json::Value::as_str);
            let what = match address {
                Some(a) => format!("location unknown: dispatch waits for a location (address given: {a})"),
                None => "location unknown: dispatch waits for a location".to_owned(),
            };
            timeline.push(entry(now, what, BY_ROUTER));
        }
        if let Some(what) = corrections(&event.input.flags) {
            timeline.push(entry(now, what, BY_ROUTER));
        }

        Incident {
            id: new_id(),
            version: 0,
            status,
            priority: score.priority,
            score: score.score,
            kind: event.input.kind.clone(),
            location: event.input.location.clone(),
            jurisdiction: event.jurisdiction.clone(),
            cell: event.cell.clone(),
            desks,
            events: vec![event.id.clone()],
            repeat_count: 1,
            diverted_to,
            created_at: event.received_at.min(now),
            updated_at: now,
            deadlines,
            sla,
            units: Vec::new(),
            timeline,
            text: event.input.text.clone(),
            disposition: None,
            feedback: None,
            follow_up_of: None,
            flags: event.input.flags.clone(),
        }
    }

    /// Joins a repeat call or a fused sensor alarm to `incident`; the
    /// priority may rise (never fall), and pending deadlines follow it.
    pub fn join(&self, incident: &mut Incident, event: &Event, link: Link, distance_m: f64, now: Timestamp) {
        incident.events.push(event.id.clone());
        incident.repeat_count = incident.repeat_count.saturating_add(1);
        let what = match link {
            Link::Repeat => "repeat call",
            Link::Fusion => "sensor alarm and call fused",
        };
        incident.timeline.push(entry(
            now,
            format!(
                "{what}: {} event {} ({}, {:.0} m away), {} calls",
                event.input.source.as_str(),
                event.id,
                event.input.kind,
                distance_m,
                incident.repeat_count
            ),
            event.input.source.as_str(),
        ));
        if incident.location.is_none() {
            incident.location.clone_from(&event.input.location);
        }
        // The incident keeps what was wrong with any of its calls, except
        // a place it does not lack: its location came from another call.
        let before = incident.flags.len();
        for flag in &event.input.flags {
            if !(incident.location.is_some() && matches!(flag, Flag::Unlocated)) {
                add_flag(&mut incident.flags, *flag);
            }
        }
        if incident.flags.len() > before
            && let Some(what) = corrections(&incident.flags[before..])
        {
            incident.timeline.push(entry(now, what, BY_ROUTER));
        }
        let score = self.scorer.score(event, incident.repeat_count);
        if score.score > incident.score {
            incident.score = score.score;
        }
        if score.priority < incident.priority {
            incident.timeline.push(entry(
                now,
                format!(
                    "priority raised {} -> {}: {}",
                    incident.priority,
                    score.priority,
                    score.reasons.join("; ")
                ),
                BY_ROUTER,
            ));
            incident.priority = score.priority;
            if score.priority == 1 {
                add_desk(&mut incident.desks, &self.config.router.command_desk);
            }
            self.retarget(incident);
        }
    }

    /// Recomputes the deadlines of stages still pending after a priority
    /// change; met or breached stages keep theirs.
    fn retarget(&self, incident: &mut Incident) {
        let Some(old) = incident.deadlines.clone() else { return };
        let from = incident.created_at;
        let Some(new) = self.deadlines(&incident.jurisdiction, incident.priority, from) else {
            return;
        };
        let pick = |stage: Stage| {
            if incident.sla.get(stage) == SlaState::Pending {
                new.get(stage).min(old.get(stage))
            } else {
                old.get(stage)
            }
        };
        incident.deadlines = Some(Deadlines {
            respond: pick(Stage::Respond),
            arrive: pick(Stage::Arrive),
            reinforce: pick(Stage::Reinforce),
        });
    }

    /// Orders candidates for a task: units predicted to arrive within the
    /// arrive target come first (special units last among them, so a
    /// patrol car that makes it is preferred over pulling a specialist),
    /// each group fastest first.
    pub fn rank(&self, incident: &Incident, candidates: Vec<Candidate>, now: Timestamp) -> Vec<Ranked> {
        let budget_s = incident
            .deadlines
            .as_ref()
            .map_or(i64::MAX, |d| (d.arrive - now).num_seconds().max(0));
        let mut ranked: Vec<Ranked> = candidates
            .into_iter()
            .map(|c| {
                let eta_s = self.travel.eta_s(c.unit.unit_type, c.distance_m);
                Ranked {
                    in_time: i64::from(eta_s) <= budget_s,
                    unit: c.unit,
                    eta_s,
                }
            })
            .collect();
        ranked.sort_by_key(|r| {
            let group = match (r.in_time, r.unit.unit_type == UnitType::Special) {
                (true, false) => 0,
                (true, true) => 1,
                (false, _) => 2,
            };
            (group, r.eta_s, r.unit.id.clone())
        });
        ranked
    }

    /// A task for `unit` on `incident`.
    pub fn new_task(&self, incident: &Incident, unit: &str, kind: TaskKind, now: Timestamp) -> Task {
        let text = incident.text.as_deref().unwrap_or_default();
        let mut summary = format!("P{} {}", incident.priority, incident.kind);
        if !text.is_empty() {
            summary.push_str(": ");
            summary.extend(text.chars().take(120));
        }
        Task {
            id: new_id(),
            incident: incident.id.clone(),
            unit: unit.to_owned(),
            version: 0,
            kind,
            priority: incident.priority,
            location: incident.location.clone().or_else(|| {
                self.dispatch_point(incident).map(|(lat, lon)| Location {
                    lat,
                    lon,
                    address: None,
                })
            }),
            summary,
            issued_at: now,
            deadlines: incident.deadlines.clone(),
            status: TaskStatus::Issued,
            jurisdiction: incident.jurisdiction.clone(),
            updated_at: now,
        }
    }

    /// Marks the stages whose condition now holds as met, if before their
    /// deadline (after it, the clock marks them breached). Returns the
    /// stages newly met.
    pub fn update_sla(&self, incident: &mut Incident, at: Timestamp) -> Vec<Stage> {
        let Some(deadlines) = incident.deadlines.clone() else {
            return Vec::new();
        };
        let acknowledged = incident.units.iter().any(|u| {
            matches!(
                u.status,
                TaskStatus::Acknowledged | TaskStatus::EnRoute | TaskStatus::OnScene | TaskStatus::Cleared
            )
        });
        let on_scene = on_scene_count(incident);
        let needed = self.reinforce_units(&incident.jurisdiction, incident.priority);
        let holds = |stage: Stage| match stage {
            Stage::Respond => acknowledged,
            Stage::Arrive => on_scene >= 1,
            Stage::Reinforce => on_scene >= needed,
        };
        let mut met = Vec::new();
        for stage in Stage::ALL {
            if incident.sla.get(stage) == SlaState::Pending && holds(stage) && at <= deadlines.get(stage) {
                incident.sla.set(stage, SlaState::Met);
                incident
                    .timeline
                    .push(entry(at, format!("{} target met", stage.as_str()), BY_ROUTER));
                met.push(stage);
            }
        }
        met
    }

    /// The clock: every stage still pending past its deadline is breached.
    /// Returns the stages newly breached.
    pub fn clock(&self, incident: &mut Incident, now: Timestamp) -> Vec<Stage> {
        if !incident.status.is_open() || incident.status == IncidentStatus::Resolved {
            return Vec::new();
        }
        let Some(deadlines) = incident.deadlines.clone() else {
            return Vec::new();
        };
        let mut breached = Vec::new();
        for stage in Stage::ALL {
            let deadline = deadlines.get(stage);
            if incident.sla.get(stage) == SlaState::Pending && now > deadline {
                incident.sla.set(stage, SlaState::Breached);
                incident.timeline.push(entry(
                    now,
                    format!(
                        "{} target breached (deadline {})",
                        stage.as_str(),
                        deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    BY_ROUTER,
                ));
                breached.push(stage);
            }
        }
        breached
    }
}

/// Open incidents by grid square, so repeat linking looks only at the
/// incidents near an event instead of every open one. Squares are at least
/// `reach_m` tall; a query covers enough squares east and west for the
/// latitude.
#[derive(Debug, Clone)]
pub struct SpatialIndex {
    cell_deg: f64,
    reach_m: f64,
    cells: HashMap<(i64, i64), Vec<String>>,
    at: HashMap<String, (i64, i64)>,
}

impl SpatialIndex {
    pub fn new(reach_m: f64) -> SpatialIndex {
        let reach_m = reach_m.max(1.0);
        SpatialIndex {
            cell_deg: reach_m / METRES_PER_DEGREE,
            reach_m,
            cells: HashMap::new(),
            at: HashMap::new(),
        }
    }

    fn key(&self, lat: f64, lon: f64) -> (i64, i64) {
        (
            (lat / self.cell_deg).floor() as i64,
            (lon / self.cell_deg).floor() as i64,
        )
    }

    /// Indexes (or moves) an incident; one without a location is dropped
    /// from the index, as it cannot be linked by place.
    pub fn insert(&mut self, incident: &Incident) {
        self.remove(&incident.id);
        if let Some(loc) = &incident.location
            && loc.lat.is_finite()
            && loc.lon.is_finite()
        {
            let key = self.key(loc.lat, loc.lon);
            self.cells.entry(key).or_default().push(incident.id.clone());
            self.at.insert(incident.id.clone(), key);
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(key) = self.at.remove(id)
            && let Some(ids) = self.cells.get_mut(&key)
        {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.cells.remove(&key);
            }
        }
    }

    pub fn clear(&mut self) {
        self.cells.clear();
        self.at.clear();
    }

    /// Ids of incidents within `reach_m` of the point (and some beyond).
    pub fn near(&self, lat: f64, lon: f64) -> impl Iterator<Item = &str> {
        let (row, col) = self.key(lat, lon);
        let lon_deg = self.reach_m / (METRES_PER_DEGREE * lat.to_radians().cos().abs().max(0.01));
        let span = (lon_deg / self.cell_deg).ceil().clamp(1.0, 1000.0) as i64;
        (row - 1..=row + 1)
            .flat_map(move |r| (col - span..=col + span).map(move |c| (r, c)))
            .filter_map(|k| self.cells.get(&k))
            .flatten()
            .map(String::as_str)
    }
}

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_000.0;

/// Sets the incident's status from its tasks: the furthest open task, or
/// resolved once every task that was not cancelled is cleared. Closed and
/// diverted incidents keep their status.
pub fn derive_status(incident: &mut Incident) {
    if !incident.status.is_open() {
        return;
    }
    let rank = |s: TaskStatus| match s {
        TaskStatus::Issued => 1,
        TaskStatus::Acknowledged => 2,
        TaskStatus::EnRoute => 3,
        TaskStatus::OnScene => 4,
        TaskStatus::Cleared | TaskStatus::Cancelled => 0,
    };
    let furthest = incident.units.iter().map(|u| rank(u.status)).max().unwrap_or(0);
    let cleared = incident.units.iter().any(|u| u.status == TaskStatus::Cleared);
    incident.status = match furthest {
        4 => IncidentStatus::OnScene,
        3 => IncidentStatus::EnRoute,
        2 => IncidentStatus::Acknowledged,
        1 => IncidentStatus::Dispatched,
        _ if cleared => IncidentStatus::Resolved,
        _ => IncidentStatus::New,
    };
}

/// Units that reached the scene (and may since have cleared).
pub fn on_scene_count(incident: &Incident) -> u32 {
    incident
        .units
        .iter()
        .filter(|u| matches!(u.status, TaskStatus::OnScene | TaskStatus::Cleared))
        .count() as u32
}

/// A sensor alarm fuses with an incident that has a call, and a call with
/// one that has a sensor alarm; the timeline records each event's source.
fn fusable(source: Source, incident: &Incident) -> bool {
    let has = |s: Source| incident.timeline.iter().any(|t| t.by == s.as_str());
    match source {
        Source::Sensor => has(Source::Call110),
        Source::Call110 => has(Source::Sensor),
        Source::Alert | Source::Report => false,
    }
}

/// A call nobody has placed: no location, flagged `unlocated` by ingest.
/// (An alert without coordinates is not: it was placed by its area name.)
pub fn is_unlocated(incident: &Incident) -> bool {
    incident.location.is_none() && incident.flags.contains(&Flag::Unlocated)
}

/// The timeline line for what ingest corrected in a call, if anything
/// besides its missing place (which has a line of its own).
fn corrections(flags: &[Flag]) -> Option<String> {
    let listed: Vec<&str> = flags
        .iter()
        .filter(|f| **f != Flag::Unlocated)
        .map(|f| f.as_str())
        .collect();
    if listed.is_empty() {
        return None;
    }
    Some(format!(
        "call corrected at intake: {} (originals kept; see the event)",
        listed.join(", ")
    ))
}

pub fn entry(at: Timestamp, what: impl Into<String>, by: impl Into<String>) -> TimelineEntry {
    TimelineEntry {
        at,
        what: what.into(),
        by: by.into(),
    }
}

pub fn add_desk(desks: &mut Vec<String>, desk: &str) {
    if !desks.iter().any(|d| d == desk) {
        desks.insert(0, desk.to_owned());
    }
}

pub fn not_applicable() -> Sla {
    Sla {
        respond: SlaState::NotApplicable,
        arrive: SlaState::NotApplicable,
        reinforce: SlaState::NotApplicable,
    }
}

/// An incident that leaves the police's hands (closed, diverted,
/// cancelled): the stages still pending no longer apply.
pub fn pending_to_na(incident: &mut Incident) {
    for stage in Stage::ALL {
        if incident.sla.get(stage) == SlaState::Pending {
            incident.sla.set(stage, SlaState::NotApplicable);
        }
    }
    if incident.status == IncidentStatus::Diverted && incident.deadlines.is_none() {
        incident.sla = not_applicable();
    }
}

/// Timeline entries kept on an incident: a matter with endless repeat calls
/// must not grow its snapshot past what the broker accepts. The first
/// entries (creation, score, desks) are always kept.
pub const MAX_TIMELINE: usize = 300;
const TIMELINE_HEAD: usize = 10;

/// Elides the oldest entries after the head of a timeline longer than
/// [`MAX_TIMELINE`].
pub fn trim_timeline(incident: &mut Incident, now: Timestamp) {
    let len = incident.timeline.len();
    if len <= MAX_TIMELINE {
        return;
    }
    let cut = len - MAX_TIMELINE + 1;
    incident.timeline.drain(TIMELINE_HEAD..TIMELINE_HEAD + cut);
    incident.timeline.insert(
        TIMELINE_HEAD,
        entry(now, format!("{cut} earlier entries elided"), BY_ROUTER),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::travel::StraightLine;
    use bus::model::{IncidentUnit, InputEvent, UnitRole, UnitStatus};
    use chrono::{TimeZone, Utc};
    use serde_json::Map;
    use std::collections::HashSet;

    fn engine() -> Engine {
        let config = Arc::new(Config::defaults());
        let travel = Arc::new(StraightLine::new(&config.router));
        Engine::new(config, travel)
    }

    fn t0() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 22, 6, 0, 0).unwrap()
    }

    fn event(id: &str, source: Source, kind: &str, text: &str, lat: f64, lon: f64, secs: i64) -> Event {
        Event {
            id: id.into(),
            received_at: t0() + chrono::Duration::seconds(secs),
            jurisdiction: "quancheng".into(),
            cell: None,
            input: InputEvent {
                source,
                source_id: format!("src-{id}"),
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
                attrs: Map::new(),
                flags: Vec::new(),
            },
        }
    }

    fn create(e: &Engine, ev: &Event) -> Incident {
        let score = e.scorer().score(ev, 1);
        e.new_incident(ev, &score, ev.received_at)
    }

    #[test]
    fn a_long_timeline_keeps_its_head_and_its_newest_entries() {
        let now = t0();
        let mut incident = create(&engine(), &event("e", Source::Call110, "theft", "", 36.665, 117.025, 0));
        incident.timeline = (0..1000)
            .map(|i| TimelineEntry {
                at: now,
                what: format!("e{i}"),
                by: "x".into(),
            })
            .collect();
        trim_timeline(&mut incident, now);
        assert_eq!(incident.timeline.len(), MAX_TIMELINE);
        assert_eq!(incident.timeline[0].what, "e0");
        assert_eq!(incident.timeline[TIMELINE_HEAD - 1].what, "e9");
        assert!(incident.timeline[TIMELINE_HEAD].what.contains("elided"));
        assert_eq!(incident.timeline.last().unwrap().what, "e999");
        assert_eq!(
            incident.timeline[TIMELINE_HEAD + 1].what,
            format!("e{}", 1000 - MAX_TIMELINE + TIMELINE_HEAD + 1)
        );
    }

    fn unit(id: &str, t: UnitType) -> Unit {
        Unit {
            id: id.into(),
            unit_type: t,
            jurisdiction: "quancheng".into(),
            status: UnitStatus::Available,
            lat: None,
            lon: None,
            at: t0(),
            task: None,
            speed_kmh: None,
            name: None,
        }
    }

    #[test]
    fn p1_goes_to_the_command_desk_with_deadlines_from_the_first_event() {
        let e = engine();
        let inc = create(
            &e,
            &event("e1", Source::Call110, "robbery", "持刀抢劫", 36.665, 117.02, 0),
        );
        assert_eq!(inc.priority, 1);
        assert_eq!(inc.desks, vec!["command", "patrol", "criminal"]);
        let d = inc.deadlines.unwrap();
        assert_eq!(d.respond, t0() + chrono::Duration::seconds(60));
        assert_eq!(d.arrive, t0() + chrono::Duration::seconds(180));
        assert_eq!(d.reinforce, t0() + chrono::Duration::seconds(300));
        assert!(inc.timeline.iter().any(|t| t.what.contains("weapon: knife")));

        let p3 = create(
            &e,
            &event("e2", Source::Call110, "fraud", "电话诈骗", 36.665, 117.02, 0),
        );
        assert_eq!(p3.desks, vec!["cyber"]);
    }

    #[test]
    fn noise_is_diverted_unless_the_text_shows_danger() {
        let e = engine();
        let quiet = create(
            &e,
            &event("e1", Source::Call110, "noise", "楼上太吵", 36.665, 117.02, 0),
        );
        assert_eq!(quiet.status, IncidentStatus::Diverted);
        assert_eq!(quiet.diverted_to.as_deref(), Some("12345"));
        assert_eq!(quiet.sla, not_applicable());
        assert!(quiet.deadlines.is_none());

        let loud = create(
            &e,
            &event("e2", Source::Call110, "noise", "吵架还动了刀", 36.665, 117.02, 0),
        );
        assert_eq!(loud.status, IncidentStatus::New);
        assert!(loud.diverted_to.is_none());
        assert!(loud.timeline.iter().any(|t| t.what.contains("not diverted to 12345")));
    }

    #[test]
    fn an_incident_keeps_its_calls_flags_once_and_a_located_one_is_not_unlocated() {
        let e = engine();
        let mut first = event("e1", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 0);
        first.input.flags = vec![Flag::ClockSkew];
        let mut inc = create(&e, &first);
        assert_eq!(inc.flags, vec![Flag::ClockSkew]);
        assert!(
            inc.timeline
                .iter()
                .any(|t| t.what.contains("corrected at intake: clock_skew"))
        );
        assert!(e.dispatch_point(&inc).is_some());

        let mut again = event("e2", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 60);
        again.input.flags = vec![Flag::ClockSkew, Flag::Truncated, Flag::Unlocated];
        e.join(&mut inc, &again, Link::Repeat, 0.0, again.received_at);
        assert_eq!(inc.flags, vec![Flag::ClockSkew, Flag::Truncated]);

        let mut nowhere = event("e3", Source::Call110, "theft", "包被偷了", 0.0, 0.0, 0);
        nowhere.input.location = None;
        nowhere.input.flags = vec![Flag::Unlocated];
        let lost = create(&e, &nowhere);
        assert!(is_unlocated(&lost));
        assert_eq!(e.dispatch_point(&lost), None);
        assert_eq!(lost.desks[0], e.config().router.command_desk);
    }

    #[test]
    fn repeat_calls_link_within_distance_and_window_and_raise_priority() {
        let e = engine();
        let first = create(
            &e,
            &event("e1", Source::Call110, "theft", "包被偷了", 36.665, 117.02, 0),
        );
        assert_eq!(first.priority, 3);
        let open = vec![first];
        // related kind (robbery ↔ theft), 100 m away, 5 minutes later
        let again = event("e2", Source::Call110, "robbery", "抢包", 36.6659, 117.02, 300);
        let (found, link, _) = e.find_link(&again, &open).unwrap();
        assert_eq!(link, Link::Repeat);
        let mut inc = found.clone();
        e.join(&mut inc, &again, link, 100.0, again.received_at);
        assert_eq!(inc.events, vec!["e1", "e2"]);
        assert_eq!(inc.repeat_count, 2);
        assert_eq!(inc.priority, 1);
        assert!(inc.desks.contains(&"command".to_owned()));
        // deadlines tightened to P1's, still from the first event
        assert_eq!(inc.deadlines.unwrap().arrive, t0() + chrono::Duration::seconds(180));

        // too far, too late, unrelated kind, other jurisdiction
        assert!(
            e.find_link(&event("e3", Source::Call110, "theft", "", 36.675, 117.02, 60), &open)
                .is_none()
        );
        assert!(
            e.find_link(&event("e4", Source::Call110, "theft", "", 36.665, 117.02, 4000), &open)
                .is_none()
        );
        assert!(
            e.find_link(&event("e5", Source::Call110, "fraud", "", 36.665, 117.02, 60), &open)
                .is_none()
        );
        let mut other = event("e6", Source::Call110, "theft", "", 36.665, 117.02, 60);
        other.jurisdiction = "daminghu".into();
        assert!(e.find_link(&other, &open).is_none());
    }

    #[test]
    fn a_sensor_alarm_fuses_with_a_call_about_the_same_place_and_time() {
        let e = engine();
        let call = create(
            &e,
            &event("e1", Source::Call110, "missing_person", "老人走失", 36.665, 117.02, 0),
        );
        let open = vec![call];
        let alarm = event("e2", Source::Sensor, "efence_breach", "", 36.6655, 117.02, 120);
        let (_, link, _) = e.find_link(&alarm, &open).unwrap();
        assert_eq!(link, Link::Fusion);
        // another call of an unrelated kind does not fuse
        let call2 = event("e3", Source::Call110, "efence_breach", "", 36.6655, 117.02, 120);
        assert!(e.find_link(&call2, &open).is_none());
    }

    #[test]
    fn ranking_prefers_units_in_time_and_spares_special_units() {
        let e = engine();
        let inc = create(&e, &event("e1", Source::Call110, "theft", "", 36.665, 117.02, 0));
        let now = t0();
        let ranked = e.rank(
            &inc,
            vec![
                Candidate {
                    unit: unit("special", UnitType::Special),
                    distance_m: 200.0,
                },
                Candidate {
                    unit: unit("car", UnitType::PatrolCar),
                    distance_m: 800.0,
                },
                Candidate {
                    unit: unit("foot-far", UnitType::Foot),
                    distance_m: 3000.0,
                },
            ],
            now,
        );
        let ids: Vec<&str> = ranked.iter().map(|r| r.unit.id.as_str()).collect();
        assert_eq!(ids, vec!["car", "special", "foot-far"]);
        assert!(!ranked[2].in_time);
    }

    #[test]
    fn the_clock_breaches_pending_stages_past_their_deadline_only() {
        let e = engine();
        let mut inc = create(&e, &event("e1", Source::Call110, "robbery", "持刀", 36.665, 117.02, 0));
        assert!(e.clock(&mut inc, t0() + chrono::Duration::seconds(59)).is_empty());
        inc.units.push(IncidentUnit {
            unit: "u1".into(),
            task: "t1".into(),
            role: UnitRole::Primary,
            status: TaskStatus::Acknowledged,
            eta_s: 30,
        });
        assert_eq!(
            e.update_sla(&mut inc, t0() + chrono::Duration::seconds(30)),
            vec![Stage::Respond]
        );
        assert_eq!(
            e.clock(&mut inc, t0() + chrono::Duration::seconds(181)),
            vec![Stage::Arrive]
        );
        // on scene after the arrive deadline: not met, still one unit short
        inc.units[0].status = TaskStatus::OnScene;
        assert!(e.update_sla(&mut inc, t0() + chrono::Duration::seconds(200)).is_empty());
        inc.units.push(IncidentUnit {
            unit: "u2".into(),
            task: "t2".into(),
            role: UnitRole::Reinforcement,
            status: TaskStatus::OnScene,
            eta_s: 30,
        });
        assert_eq!(
            e.update_sla(&mut inc, t0() + chrono::Duration::seconds(250)),
            vec![Stage::Reinforce]
        );
        assert_eq!(inc.sla.respond, SlaState::Met);
        assert_eq!(inc.sla.arrive, SlaState::Breached);
        assert_eq!(inc.sla.reinforce, SlaState::Met);
        assert!(e.clock(&mut inc, t0() + chrono::Duration::seconds(1000)).is_empty());
    }

    #[test]
    fn the_spatial_index_finds_incidents_within_reach_only() {
        let e = engine();
        let mut index = SpatialIndex::new(300.0);
        let mut near = create(&e, &event("e1", Source::Call110, "theft", "", 36.6650, 117.0250, 0));
        near.id = "near".into();
        let mut east = create(&e, &event("e2", Source::Call110, "theft", "", 36.6650, 117.0282, 0));
        east.id = "east".into();
        let mut far = create(&e, &event("e3", Source::Call110, "theft", "", 36.6750, 117.0250, 0));
        far.id = "far".into();
        for i in [&near, &east, &far] {
            index.insert(i);
        }
        // 285 m east at this latitude: still within reach.
        let found: HashSet<&str> = index.near(36.6650, 117.0250).collect();
        assert!(found.contains("near") && found.contains("east"), "{found:?}");
        assert!(!found.contains("far"));
        index.remove("near");
        index.insert(&east);
        let found: Vec<&str> = index.near(36.6650, 117.0250).collect();
        assert_eq!(found, vec!["east"]);
    }

    #[test]
    fn status_follows_the_furthest_task_and_resolves_when_all_cleared() {
        let e = engine();
        let mut inc = create(&e, &event("e1", Source::Call110, "theft", "", 36.665, 117.02, 0));
        derive_status(&mut inc);
        assert_eq!(inc.status, IncidentStatus::New);
        let mut u = IncidentUnit {
            unit: "u1".into(),
            task: "t1".into(),
            role: UnitRole::Primary,
            status: TaskStatus::Issued,
            eta_s: 1,
        };
        inc.units.push(u.clone());
        derive_status(&mut inc);
        assert_eq!(inc.status, IncidentStatus::Dispatched);
        u.status = TaskStatus::OnScene;
        inc.units[0] = u.clone();
        derive_status(&mut inc);
        assert_eq!(inc.status, IncidentStatus::OnScene);
        inc.units[0].status = TaskStatus::Cleared;
        derive_status(&mut inc);
        assert_eq!(inc.status, IncidentStatus::Resolved);
    }
}
