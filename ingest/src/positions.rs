//! AVL: unit positions (`POST /v1/positions`) into the Store and the
//! `positions` topic, one [`PositionReport`] per report, keyed by unit id.
//!
//! Never the `units` topic: only the router writes it. A unit snapshot
//! from here would carry the status ingest read before the router changed
//! it, and as the last record of the compacted topic it would bring a busy
//! unit back as available when the Store is rebuilt from Kafka.
//!
//! A position changes where a unit is, never what it does: status, task,
//! type and jurisdiction are kept from the stored unit. A unit the store
//! does not know is registered from the roster (type, jurisdiction) or, if
//! not listed, as a patrol car of the jurisdiction it reports from, and is
//! `off_duty` until it reports `available` itself. This module must never
//! change a unit's status.

use bus::metrics as m;
use bus::model::{Channel, FieldError, PositionReport, Unit, UnitStatus, UnitType};
use bus::topics::Topic;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::Ingest;
use crate::error::IngestError;
use crate::pipeline::{Accepted, Origin, Outcome, Rejected};

const MAX_UNIT_CHARS: usize = 128;
/// Anything faster is a broken GPS fix, not a police car.
const MAX_SPEED_KMH: f64 = 500.0;

/// One validated position report.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub unit: String,
    pub lat: f64,
    pub lon: f64,
    pub at: Option<DateTime<Utc>>,
    pub speed_kmh: Option<f64>,
}

/// Checks one report; every problem with its field path.
pub fn validate_position(
    value: &Value,
    max_future_skew_s: i64,
    now: DateTime<Utc>,
) -> Result<Position, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new("", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let unit = match obj.get("unit") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_UNIT_CHARS => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "unit",
                format!("must be 1 to {MAX_UNIT_CHARS} characters"),
            ));
            None
        }
        None | Some(Value::Null) => {
            errors.push(FieldError::new("unit", "required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("unit", "must be a string"));
            None
        }
    };
    let lat = number(obj, "lat", -90.0, 90.0, true, &mut errors);
    let lon = number(obj, "lon", -180.0, 180.0, true, &mut errors);
    let speed_kmh = number(obj, "speed_kmh", 0.0, MAX_SPEED_KMH, false, &mut errors);
    let at = match obj.get("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                if (t - now).num_seconds() > max_future_skew_s {
                    errors.push(FieldError::new(
                        "at",
                        format!("more than {max_future_skew_s} s in the future"),
                    ));
                }
                Some(t)
            }
            Err(e) => {
                errors.push(FieldError::new("at", format!("not an RFC 3339 time: {e}")));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("at", "must be an RFC 3339 string"));
            None
        }
    };
    match (unit, lat, lon) {
        (Some(unit), Some(lat), Some(lon)) if errors.is_empty() => Ok(Position {
            unit,
            lat,
            lon,
            at,
            speed_kmh,
        }),
        _ => Err(errors),
    }
}

fn number(
    obj: &Map<String, Value>,
    name: &str,
    min: f64,
    max: f64,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new(name, "required"));
            }
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (min..=max).contains(&v) => Some(v),
            _ => {
                errors.push(FieldError::new(name, format!("{n} is not in [{min}, {max}]")));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(name, "must be a number"));
            None
        }
    }
}

impl Ingest {
    /// Validates the reports, produces them to the positions topic and
    /// moves the units in the Store. 503 when Kafka or the store cannot
    /// take them; the reports already applied stay applied (positions are
    /// idempotent).
    pub async fn submit_positions(
        &self,
        items: Vec<crate::body::Item>,
        origin: &Origin,
    ) -> Result<Outcome, IngestError> {
        let now = Utc::now();
        let mut outcome = Outcome::default();
        let mut dead = Vec::new();
        let mut valid = Vec::new();
        for item in items {
            let checked = item
                .value
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|v| validate_position(v, self.config.ingest.max_future_skew_s, now));
            match checked {
                Ok(p) => valid.push((item.index, p)),
                Err(errors) => {
                    dead.push(self.dead_letter(&item.raw, errors.clone(), origin, None, now));
                    outcome.rejected.push(Rejected {
                        index: item.index,
                        errors,
                    });
                }
            }
        }

