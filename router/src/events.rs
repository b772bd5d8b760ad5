//! Applying one event: a CAP Update or Cancel changes the incident its
//! alert made; any other event joins an open incident it repeats (or fuses
//! with) or opens a new one, which is diverted or gets its units. The
//! engine decides; this module reads and writes through the transaction.

use bus::model::{Event, IncidentStatus, Source};
use serde_json::Value;

use crate::dispatch::{end_tasks, top_up};
use crate::engine::{Engine, Link};
use crate::incident::{derive_status, entry, pending_to_na};
use crate::tx::Tx;

/// Applies `event` (not applied before) within `tx`.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    event: &Event,
    now: bus::model::Timestamp,
) -> anyhow::Result<()> {
    if let Some((cancel, identifier)) = cap_reference(tx, event).await? {
        return apply_cap_update(tx, engine, event, cancel, identifier, now).await;
    }
    let link = event.input.location.as_ref().and_then(|loc| {
        engine
            .find_link(event, tx.open_near(loc.lat, loc.lon))
            .map(|(i, link, distance)| (i.id.clone(), link, distance))
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
    if event.input.source == Source::Alert {
        tx.put_capref(event.input.source_id.clone(), incident.id.clone());
        if let Some((base, _)) = event.input.source_id.rsplit_once('#') {
            tx.put_capref(base.to_owned(), incident.id.clone());
        }
    }
    derive_status(&mut incident);
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

/// `Some((cancel, incident))` when the event is a CAP Update or Cancel,
/// with the incident its references made, if any.
async fn cap_reference(tx: &Tx<'_>, event: &Event) -> anyhow::Result<Option<(bool, Option<String>)>> {
    let attrs = &event.input.attrs;
    let cancel = match attrs.get("cap_msg_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("cancel") => true,
        Some(t) if t.eq_ignore_ascii_case("update") => false,
        _ => return Ok(None),
    };
    let references: Vec<String> = match attrs.get("cap_references") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    for reference in references {
        // CAP: "sender,identifier,sent"; a bare identifier is accepted.
        let parts: Vec<&str> = reference.split(',').collect();
        let identifier = if parts.len() >= 2 { parts[1] } else { parts[0] };
        if let Some(id) = tx.capref(identifier).await? {
            return Ok(Some((cancel, Some(id))));
        }
    }
    Ok(Some((cancel, None)))
}

fn priority_label(priority: u8) -> &'static str {
    match priority {
        1 => "1",
        2 => "2",
        3 => "3",
        _ => "4",
    }
}
