//! `position`: a unit reports where it is over WebSocket. Moves the unit,
//! never changes what it is doing; an unknown unit must report
//! `available` (with a position) first.

use bus::model::{Action, Timestamp};

use super::{Fail, reject, valid_position};
use crate::tx::Tx;

pub(super) async fn apply(tx: &mut Tx<'_>, action: &Action, lat: f64, lon: f64, now: Timestamp) -> Result<(), Fail> {
    let unit_id = action
        .by
        .unit
        .clone()
        .ok_or_else(|| reject(None, "a position report needs the unit it is about"))?;
    if !valid_position(lat, lon) {
        return Err(reject(None, format!("position {lat},{lon} is out of range")));
    }
    let mut unit = tx
        .unit(&unit_id)
        .await?
        .ok_or_else(|| reject(None, format!("unknown unit {unit_id}: report available first")))?;
    unit.lat = Some(lat);
    unit.lon = Some(lon);
    unit.at = now;
    tx.put_unit(unit);
    Ok(())
}
