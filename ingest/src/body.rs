//! Splitting a request body into items: one JSON object, a JSON array of
//! them, or NDJSON (one object per line). Each item keeps its own raw bytes
//! so a rejected item is dead-lettered byte for byte, not re-serialised.
//!
//! Pure functions, no IO. They must never panic on any input (a proptest
//! feeds them arbitrary bytes) and never decide about validity of an event:
//! that is `bus::validate`'s job.

use bus::model::FieldError;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::IngestError;

/// How the body is framed, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON value: an object, or an array of objects.
    Json,
    /// One JSON value per line; blank lines are skipped.
    Ndjson,
}

/// One item of a body: where it was, its bytes, and the parsed JSON (or why
/// it could not be parsed, for an NDJSON line).
#[derive(Debug, Clone)]
pub struct Item {
    pub index: usize,
    pub raw: Vec<u8>,
    pub value: Result<Value, Vec<FieldError>>,
}

/// Splits `body` into items. Errors here concern the whole body; an NDJSON
/// line that is not JSON is an item with an error, so the other lines are
/// still accepted.
pub fn split(body: &[u8], framing: Framing, max_batch: usize) -> Result<Vec<Item>, IngestError> {
    let text = utf8(body)?;
    if text.trim().is_empty() {
        return Err(IngestError::bad_request("empty_body", "the body is empty", vec![]));
    }
    let items = match framing {
        Framing::Json => split_json(text, max_batch)?,
        Framing::Ndjson => split_ndjson(text, max_batch)?,
    };
    if items.is_empty() {
        return Err(IngestError::bad_request(
            "empty_batch",
            "the batch holds no events",
            vec![],
        ));
    }
    Ok(items)
}

/// The body as text, or a 400 naming the first bad byte.
pub fn utf8(body: &[u8]) -> Result<&str, IngestError> {
    std::str::from_utf8(body).map_err(|e| {
        IngestError::bad_request(
            "invalid_utf8",
            format!("the body is not UTF-8: invalid byte at offset {}", e.valid_up_to()),
            vec![],
        )
    })
}

fn split_json(text: &str, max_batch: usize) -> Result<Vec<Item>, IngestError> {
    let invalid = |e: serde_json::Error| {
        IngestError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
            vec![FieldError::new("", format!("invalid JSON: {e}"))],
        )
    };
    if text.trim_start().starts_with('[') {
        // Borrowed raw values: each element's exact bytes, parsed once more
        // below into a Value for validation.
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(invalid)?;
        if raws.len() > max_batch {
            return Err(IngestError::BatchTooLarge {
                count: raws.len(),
                limit: max_batch,
            });
        }
        raws.into_iter()
            .enumerate()
            .map(|(index, raw)| {
                let value = serde_json::from_str::<Value>(raw.get()).map_err(invalid)?;
                Ok(Item {
                    index,
                    raw: raw.get().as_bytes().to_vec(),
                    value: Ok(value),
                })
            })
            .collect()
    } else {
        let value: Value = serde_json::from_str(text).map_err(invalid)?;
        Ok(vec![Item {
            index: 0,
            raw: text.as_bytes().to_vec(),
            value: Ok(value),
        }])
    }
}

fn split_ndjson(text: &str, max_batch: usize) -> Result<Vec<Item>, IngestError> {
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(n, line)| (n, line.trim()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    if lines.len() > max_batch {
        return Err(IngestError::BatchTooLarge {
            count: lines.len(),
            limit: max_batch,
        });
    }
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(index, (line_no, line))| Item {
            index,
            raw: line.as_bytes().to_vec(),
            value: serde_json::from_str::<Value>(line)
                .map_err(|e| vec![FieldError::new("", format!("line {}: invalid JSON: {e}", line_no + 1))]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &[u8], framing: Framing) -> &'static str {
        split(body, framing, 3).unwrap_err().code()
    }

    #[test]
    fn an_object_is_one_item_with_its_own_bytes() {
        let items = split(br#" {"a":1} "#, Framing::Json, 3).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].value.as_ref().unwrap()["a"], 1);
    }

    #[test]
    fn array_items_keep_their_exact_bytes() {
        let items = split(br#"[{"a": 1},  {"b":"\u00e9"}]"#, Framing::Json, 3).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].raw, br#"{"a": 1}"#);
        assert_eq!(items[1].raw, br#"{"b":"\u00e9"}"#);
        assert_eq!(items[1].index, 1);
    }

    #[test]
    fn ndjson_lines_fail_one_by_one() {
        let items = split(b"{\"a\":1}\n\nnot json\r\n{\"c\":3}\n", Framing::Ndjson, 3).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].value.is_ok());
        let errors = items[1].value.as_ref().unwrap_err();
        assert!(errors[0].message.starts_with("line 3:"), "{errors:?}");
        assert_eq!(items[1].raw, b"not json");
        assert_eq!(items[2].index, 2);
    }

    #[test]
    fn whole_body_problems_have_their_own_codes() {
        assert_eq!(codes(b"", Framing::Json), "empty_body");
        assert_eq!(codes(b"  \n ", Framing::Ndjson), "empty_body");
        assert_eq!(codes(b"[]", Framing::Json), "empty_batch");
        assert_eq!(codes(b"{", Framing::Json), "invalid_json");
        assert_eq!(codes(b"[{}, {}", Framing::Json), "invalid_json");
        assert_eq!(codes(b"\xff\xfe{}", Framing::Json), "invalid_utf8");
        assert_eq!(codes(b"[{},{},{},{}]", Framing::Json), "batch_too_large");
        assert_eq!(codes(b"{}\n{}\n{}\n{}", Framing::Ndjson), "batch_too_large");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                ".{0,20}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("source".to_owned()),
                            Just("source_id".to_owned()),
                            Just("location".to_owned()),
                            Just("lat".to_owned()),
                            ".{0,6}"
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = split(&bytes, Framing::Json, 10);
                let _ = split(&bytes, Framing::Ndjson, 10);
            }

            #[test]
            fn arbitrary_json_never_panics_through_split_and_validation(v in arb_json()) {
                let rules = bus::validate::InputRules::new(&bus::Config::defaults());
                let text = serde_json::to_string(&v).unwrap();
                for framing in [Framing::Json, Framing::Ndjson] {
                    if let Ok(items) = split(text.as_bytes(), framing, 10) {
                        for item in items {
                            if let Ok(value) = item.value {
                                let _ = bus::validate::validate_input(&value, &rules, None, chrono::Utc::now());
                            }
                        }
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(text in "[\\[\\]{}\",:0-9a-z \n\\\\]{0,200}") {
                let _ = split(text.as_bytes(), Framing::Json, 10);
                let _ = split(text.as_bytes(), Framing::Ndjson, 10);
            }
        }
    }
}
