//! What each CAP alert becomes, from the XML through ingest's parser and
//! validation to the router (issue #20, "CAP done right"): the four OASIS
//! fixtures of `../shared/fixtures/cap/`, and the status and message types
//! they do not show (Exercise, Test, System, Draft, Ack, Error).

mod common;

use bus::model::{Event, Flag, Incident, IncidentStatus};
use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cap");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// The events ingest makes of an alert received at `t0`, as the CAP
/// endpoint makes them.
fn alert_events(ctx: &bus::ServiceContext, xml: &str) -> Vec<Event> {
    let values = ingest::cap::alert_to_inputs(xml.as_bytes(), 4000, 32).unwrap();
    let rules = bus::validate::InputRules::new(&ctx.config);
    let city = bus::geo::CityMap::new(&ctx.config);
    values
        .iter()
        .map(|v| {
            let input = bus::validate::validate_input(v, &rules, None, t0()).unwrap();
            bus::validate::normalise(input, &city, t0())
        })
        .collect()
}

async fn feed(ctx: &bus::ServiceContext, r: &mut router::Router, xml: &str) {
    for event in alert_events(ctx, xml) {
        r.on_event(event, t0()).await.unwrap();
    }
}

/// The incident an alert identifier made, if any (open or not).
async fn made_by(ctx: &bus::ServiceContext, identifier: &str) -> Option<Incident> {
    let id = ctx.store.get_key(&format!("capref:{identifier}")).await.unwrap()?;
    ctx.store.incident(&id).await.unwrap()
}

#[tokio::test]
async fn the_four_oasis_fixtures_through_ingest_and_the_router() {
    let ctx = ctx("cap-fixtures").await;
    unit(&ctx, "u-1", bus::model::UnitType::PatrolCar, LAT, LON).await;
    let mut r = router(&ctx);

    // A1: an actual advisory, placed by its area description.
    feed(&ctx, &mut r, &fixture("v1dot2_appendix_a1_homeland_security.xml")).await;
    let a1 = made_by(&ctx, "43b080713727").await.expect("an incident");
    assert!(a1.status.is_open(), "{:?}", a1.status);
    assert!(a1.flags.is_empty());

    // A2: a thunderstorm warning that expired in 2003: recorded, closed,
    // never dispatched.
    feed(&ctx, &mut r, &fixture("v1dot2_appendix_a2_thunderstorm.xml")).await;
    let a2 = made_by(&ctx, "KSTO1055887203").await.expect("recorded as an incident");
    assert_eq!(a2.status, IncidentStatus::Closed);
    assert!(a2.flags.contains(&Flag::Expired), "{:?}", a2.flags);
    assert!(a2.units.is_empty() && a2.deadlines.is_none());
    assert!(a2.disposition.as_deref().unwrap().contains("expired"));

    // A3: an update of an alert never seen: a new alert of its own.
    feed(&ctx, &mut r, &fixture("v1dot2_appendix_a3_earthquake_update.xml")).await;
    let a3 = made_by(&ctx, "TRI13970876.2").await.expect("an incident");
    assert!(a3.status.is_open());

    // A4: the AMBER alert in English and Spanish: one incident, both texts.
    feed(&ctx, &mut r, &fixture("v1dot2_appendix_a4_amber_alert.xml")).await;
    let en = made_by(&ctx, "KAR0-0306112239-SW#0").await.expect("the English info");
    let es = made_by(&ctx, "KAR0-0306112239-SW#1").await.expect("the Spanish info");
    assert_eq!(en.id, es.id, "one incident for both languages");
    assert_eq!(en.events.len(), 2);
    assert!(
        en.timeline.iter().any(|t| t.what.contains("in es-US")),
        "{:#?}",
        en.timeline
    );
    assert!(en.units.len() <= 1, "units sent once, not per language");
}

#[tokio::test]
async fn exercises_tests_system_and_draft_alerts_send_nobody() {
    let ctx = ctx("cap-status").await;
    unit(&ctx, "u-1", bus::model::UnitType::PatrolCar, LAT, LON).await;
    let mut r = router(&ctx);
    let a1 = fixture("v1dot2_appendix_a1_homeland_security.xml");
    for status in ["Exercise", "Test", "System", "Draft"] {
        let xml = a1
            .replace("<status>Actual</status>", &format!("<status>{status}</status>"))
            .replace("43b080713727", &format!("x-{status}"));
        feed(&ctx, &mut r, &xml).await;
        let made = made_by(&ctx, &format!("x-{status}")).await;
        match status {
            "Exercise" | "Test" => {
                let incident = made.expect("recorded as an incident");
                assert_eq!(incident.status, IncidentStatus::Closed);
                assert!(incident.flags.contains(&Flag::Exercise));
                assert!(incident.units.is_empty());
            }
            _ => assert!(made.is_none(), "{status}: no incident"),
        }
    }
    assert_eq!(unit_state(&ctx, "u-1").await.status, bus::model::UnitStatus::Available);
}

#[tokio::test]
async fn an_ack_or_error_is_noted_on_the_alert_it_answers() {
    let ctx = ctx("cap-ack").await;
    let mut r = router(&ctx);
    let a1 = fixture("v1dot2_appendix_a1_homeland_security.xml");
    feed(&ctx, &mut r, &a1).await;
    let before = made_by(&ctx, "43b080713727").await.unwrap();
    for msg_type in ["Ack", "Error"] {
        let answer = a1
            .replace("<msgType>Alert</msgType>", &format!("<msgType>{msg_type}</msgType>"))
            .replace(
                "<identifier>43b080713727</identifier>",
                &format!("<identifier>{msg_type}-1</identifier>"),
            )
            .replace(
                "<scope>Public</scope>",
                "<scope>Public</scope><references>hsas@dhs.gov,43b080713727,2003-04-02T14:39:01-05:00</references>",
            );
        feed(&ctx, &mut r, &answer).await;
        assert!(made_by(&ctx, &format!("{msg_type}-1")).await.is_none(), "nothing new");
    }
    let after = incident(&ctx, &before.id).await;
    assert_eq!(after.events.len(), 3);
    for msg_type in ["Ack", "Error"] {
        assert!(
            after
                .timeline
                .iter()
                .any(|t| t.what.starts_with(&format!("CAP {msg_type} from")))
        );
    }
    assert_eq!(ctx.store.open_incidents().await.unwrap().len(), 1);
}