        let mut reports: Vec<(usize, PositionReport)> = valid
            .into_iter()
            .map(|(index, p)| {
                let report = PositionReport {
                    unit: p.unit,
                    lat: p.lat,
                    lon: p.lon,
                    at: p.at.unwrap_or(now),
                    speed_kmh: p.speed_kmh,
                };
                (index, report)
            })
            .collect();
        if let Some(allowed) = &origin.jurisdictions {
            // A source moves only the units of its own jurisdictions: one
            // AVL feed must not drag another station's cars around.
            let ids: Vec<String> = reports.iter().map(|(_, r)| r.unit.clone()).collect();
            let stored = self
                .store
                .units_by_id(&ids)
                .await
                .map_err(|_| self.unavailable("the unit store is unavailable; retry".to_owned()))?;
            let mut kept = Vec::with_capacity(reports.len());
            for ((index, report), stored) in reports.into_iter().zip(stored) {
                let jurisdiction = stored.map_or_else(|| self.new_unit(&report).jurisdiction, |u| u.jurisdiction);
                if allowed.contains(&jurisdiction) {
                    kept.push((index, report));
                    continue;
                }
                let errors = vec![FieldError::new(
                    "unit",
                    format!(
                        "unit {} is in jurisdiction {jurisdiction}, outside this token's jurisdictions",
                        report.unit
                    ),
                )];
                let raw = serde_json::to_vec(&report).unwrap_or_default();
                dead.push(self.dead_letter(&raw, errors.clone(), origin, None, now));
                outcome.rejected.push(Rejected { index, errors });
            }
            reports = kept;
        }

        let mut records = Vec::with_capacity(reports.len() + dead.len());
        for (_, report) in &reports {
            records.push(
                bus::kafka::OutRecord::json(Topic::Positions, report.unit.clone(), bus::model::new_id(), report)
                    .map_err(|e| IngestError::Internal(e.to_string()))?,
            );
        }
        for dl in &dead {
            let key = dl.source.clone().unwrap_or_else(|| "unknown".to_owned());
            records.push(
                bus::kafka::OutRecord::json(Topic::DeadLetter, key, bus::model::new_id(), dl)
                    .map_err(|e| IngestError::Internal(e.to_string()))?,
            );
        }
        let results = self.producer.send_all(&records).await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, "kafka did not take the positions in time");
            return Err(if e.is_retriable() {
                self.unavailable("kafka did not acknowledge the positions in time; retry".to_owned())
            } else {
                IngestError::Internal(e.to_string())
            });
        }
        if !dead.is_empty() {
            ::metrics::counter!(m::INGEST_DEADLETTER_TOTAL, "channel" => Channel::Http.as_str())
                .increment(dead.len() as u64);
        }

        // Kafka has them; now the hot state. `move_unit` changes the
        // position atomically and never the status or task, so a status
        // the router sets at the same moment survives.
        for ((index, report), record) in reports.into_iter().zip(&records) {
            let stored = match self
                .store
                .move_unit(&report.unit, report.lat, report.lon, report.speed_kmh, report.at)
                .await
            {
                Ok(Some(_)) => Ok(()),
                // Not known yet: registered as the roster (or its place) says.
                Ok(None) => self.store.put_unit(&self.new_unit(&report)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::warn!(error = %e, "store failed writing a unit position");
                return Err(self.unavailable("the unit store is unavailable; retry".to_owned()));
            }
            ::metrics::counter!(m::INGEST_POSITIONS_TOTAL).increment(1);
            outcome.accepted.push(Accepted {
                index,
                id: record.id.clone(),
                source_id: report.unit,
                duplicate: false,
                flags: Vec::new(),
            });
        }
        outcome.accepted.sort_by_key(|a| a.index);
        Ok(outcome)
    }

    /// A unit the Store does not know yet, as this report registers it.
    fn new_unit(&self, p: &PositionReport) -> Unit {
        let (unit_type, jurisdiction, name) = match self.roster.get(&p.unit) {
            Some(r) => (r.unit_type, r.jurisdiction.clone(), Some(r.name.clone())),
            None => (UnitType::PatrolCar, self.city.place(p.lat, p.lon).jurisdiction, None),
        };
        Unit {
            reason: None,
            id: p.unit.clone(),
            unit_type,
            jurisdiction,
            status: UnitStatus::OffDuty,
            lat: Some(p.lat),
            lon: Some(p.lon),
            at: p.at,
            task: None,
            version: 0,
            speed_kmh: p.speed_kmh,
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<String> {
        validate_position(&v, 300, Utc::now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_good_report_passes() {
        let p = validate_position(
            &json!({"unit": "lx-01", "lat": 36.66, "lon": 117.02, "at": "2026-11-22T14:00:00+08:00", "speed_kmh": 42.5}),
            300,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(p.unit, "lx-01");
        assert_eq!(p.speed_kmh, Some(42.5));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(json!({"unit": "", "lat": 91, "lon": "x", "at": "noon", "speed_kmh": -1})),
            vec!["unit", "lat", "lon", "speed_kmh", "at"]
        );
        assert_eq!(fields(json!({})), vec!["unit", "lat", "lon"]);
        assert_eq!(fields(json!([1])), vec![""]);
    }
}
