//! The pure core of the router: given configuration, the incidents it holds
//! and an explicit `now`, it decides — new incidents, repeat links,
//! diversion, desks, deadlines, unit ranking, SLA stages met or breached,
//! incident status from its tasks. The IO edge ([`crate::service`]) feeds it
//! and publishes what it decided.
//!
//! Must never do IO or read the wall clock: every time it needs is passed
//! in, so tests drive the 1-3-5 clock without waiting. The rules on an
//! incident's own state (status from its tasks, timeline) are in
//! [`crate::incident`]; the spatial index of open incidents in
//! [`crate::index`]; dispatch planning in [`crate::plan`].

use std::sync::Arc;

use bus::config::{AreaType, Config, DispatchMode, SlaTarget};
use bus::geo::{CityMap, haversine_m};
use bus::model::{
    Deadlines, Event, Flag, Incident, IncidentStatus, Sla, SlaState, Source, Stage, Task, TaskKind, TaskStatus,
    Timestamp, Unit, UnitType, add_flag, new_id,
};

pub use crate::incident::BY_ROUTER;
use crate::incident::{add_desk, entry, is_unlocated, not_applicable, on_scene_count};
use crate::index::METRES_PER_DEGREE;
use crate::score::{Score, Scorer};
use crate::travel::TravelTime;

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

    /// Automatic dispatch is held for the incident (by `hold`, or its
    /// priority's mode is `recommend`): the router ranks units and an
    /// operator assigns.
    pub fn held(&self, incident: &Incident) -> bool {
        incident.hold || self.config.dispatch.mode(incident.priority) == DispatchMode::Recommend
    }

    /// A unit not heard from (position or status) for
    /// `dispatch.stale_after_s`: its terminal may be dead, so it is not
    /// dispatched.
    pub fn is_stale(&self, unit: &Unit, now: Timestamp) -> bool {
        let limit = i64::try_from(self.config.dispatch.stale_after_s).unwrap_or(i64::MAX);
        (now - unit.at).num_seconds() > limit
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

    /// The open incident of a related kind the caller of `event` already
    /// called about, within the repeat window, wherever they call from now (a mobile caller
    /// moves; a landline call may have no position at all, and is then
    /// matched across jurisdictions): the latest such incident of those
    /// given (the ones this instance owns), with the distance between the
    /// two places (0 when either has none).
    pub fn find_caller_link<'a>(
        &self,
        event: &Event,
        open: impl IntoIterator<Item = &'a Incident>,
    ) -> Option<(&'a Incident, f64)> {
        let phone = event
            .input
            .caller
            .as_ref()?
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())?;
        let window_s = i64::try_from(self.config.router.repeat_window_s).unwrap_or(i64::MAX);
        open.into_iter()
            .filter(|i| {
                // An unlocated call was placed in the fallback
                // jurisdiction: its caller's incident may be anywhere.
                let unlocated = event.input.location.is_none() && event.input.flags.contains(&Flag::Unlocated);
                i.status.is_open()
                    && i.status != IncidentStatus::Resolved
                    && (i.jurisdiction == event.jurisdiction || unlocated)
                    && !i.events.contains(&event.id)
                    && (event.received_at - i.created_at).num_seconds().abs() <= window_s
                    && self.related(&event.input.kind, &i.kind)
                    && i.callers.iter().any(|c| c.phone.as_deref() == Some(phone))
            })
            .max_by_key(|i| i.created_at)
            .map(|i| {
                let distance = match (&event.input.location, &i.location) {
                    (Some(a), Some(b)) => haversine_m(a.lat, a.lon, b.lat, b.lon),
                    _ => 0.0,
                };
                (i, distance)
            })
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
            ladder: Default::default(),
            requested: Vec::new(),
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
            callers: event.input.caller.iter().cloned().collect(),
            hold: false,
            candidates: Vec::new(),
            merged_into: None,
            merged: Vec::new(),
            split_from: None,
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
        if let Some(caller) = &event.input.caller {
            crate::incident::add_caller(&mut incident.callers, caller);
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
            self.retarget(incident, false);
        }
    }

    /// Recomputes the deadlines of stages still pending after a priority
    /// change; met or breached stages keep theirs. A call raises a priority
    /// only, so its deadlines only tighten; an operator who lowers one
    /// (`loosen`) gives the pending stages the new priority's deadlines.
    pub fn retarget(&self, incident: &mut Incident, loosen: bool) {
        let Some(old) = incident.deadlines.clone() else { return };
        let from = incident.created_at;
        let Some(new) = self.deadlines(&incident.jurisdiction, incident.priority, from) else {
            return;
        };
        let pick = |stage: Stage| {
            if incident.sla.get(stage) == SlaState::Pending {
                if loosen {
                    new.get(stage)
                } else {
                    new.get(stage).min(old.get(stage))
                }
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
        let mut task = Task {
            id: new_id(),
            incident: incident.id.clone(),
            unit: unit.to_owned(),
            version: 0,
            kind,
            priority: incident.priority,
            location: None,
            summary: String::new(),
            issued_at: now,
            deadlines: None,
            status: TaskStatus::Issued,
            jurisdiction: incident.jurisdiction.clone(),
            updated_at: now,
            incident_kind: String::new(),
            caller: None,
            other_units: Vec::new(),
            changes: Vec::new(),
            reason: None,
        };
        crate::briefing::brief(&mut task, incident, self.dispatch_point(incident));
        task
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

#[cfg(test)]
mod tests;
