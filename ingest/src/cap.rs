//! OASIS CAP 1.2 alerts: parses an `<alert>` document with quick-xml and
//! turns each `<info>` into an input event (source `alert`) that then goes
//! through the same validation as every other channel.
//!
//! Untrusted XML: a DOCTYPE (and so any entity declaration) is refused
//! outright, entity references other than the five predefined ones and
//! character references are refused, and nesting and element counts are
//! bounded, so no XML bomb can expand here. This module does no IO and must
//! never panic on any input.

use bus::geo::polygon_centroid;
use bus::model::FieldError;
use quick_xml::events::Event as XmlEvent;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::{Map, Value, json};

use crate::error::IngestError;

pub const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// Bounds that keep a hostile document cheap: CAP alerts are shallow and
/// small.
const MAX_DEPTH: usize = 16;
const MAX_ELEMENTS: usize = 20_000;

/// One XML element, as much of it as CAP needs (attributes are not used by
/// CAP 1.2).
#[derive(Debug, Clone, Default)]
struct Element {
    name: String,
    namespace: Option<String>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| collapse(&c.text)).filter(|t| !t.is_empty())
    }
}

/// Whitespace inside CAP text values (line-wrapped descriptions) folded to
/// single spaces.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn xml_error(message: impl Into<String>) -> IngestError {
    let message = message.into();
    IngestError::bad_request(
        "invalid_xml",
        format!("the body is not well-formed XML: {message}"),
        vec![FieldError::new("", message)],
    )
}

