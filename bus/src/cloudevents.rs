//! CloudEvents 1.0 attributes in Kafka headers (the Kafka protocol binding,
//! binary content mode): `ce_specversion`, `ce_id`, `ce_source`, `ce_type`,
//! `ce_time`, optional `ce_subject`, and `content-type` for the data.
//!
//! A small module rather than the CloudEvents SDK: the SDK's rdkafka binding
//! pins an older rdkafka, which would link a second librdkafka. The rules
//! followed are the binding's: header names are `ce_` plus the attribute
//! name, values are UTF-8 strings, `datacontenttype` maps to `content-type`,
//! and `specversion`, `id`, `source` and `type` are required.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const SPEC_VERSION: &str = "1.0";
pub const JSON: &str = "application/json";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CeError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is not UTF-8")]
    NotUtf8(String),
    #[error("ce_specversion is {0}, only 1.0 is understood")]
    Version(String),
    #[error("ce_time is not an RFC 3339 time: {0}")]
    Time(String),
    #[error("header {0} is empty")]
    Empty(&'static str),
}

/// The CloudEvents attributes of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct CeAttributes {
    pub id: String,
    /// A URI-reference naming the producer, e.g. `/qzx/ingest`.
    pub source: String,
    pub ce_type: String,
    pub time: Option<DateTime<Utc>>,
    pub subject: Option<String>,
    pub content_type: Option<String>,
}

impl CeAttributes {
    pub fn new(id: impl Into<String>, source: impl Into<String>, ce_type: impl Into<String>) -> CeAttributes {
        CeAttributes {
            id: id.into(),
            source: source.into(),
            ce_type: ce_type.into(),
            time: Some(Utc::now()),
            subject: None,
            content_type: Some(JSON.to_owned()),
        }
    }

    pub fn to_headers(&self) -> OwnedHeaders {
        let time = self.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        let mut headers = OwnedHeaders::new_with_capacity(7)
            .insert(header("ce_specversion", SPEC_VERSION))
            .insert(header("ce_id", &self.id))
            .insert(header("ce_source", &self.source))
            .insert(header("ce_type", &self.ce_type));
        if let Some(time) = &time {
            headers = headers.insert(header("ce_time", time));
        }
        if let Some(subject) = &self.subject {
            headers = headers.insert(header("ce_subject", subject));
        }
        if let Some(ct) = &self.content_type {
            headers = headers.insert(header("content-type", ct));
        }
        headers
    }

    /// Reads the attributes back, checking what the spec requires.
    pub fn from_headers<H: Headers>(headers: &H) -> Result<CeAttributes, CeError> {
        let get = |name: &str| -> Result<Option<String>, CeError> {
            match headers.iter().find(|h| h.key == name).and_then(|h| h.value) {
                None => Ok(None),
                Some(bytes) => std::str::from_utf8(bytes)
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| CeError::NotUtf8(name.to_owned())),
            }
        };
        let required = |name: &'static str| -> Result<String, CeError> {
            match get(name)? {
                None => Err(CeError::Missing(name)),
                Some(v) if v.is_empty() => Err(CeError::Empty(name)),
                Some(v) => Ok(v),
            }
        };
        let version = required("ce_specversion")?;
        if version != SPEC_VERSION {
            return Err(CeError::Version(version));
        }
        let time = match get("ce_time")? {
            None => None,
            Some(t) => Some(
                DateTime::parse_from_rfc3339(&t)
                    .map_err(|_| CeError::Time(t.clone()))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(CeAttributes {
            id: required("ce_id")?,
            source: required("ce_source")?,
            ce_type: required("ce_type")?,
            time,
            subject: get("ce_subject")?,
            content_type: get("content-type")?,
        })
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_headers() {
        let mut ce = CeAttributes::new("e-1", "/qzx/ingest", "qzx.event.v1");
        ce.subject = Some("quancheng".into());
        let back = CeAttributes::from_headers(&ce.to_headers()).unwrap();
        // Headers carry microseconds.
        assert_eq!(
            back.time.map(|t| t.timestamp_micros()),
            ce.time.map(|t| t.timestamp_micros())
        );
        assert_eq!(back.id, "e-1");
        assert_eq!(back.source, "/qzx/ingest");
        assert_eq!(back.ce_type, "qzx.event.v1");
        assert_eq!(back.subject.as_deref(), Some("quancheng"));
        assert_eq!(back.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn header_names_follow_the_kafka_binding() {
        let headers = CeAttributes::new("e-1", "/qzx/ingest", "qzx.event.v1").to_headers();
        let names: Vec<&str> = headers.iter().map(|h| h.key).collect();
        assert_eq!(
            names,
            [
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
                "content-type"
            ]
        );
        let spec = headers.iter().next().unwrap();
        assert_eq!(spec.value, Some(&b"1.0"[..]));
    }

    #[test]
    fn required_attributes_are_checked() {
        let none = OwnedHeaders::new();
        assert_eq!(
            CeAttributes::from_headers(&none),
            Err(CeError::Missing("ce_specversion"))
        );
        let old = OwnedHeaders::new()
            .insert(header("ce_specversion", "0.3"))
            .insert(header("ce_id", "x"));
        assert_eq!(CeAttributes::from_headers(&old), Err(CeError::Version("0.3".into())));
        let no_source = OwnedHeaders::new()
            .insert(header("ce_specversion", "1.0"))
            .insert(header("ce_id", "x"))
            .insert(header("ce_type", "t"));
        assert_eq!(
            CeAttributes::from_headers(&no_source),
            Err(CeError::Missing("ce_source"))
        );
        let empty_id = OwnedHeaders::new()
            .insert(header("ce_specversion", "1.0"))
            .insert(header("ce_id", ""));
        assert_eq!(CeAttributes::from_headers(&empty_id), Err(CeError::Empty("ce_id")));
    }
}
