//! Applying one event: a CAP Update or Cancel changes the incident its
//! alert made (an Ack or Error is noted on it; what else a CAP alert
//! becomes is `cap`'s); any other event joins an open incident it repeats
//! (or fuses with) or opens a new one, which is diverted or gets its units. The
//! engine decides; this module reads and writes through the transaction.

use bus::model::{Event, Flag, IncidentStatus, Source, add_flag};
use serde_json::Value;

use crate::cap::{self, CapHandling, Referring};
use crate::dispatch::{end_tasks, top_up};
use crate::engine::{Engine, Link};
use crate::incident::{BY_ROUTER, derive_status, entry, not_applicable, pending_to_na};
use crate::tx::Tx;

/// Applies `event` (not applied before) within `tx`.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    event: &Event,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    match cap::referring(event) {
        Some(Referring::Response) => return apply_cap_response(tx, event, now).await,
        Some(referring) => {
            let referenced = referenced_incident(tx, event).await?;
            return apply_cap_update(tx, engine, event, referring == Referring::Cancel, referenced, now).await;
        }
        None => {}
    }
    let handling = cap::handling(event);
    if let CapHandling::NoIncident { status } = &handling {
        tracing::info!(event = %event.id, status = %status, "cap alert not for action: no incident");
        metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_not_actual").increment(1);
        return Ok(());
    }
    if let Some((identifier, language)) = cap::language_key(event)
        && tx.capref(&cap::language_ref(&identifier, &language)).await?.is_none()
        && let Some(made) = tx.capref(&identifier).await?
    {
        return join_translation(tx, event, &made, &identifier, &language, now).await;
    }
    if handling != CapHandling::Normal {
        return record_only(tx, engine, event, &handling, now).await;
    }
    // The same caller again (by phone) first: a mobile caller moves, a
    // landline may give no position; then the same place.
    let by_caller = engine
        .find_caller_link(event, tx.books().open.values())
        .map(|(i, distance)| (i.id.clone(), Link::Repeat, distance));
    let link = by_caller.or_else(|| {
        event.input.location.as_ref().and_then(|loc| {
            engine
                .find_link(event, tx.open_near(loc.lat, loc.lon))
                .map(|(i, link, distance)| (i.id.clone(), link, distance))
        })
    });
    let mut incident = if let Some((id, link, distance)) = link {
        let mut incident = tx
            .incident(&id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("linked incident {id} vanished"))?;
        engine.join(&mut incident, event, link, distance, now);
        let label = match link {
            Link::Repeat => "repeat",
            Link::Fusion => "fusion",
        };
        metrics::counter!(bus::metrics::ROUTER_REPEATS_TOTAL, "link" => label).increment(1);
        metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "linked").increment(1);
        if let Some(cell) = &event.cell {
            tx.count_hotspot(cell, &event.id, event.received_at).await?;
        }
        // A raised priority may need more units than were sent.
        if incident.status.is_open() && incident.diverted_to.is_none() && incident.deadlines.is_some() {
            top_up(tx, engine, &mut incident, now).await?;
        }
        incident
    } else {
        let score = engine.scorer().score(event, 1);
        let mut incident = engine.new_incident(event, &score, now);
        metrics::counter!(bus::metrics::ROUTER_INCIDENTS_TOTAL, "priority" => priority_label(incident.priority))
            .increment(1);
        metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "incident").increment(1);
        if incident.status == IncidentStatus::Diverted {
            metrics::counter!(bus::metrics::ROUTER_DIVERTED_TOTAL, "by" => "category").increment(1);
        } else {
            top_up(tx, engine, &mut incident, now).await?;
        }
        incident
    };
    remember_alert(tx, event, &incident.id);
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}

/// Remembers which incident an alert made: by its `<info>`'s source id,
/// by the alert's identifier, and by the identifier in the info's language
/// (so an info in another language joins it as a translation).
fn remember_alert(tx: &mut Tx<'_>, event: &Event, incident: &str) {
    if event.input.source != Source::Alert {
        return;
    }
    tx.put_capref(event.input.source_id.clone(), incident.to_owned());
    if let Some((base, _)) = event.input.source_id.rsplit_once('#') {
        tx.put_capref(base.to_owned(), incident.to_owned());
    }
    if let Some((identifier, language)) = cap::language_key(event) {
        tx.put_capref(cap::language_ref(&identifier, &language), incident.to_owned());
    }
}

/// An exercise, test or expired alert: an incident that records it, closed
/// at once, never dispatched (no deadlines, no units), and says why.
async fn record_only(
    tx: &mut Tx<'_>,
    engine: &Engine,
    event: &Event,
    handling: &CapHandling,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    let score = engine.scorer().score(event, 1);
    let mut incident = engine.new_incident(event, &score, now);
    let (flag, why) = match handling {
        CapHandling::Exercise { status } => (Flag::Exercise, format!("CAP status {status}: recorded, not dispatched")),
        CapHandling::Expired { expires } => (
            Flag::Expired,
            format!("CAP alert expired at {expires}, before it arrived: recorded, not dispatched"),
        ),
        _ => return Ok(()),
    };
    add_flag(&mut incident.flags, flag);
    incident.timeline.push(entry(now, why.clone(), BY_ROUTER));
    incident.status = IncidentStatus::Closed;
    incident.disposition = Some(why);
    incident.deadlines = None;
    incident.sla = not_applicable();
    metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => flag.as_str()).increment(1);
    remember_alert(tx, event, &incident.id);
    tx.put_incident(incident);
    Ok(())
}