/// Parses the document into its root element.
fn parse_tree(xml: &[u8]) -> Result<Element, IngestError> {
    let mut reader = NsReader::from_reader(xml);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| xml_error(format!("after byte {position}: {e}")))?;
        match event {
            XmlEvent::DocType(_) => {
                return Err(IngestError::bad_request(
                    "xml_doctype_forbidden",
                    "DOCTYPE and entity declarations are refused (CAP needs neither)",
                    vec![FieldError::new("", "DOCTYPE is not allowed")],
                ));
            }
            XmlEvent::Start(ref e) | XmlEvent::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(xml_error(format!("more than {MAX_ELEMENTS} elements")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(xml_error(format!("elements nested deeper than {MAX_DEPTH}")));
                }
                if root.is_some() && stack.is_empty() {
                    return Err(xml_error("more than one root element"));
                }
                let namespace = match ns {
                    ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
                    ResolveResult::Unbound => None,
                    ResolveResult::Unknown(prefix) => {
                        return Err(xml_error(format!(
                            "undeclared namespace prefix '{}'",
                            String::from_utf8_lossy(&prefix)
                        )));
                    }
                };
                let element = Element {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    namespace,
                    ..Element::default()
                };
                if matches!(event, XmlEvent::Start(_)) {
                    stack.push(element);
                } else {
                    attach(&mut stack, &mut root, element);
                }
            }
            XmlEvent::End(_) => {
                let Some(element) = stack.pop() else {
                    return Err(xml_error("end tag without a start tag"));
                };
                attach(&mut stack, &mut root, element);
            }
            XmlEvent::Text(t) => {
                let text = t.xml_content().map_err(|e| xml_error(e.to_string()))?;
                append_text(&mut stack, &text)?;
            }
            XmlEvent::CData(t) => {
                let text = t.decode().map_err(|e| xml_error(e.to_string()))?;
                append_text(&mut stack, &text)?;
            }
            XmlEvent::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(xml_error("invalid character reference")),
                    }
                } else {
                    let name = r.decode().map_err(|e| xml_error(e.to_string()))?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(IngestError::bad_request(
                                "xml_entity_forbidden",
                                format!(
                                    "the entity &{name}; is not one of XML's predefined entities; entities are refused"
                                ),
                                vec![FieldError::new("", format!("undefined entity &{name};"))],
                            ));
                        }
                    }
                };
                append_text(&mut stack, &resolved)?;
            }
            XmlEvent::Decl(_) | XmlEvent::PI(_) | XmlEvent::Comment(_) => {}
            XmlEvent::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(xml_error("the document ends inside an element"));
    }
    root.ok_or_else(|| xml_error("no root element"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn append_text(stack: &mut [Element], text: &str) -> Result<(), IngestError> {
    match stack.last_mut() {
        Some(current) => current.text.push_str(text),
        // Only whitespace may stand outside the root element.
        None if text.trim().is_empty() => {}
        None => return Err(xml_error("text outside the root element")),
    }
    Ok(())
}

/// The input events of one CAP alert, one per `<info>` (one for an alert
/// without `<info>`, such as a bare Cancel, so the router still learns of
/// it). `max_text_chars` bounds the text so a long description is cut, not
/// refused.
pub fn alert_to_inputs(xml: &[u8], max_text_chars: usize, max_infos: usize) -> Result<Vec<Value>, IngestError> {
    let root = parse_tree(xml)?;
    if root.name != "alert" {
        return Err(not_cap(vec![FieldError::new(
            "",
            format!("the root element is <{}>, not <alert>", root.name),
        )]));
    }
    if root.namespace.as_deref() != Some(CAP_NS) {
        return Err(not_cap(vec![FieldError::new(
            "alert",
            format!(
                "namespace is '{}', CAP 1.2 needs '{CAP_NS}'",
                root.namespace.as_deref().unwrap_or("")
            ),
        )]));
    }
    let mut errors = Vec::new();
    for name in ["identifier", "sender", "sent", "status", "msgType", "scope"] {
        if root.text_of(name).is_none() {
            errors.push(FieldError::new(
                format!("alert.{name}"),
                format!("required element <{name}> is missing"),
            ));
        }
    }
    let infos: Vec<&Element> = root.children("info").collect();
    if infos.len() > max_infos {
        return Err(IngestError::TooManyInfos {
            count: infos.len(),
            limit: max_infos,
        });
    }
    for (i, info) in infos.iter().enumerate() {
        for name in ["category", "event", "urgency", "severity", "certainty"] {
            if info.text_of(name).is_none() {
                errors.push(FieldError::new(
                    format!("alert.info[{i}].{name}"),
                    format!("required element <{name}> is missing"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(not_cap(errors));
    }

    let text = |name: &str| root.text_of(name).unwrap_or_default();
    let identifier = text("identifier");
    let mut common = Map::new();
    common.insert("cap_identifier".into(), json!(identifier));
    common.insert("cap_sender".into(), json!(text("sender")));
    common.insert("cap_sent".into(), json!(text("sent")));
    common.insert("cap_status".into(), json!(text("status")));
    common.insert("cap_msg_type".into(), json!(text("msgType")));
    common.insert("cap_scope".into(), json!(text("scope")));
    if let Some(refs) = root.text_of("references") {
        common.insert("cap_references".into(), json!(parse_references(&refs)));
        common.insert("cap_references_raw".into(), json!(refs));
    }
    if let Some(note) = root.text_of("note") {
        common.insert("cap_note".into(), json!(note));
    }

    if infos.is_empty() {
        let mut attrs = common;
        attrs.insert("cap_info_count".into(), json!(0));
        let text = root.text_of("note").map(|n| cut(&n, max_text_chars));
        return Ok(vec![input_value(identifier, "unknown", None, text, attrs)]);
    }

    let mut out = Vec::with_capacity(infos.len());
    let mut area_errors = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        let source_id = if infos.len() > 1 {
            format!("{identifier}#{i}")
        } else {
            identifier.clone()
        };
        let categories: Vec<String> = info.children("category").map(|c| collapse(&c.text)).collect();
        let event = info.text_of("event").unwrap_or_default();
        let kind = map_kind(&categories, &event);
        let mut attrs = common.clone();
        attrs.insert("cap_category".into(), json!(categories));
        attrs.insert("cap_event".into(), json!(event));
        attrs.insert("cap_urgency".into(), json!(info.text_of("urgency")));
        attrs.insert("cap_severity".into(), json!(info.text_of("severity")));
        attrs.insert("cap_certainty".into(), json!(info.text_of("certainty")));
        attrs.insert(
            "language".into(),
            json!(info.text_of("language").unwrap_or_else(|| "en-US".into())),
        );
        attrs.insert("cap_info_index".into(), json!(i));
        attrs.insert("cap_info_count".into(), json!(infos.len()));
        for (name, key) in [
            ("expires", "cap_expires"),
            ("onset", "cap_onset"),
            ("senderName", "cap_sender_name"),
        ] {
            if let Some(v) = info.text_of(name) {
                attrs.insert(key.into(), json!(v));
            }
        }
        let location = match info.child("area") {
            None => None,
            Some(area) => {
                if let Some(desc) = area.text_of("areaDesc") {
                    attrs.insert("area_desc".into(), json!(desc));
                }
                match area_point(area, i) {
                    Ok(point) => point,
                    Err(e) => {
                        area_errors.push(e);
                        None
                    }
                }
            }
        };
        let text = match (info.text_of("headline"), info.text_of("description")) {
            (Some(h), Some(d)) => Some(format!("{h}\n{d}")),
            (h, d) => h.or(d),
        }
        .map(|t| cut(&t, max_text_chars));
        out.push(input_value(source_id, kind, location, text, attrs));
    }
    if !area_errors.is_empty() {
        return Err(not_cap(area_errors));
    }
    Ok(out)
}

fn not_cap(errors: Vec<FieldError>) -> IngestError {
    let named: Vec<String> = errors
        .iter()
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect();
    IngestError::bad_request("not_cap", format!("not a CAP 1.2 alert: {}", named.join("; ")), errors)
}

fn input_value(
    source_id: String,
    kind: &str,
    location: Option<[f64; 2]>,
    text: Option<String>,
    attrs: Map<String, Value>,
) -> Value {
    let mut v = json!({"source": "alert", "source_id": source_id, "kind": kind, "attrs": attrs});
    if let Some([lat, lon]) = location {
        v["location"] = json!({"lat": lat, "lon": lon});
    }
    if let Some(text) = text {
        v["text"] = json!(text);
    }
    v
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

/// CAP `<references>`: space-separated `sender,identifier,sent` triples.
/// The identifiers are what the router matches earlier alerts by.
fn parse_references(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter_map(|triple| triple.split(',').nth(1))
        .map(str::to_owned)
        .collect()
}

/// The point of an area: the first circle's centre, else the first
/// polygon's centroid, else none (the alert is routed by its area
/// description).
fn area_point(area: &Element, info: usize) -> Result<Option<[f64; 2]>, FieldError> {
    if let Some(circle) = area.text_of("circle") {
        let field = format!("alert.info[{info}].area[0].circle");
        // "lat,lon radius"
        let centre = circle.split_whitespace().next().unwrap_or_default();
        return parse_point(centre)
            .map(Some)
            .ok_or_else(|| FieldError::new(field, format!("'{circle}' is not 'lat,lon radius'")));
    }
    if let Some(polygon) = area.text_of("polygon") {
        let field = format!("alert.info[{info}].area[0].polygon");
        let points: Option<Vec<[f64; 2]>> = polygon.split_whitespace().map(parse_point).collect();
        return match points {
            Some(points) if points.len() >= 3 => Ok(polygon_centroid(&points)),
            _ => Err(FieldError::new(field, "a polygon needs at least 3 'lat,lon' points")),
        };
    }
    Ok(None)
}

fn parse_point(text: &str) -> Option<[f64; 2]> {
    let (lat, lon) = text.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lon: f64 = lon.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some([lat, lon])
}

/// The qzx category of a CAP info. Only what clearly maps is mapped; the
/// rest is `unknown` (scored from its text), with the CAP category and
/// event kept in attrs.
fn map_kind(categories: &[String], event: &str) -> &'static str {
    let event = event.to_lowercase();
    let has = |c: &str| categories.iter().any(|x| x.eq_ignore_ascii_case(c));
    let says = |words: &[&str]| words.iter().any(|w| event.contains(w));
    if has("Fire") {
        "fire"
    } else if has("Rescue") && says(&["child", "amber", "abduc", "missing", "kidnap", "niño", "nino"]) {
        "missing_person"
    } else if has("Transport") && says(&["accident", "crash", "collision"]) {
        "traffic_accident"
    } else if has("Infra") && says(&["outage", "power", "water", "gas"]) {
        "utility_outage"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cap");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    fn alert(body: &str) -> String {
        format!(
            r#"<alert xmlns="{CAP_NS}"><identifier>x1</identifier><sender>s</sender><sent>2026-11-22T10:00:00+08:00</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>{body}</alert>"#
        )
    }

    const INFO: &str = "<category>Fire</category><event>Fire</event><urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>";

    #[test]
    fn an_alert_may_carry_at_most_max_infos() {
        let xml = |n: usize| alert(&format!("<info>{INFO}</info>").repeat(n));
        assert_eq!(alert_to_inputs(xml(32).as_bytes(), 4000, 32).unwrap().len(), 32);
        assert_eq!(error_code(&xml(33)), ("too_many_infos", vec!["info".to_owned()]));
    }

    fn error_code(xml: &str) -> (&'static str, Vec<String>) {
        let e = alert_to_inputs(xml.as_bytes(), 4000, 32).unwrap_err();
        (e.code(), e.field_errors().into_iter().map(|f| f.field).collect())
    }

    #[test]
    fn the_thunderstorm_is_placed_at_its_polygon_centroid() {
        let v = alert_to_inputs(&fixture("v1dot2_appendix_a2_thunderstorm.xml"), 4000, 32).unwrap();
        assert_eq!(v.len(), 1);
        let lat = v[0]["location"]["lat"].as_f64().unwrap();
        let lon = v[0]["location"]["lon"].as_f64().unwrap();
        assert!(
            (38.3..38.7).contains(&lat) && (-120.2..-119.7).contains(&lon),
            "{lat},{lon}"
        );
        assert_eq!(v[0]["source_id"], "KSTO1055887203");
        assert_eq!(v[0]["attrs"]["cap_severity"], "Severe");
        assert!(
            v[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("SEVERE THUNDERSTORM WARNING\nAT 254 PM")
        );
    }

    #[test]
    fn the_earthquake_update_keeps_its_references() {
        let v = alert_to_inputs(&fixture("v1dot2_appendix_a3_earthquake_update.xml"), 4000, 32).unwrap();
        assert_eq!(v[0]["location"], json!({"lat": 32.9525, "lon": -115.5527}));
        assert_eq!(v[0]["attrs"]["cap_msg_type"], "Update");
        assert_eq!(v[0]["attrs"]["cap_references"], json!(["TRI13970876.1"]));
    }

    #[test]
    fn the_homeland_alert_has_no_location_but_an_area_description() {
        let v = alert_to_inputs(&fixture("v1dot2_appendix_a1_homeland_security.xml"), 4000, 32).unwrap();
        assert!(v[0].get("location").is_none());
        assert_eq!(v[0]["attrs"]["area_desc"], "U.S. nationwide and interests worldwide");
        assert_eq!(v[0]["kind"], "unknown");
    }

    #[test]
    fn the_amber_alert_gives_one_event_per_language() {
        let v = alert_to_inputs(&fixture("v1dot2_appendix_a4_amber_alert.xml"), 4000, 32).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["source_id"], "KAR0-0306112239-SW#0");
        assert_eq!(v[1]["source_id"], "KAR0-0306112239-SW#1");
        assert_eq!(v[0]["kind"], "missing_person");
        assert_eq!(v[1]["kind"], "missing_person");
        assert_eq!(v[1]["attrs"]["language"], "es-US");
        assert!(v[1].get("location").is_none());
    }

    #[test]
    fn missing_elements_are_named() {
        let xml = format!(r#"<alert xmlns="{CAP_NS}"><identifier>x</identifier><info><event>e</event></info></alert>"#);
        let (code, fields) = error_code(&xml);
        assert_eq!(code, "not_cap");
        for f in [
            "alert.sender",
            "alert.scope",
            "alert.info[0].category",
            "alert.info[0].certainty",
        ] {
            assert!(fields.contains(&f.to_owned()), "{f} not in {fields:?}");
        }
    }

    #[test]
    fn wrong_namespace_and_wrong_root_are_not_cap() {
        assert_eq!(
            error_code(r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1"/>"#).0,
            "not_cap"
        );
        assert_eq!(error_code("<alert/>").0, "not_cap");
        assert_eq!(error_code(&format!(r#"<feed xmlns="{CAP_NS}"/>"#)).0, "not_cap");
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><alert>&lol2;</alert>"#;
        assert_eq!(error_code(bomb).0, "xml_doctype_forbidden");
        assert_eq!(error_code(&alert("<note>&ext;</note>")).0, "xml_entity_forbidden");
        let ok = alert_to_inputs(alert("<note>a &amp; b &#x41;</note>").as_bytes(), 4000, 32).unwrap();
        assert_eq!(ok[0]["attrs"]["cap_note"], "a & b A");
    }

    #[test]
    fn broken_xml_is_invalid() {
        for xml in ["<alert>", "<a></b>", "", "not xml", "<a/><b/>", "<x:a/>"] {
            let code = error_code(xml).0;
            assert!(code == "invalid_xml", "{xml}: {code}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(error_code(&deep).0, "invalid_xml");
    }

    #[test]
    fn a_cancel_without_info_is_still_an_event() {
        let xml = alert("<references>s,x0,2026-11-22T09:00:00+08:00</references>")
            .replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>");
        let v = alert_to_inputs(xml.as_bytes(), 4000, 32).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["attrs"]["cap_msg_type"], "Cancel");
        assert_eq!(v[0]["attrs"]["cap_references"], json!(["x0"]));
    }

    #[test]
    fn bad_area_geometry_is_named() {
        let xml = alert(&format!(
            "<info>{INFO}<area><areaDesc>d</areaDesc><circle>north</circle></area></info>"
        ));
        let (code, fields) = error_code(&xml);
        assert_eq!(
            (code, fields),
            ("not_cap", vec!["alert.info[0].area[0].circle".to_owned()])
        );
    }

    #[test]
    fn long_text_is_cut_not_refused() {
        let xml = alert(&format!(
            "<info>{INFO}<description>{}</description></info>",
            "x".repeat(50)
        ));
        let v = alert_to_inputs(xml.as_bytes(), 10, 32).unwrap();
        assert_eq!(v[0]["text"], "xxxxxxxxxx");
        assert_eq!(v[0]["kind"], "fire");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = alert_to_inputs(&bytes, 100, 32);
            }

            #[test]
            fn xml_like_text_never_panics(text in "[<>/a-z=\"&;#! \\[\\]x0-9:]{0,300}") {
                let _ = alert_to_inputs(text.as_bytes(), 100, 32);
            }
        }
    }
}
