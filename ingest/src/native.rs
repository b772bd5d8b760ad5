//! Kafka-native input: an input event a source system wrote straight to the
//! `events` topic (CloudEvents `ce_type` `qzx.event.v1`, not produced by
//! ingest), turned into a normalised [`Event`] or a [`DeadLetter`] on
//! channel `kafka`, by the same rules as HTTP.
//!
//! A pure function for the consumer that reads those records (the router
//! owns that path). It does no IO and no idempotency: the caller decides
//! how to recognise a repeat (the record's `ce_id`, or the Store key of
//! [`crate::pipeline::idempotency_key`]).

use bus::geo::CityMap;
use bus::model::{Channel, DeadLetter, Event, FieldError, Source};
use bus::validate::{InputRules, demote_cap_attrs, normalise, validate_input};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Validates and normalises one raw record value.
pub fn accept_kafka_native(
    payload: &[u8],
    rules: &InputRules,
    city: &CityMap,
    now: DateTime<Utc>,
) -> Result<Event, Box<DeadLetter>> {
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return Err(dead(
                payload,
                vec![FieldError::new("", format!("invalid JSON: {e}"))],
                None,
                now,
            ));
        }
    };
    match validate_input(&value, rules, None, now) {
        Ok(mut input) => {
            // Another system's record is not a CAP alert: no CAP authority.
            demote_cap_attrs(&mut input.attrs);
            Ok(normalise(input, city, now))
        }
        Err(errors) => {
            let source = value
                .get("source")
                .and_then(Value::as_str)
                .and_then(Source::parse)
                .map(|s| s.as_str().to_owned());
            Err(dead(payload, errors, source, now))
        }
    }
}

fn dead(payload: &[u8], errors: Vec<FieldError>, source: Option<String>, now: DateTime<Utc>) -> Box<DeadLetter> {
    let mut dl = DeadLetter::new(payload, errors, Channel::Kafka, now);
    dl.source = source;
    dl.content_type = Some("application/json".to_owned());
    Box::new(dl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::Config;

    #[test]
    fn a_valid_record_is_normalised_and_a_bad_one_dead_lettered() {
        let config = Config::defaults();
        let (rules, city) = (InputRules::new(&config), CityMap::new(&config));
        let good =
            br#"{"source":"sensor","source_id":"k-1","kind":"smoke_alarm","location":{"lat":36.6683,"lon":117.0204}}"#;
        let e = accept_kafka_native(good, &rules, &city, Utc::now()).unwrap();
        assert_eq!(
            (e.jurisdiction.as_str(), e.input.kind.as_str()),
            ("quancheng", "smoke_alarm")
        );

        let bad = br#"{"source":"sensor","source_id":"k-2"}"#;
        let dl = accept_kafka_native(bad, &rules, &city, Utc::now()).unwrap_err();
        assert_eq!((dl.channel, dl.source.as_deref()), (Channel::Kafka, Some("sensor")));
        assert_eq!(dl.errors[0].field, "location");
        assert_eq!(dl.raw_bytes(), bad);

        let dl = accept_kafka_native(b"\xff{", &rules, &city, Utc::now()).unwrap_err();
        assert_eq!(dl.raw_bytes(), b"\xff{");
    }
}