/// Another language's `<info>` of an alert that already made an incident:
/// the same matter, so its text joins that incident and nothing is sent.
async fn join_translation(
    tx: &mut Tx<'_>,
    event: &Event,
    incident_id: &str,
    identifier: &str,
    language: &str,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    let Some(mut incident) = tx.incident(incident_id).await? else {
        anyhow::bail!("the incident {incident_id} of alert {identifier} vanished");
    };
    incident.events.push(event.id.clone());
    let text = event.input.text.as_deref().unwrap_or_default();
    incident.timeline.push(entry(
        now,
        format!("alert {identifier} in {language}: {text}"),
        event.input.source.as_str(),
    ));
    tx.put_capref(event.input.source_id.clone(), incident.id.clone());
    tx.put_capref(cap::language_ref(identifier, language), incident.id.clone());
    metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_translation").increment(1);
    tx.put_incident(incident);
    Ok(())
}

/// A CAP Ack or Error: a line on the referenced alert's incident (open or
/// not), nothing new; nothing at all when no incident is known for it.
async fn apply_cap_response(tx: &mut Tx<'_>, event: &Event, now: bus::model::Timestamp) -> anyhow::Result<()> {
    let attrs = &event.input.attrs;
    let msg_type = attrs.get("cap_msg_type").and_then(Value::as_str).unwrap_or("Ack");
    let Some(id) = referenced_incident(tx, event).await? else {
        metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_response_ignored").increment(1);
        return Ok(());
    };
    let Some(mut incident) = tx.incident(&id).await? else {
        return Ok(());
    };
    let books = tx.books();
    if !books.owns(books.partition_of(&incident.jurisdiction)) {
        return Ok(());
    }
    let sender = attrs.get("cap_sender").and_then(Value::as_str).unwrap_or("?");
    let mut what = format!("CAP {msg_type} from {sender}");
    if let Some(note) = attrs.get("cap_note").and_then(Value::as_str) {
        what.push_str(&format!(": {note}"));
    }
    incident.events.push(event.id.clone());
    incident.timeline.push(entry(now, what, event.input.source.as_str()));
    metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_response").increment(1);
    tx.put_incident(incident);
    Ok(())
}

/// A CAP Update or Cancel: changes the open incident its references made,
/// or (a cancel of an alert that made none) does nothing at all.
async fn apply_cap_update(
    tx: &mut Tx<'_>,
    engine: &Engine,
    event: &Event,
    cancel: bool,
    referenced: Option<String>,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    // Only an open incident this router owns: another's is not ours to
    // write.
    let open = match &referenced {
        Some(id) => tx.incident(id).await?.filter(|i| {
            let books = tx.books();
            i.status.is_open() && books.owns(books.partition_of(&i.jurisdiction))
        }),
        None => None,
    };
    let Some(mut incident) = open else {
        if cancel {
            tracing::info!(event = %event.id, "cap cancel for no open incident");
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_cancel_ignored").increment(1);
            return Ok(());
        }
        // An update of an alert that made no open incident is a new alert.
        return Box::pin(apply_as_new(tx, engine, event, now)).await;
    };
    incident.events.push(event.id.clone());
    if cancel {
        incident.timeline.push(entry(
            now,
            format!("cancelled by alert {}", event.input.source_id),
            event.input.source.as_str(),
        ));
        end_tasks(tx, &mut incident, now, "alert cancelled").await?;
        incident.status = IncidentStatus::Closed;
        incident.disposition = Some(format!("cancelled by alert {}", event.input.source_id));
        pending_to_na(&mut incident);
    } else {
        let score = engine.scorer().score(event, incident.repeat_count);
        incident.timeline.push(entry(
            now,
            format!(
                "updated by alert {}: scored {} ({})",
                event.input.source_id,
                score.score,
                score.reasons.join("; ")
            ),
            event.input.source.as_str(),
        ));
        if let Some(text) = &event.input.text {
            incident.text = Some(text.clone());
        }
        if score.priority < incident.priority {
            incident.priority = score.priority;
        }
        incident.score = incident.score.max(score.score);
    }
    tx.put_capref(event.input.source_id.clone(), incident.id.clone());
    tx.put_incident(incident);
    metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_update").increment(1);
    Ok(())
}

/// An update whose alert made no open incident: handled as an alert of
/// its own (linked or new), as before CAP references were read.
async fn apply_as_new(
    tx: &mut Tx<'_>,
    engine: &Engine,
    event: &Event,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    let mut plain = event.clone();
    plain.input.attrs.remove("cap_msg_type");
    apply(tx, engine, &plain, now).await
}

/// The incident an earlier alert named in this one's `references` made,
/// if any.
async fn referenced_incident(tx: &Tx<'_>, event: &Event) -> anyhow::Result<Option<String>> {
    let references: Vec<String> = match event.input.attrs.get("cap_references") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    for reference in references {
        // CAP: "sender,identifier,sent"; a bare identifier is accepted.
        let parts: Vec<&str> = reference.split(',').collect();
        let identifier = if parts.len() >= 2 { parts[1] } else { parts[0] };
        if let Some(id) = tx.capref(identifier).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn priority_label(priority: u8) -> &'static str {
    match priority {
        1 => "1",
        2 => "2",
        3 => "3",
        _ => "4",
    }
}
