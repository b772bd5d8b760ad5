//! `hold`: an operator stops automatic dispatch for one incident (the
//! router then publishes its ranking, `candidates`, and the operator
//! assigns) or resumes it (the router sends what the incident still
//! needs). Tasks already issued stay.

use bus::model::{Action, Timestamp};

use super::{Fail, open_incident, reject};
use crate::dispatch::top_up;
use crate::engine::Engine;
use crate::incident::{derive_status, entry};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    id: &str,
    hold: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut incident = open_incident(tx, id).await?;
    if incident.hold == hold {
        let state = if hold { "already held" } else { "not held" };
        return Err(reject(Some(id), format!("automatic dispatch is {state}")));
    }
    incident.hold = hold;
    let mut what = if hold {
        "automatic dispatch held: an operator assigns".to_owned()
    } else {
        "automatic dispatch resumed".to_owned()
    };
    if let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) {
        what.push_str(&format!(" ({reason})"));
    }
    incident.timeline.push(entry(now, what, &action.by.sub));
    top_up(tx, engine, &mut incident, now).await?;
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}
