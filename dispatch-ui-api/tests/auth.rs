//! Authentication and authorisation: bad tokens are refused before the
//! WebSocket upgrade, and every role × channel × command combination is
//! allowed or refused as CONTRACT.md says.

mod common;

use base64::Engine as _;
use bus::model::{IncidentStatus, Role, TaskStatus, UnitStatus};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn bad_tokens() -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let admin = |exp: i64| json!({"sub": "a", "role": "admin", "jurisdictions": ["*"], "exp": exp});
    vec![
        ("garbage", "not-a-token".to_owned()),
        ("expired", sign(admin(now - 10), "test-secret")),
        ("wrong key", sign(admin(now + 600), "another-secret")),
        (
            "no exp",
            sign(
                json!({"sub": "a", "role": "admin", "jurisdictions": ["*"]}),
                "test-secret",
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&admin(now + 600).to_string())
            ),
        ),
        (
            "unit without unit",
            sign(
                json!({"sub": "u", "role": "unit", "jurisdictions": [], "exp": now + 600}),
                "test-secret",
            ),
        ),
    ]
}

async fn upgrade_status(api: &Api, token: Option<&str>) -> Result<(), u16> {
    let url = match token {
        Some(t) => format!("ws://{}/ws?token={t}", api.addr),
        None => format!("ws://{}/ws", api.addr),
    };
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected websocket error: {e}"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let ctx = context("api-tokens", |_| {}).await;
    let api = Api::start(&ctx).await;
    assert_eq!(upgrade_status(&api, None).await, Err(401), "no token");
    let http = reqwest::Client::new();
    for (what, token) in bad_tokens() {
        assert_eq!(upgrade_status(&api, Some(&token)).await, Err(401), "{what}");
        let r = http
            .get(api.url("/api/v1/info"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what} over REST");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    // A good token in the header works too.
    let good = api.token(Role::Operator, &["quancheng"], None);
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{}/ws", api.addr)).unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {good}").parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    assert_eq!(upgrade_status(&api, Some(&good)).await, Ok(()));
}

#[tokio::test]
async fn every_role_channel_and_command_is_allowed_or_refused_as_the_contract_says() {
    let ctx = context("api-roles", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let u1 = unique("u1");
    let u2 = unique("u2");
    let inc = incident(&unique("inc"), "quancheng", 1, IncidentStatus::Dispatched);
    router.incident(&inc).await;
    router.unit(&unit(&u1, "quancheng", UnitStatus::Available)).await;
    let t = task(&unique("task"), &inc.id, &u1, 1, TaskStatus::Issued);
    router.task(&t).await;
    let channel = format!("unit:{u1}");
    eventually("the api to see the task", || async {
        !ctx.store
            .history_since(&channel, None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    })
    .await;

    let principals: Vec<(&str, String)> = vec![
        ("source", api.token(Role::Source, &["*"], None)),
        ("unit u1", api.token(Role::Unit, &[], Some(&u1))),
        ("unit u2", api.token(Role::Unit, &[], Some(&u2))),
        ("operator", api.token(Role::Operator, &["quancheng"], None)),
        ("operator elsewhere", api.token(Role::Operator, &["daminghu"], None)),
        ("analyst", api.token(Role::Analyst, &["*"], None)),
        ("admin", api.token(Role::Admin, &[], None)),
    ];
    const OK: &str = "ok";
    const F: &str = "forbidden";
    const NF: &str = "not_found";
    const BR: &str = "bad_request";
    // Columns: board, unit:u1, topic:events.
    let subscribes: [[&str; 3]; 7] = [
        [F, F, F],
        [F, OK, F],
        [F, F, F],
        [OK, F, F],
        [OK, F, F],
        [F, F, OK],
        [OK, OK, OK],
    ];
    let commands = [
        json!({"op": "ack", "task": t.id}),
        json!({"op": "status", "status": "available", "lat": 36.6683, "lon": 117.0204}),
        json!({"op": "position", "lat": 36.6683, "lon": 117.0204}),
        json!({"op": "assign", "incident": inc.id, "unit": u1}),
        json!({"op": "divert", "incident": inc.id, "to": "12345"}),
        json!({"op": "escalate", "incident": inc.id, "desk": "criminal", "note": "weapons"}),
        json!({"op": "close", "incident": inc.id, "disposition": "handled"}),
    ];
    // Rows as principals; columns as the commands above.
    let outcomes: [[&str; 7]; 7] = [
        [F, F, F, F, F, F, F],
        [OK, OK, OK, F, F, F, F],
        // u2 is not registered: it may come on duty, not report a position.
        [F, OK, NF, F, F, F, F],
        [F, F, F, OK, OK, OK, OK],
        [F, F, F, F, F, F, F],
        [F, F, F, F, F, F, F],
        // admin: status and position over WS act for the token's unit.
        [OK, BR, BR, OK, OK, OK, OK],
    ];
    let channels = ["board".to_owned(), format!("unit:{u1}"), "topic:events".to_owned()];
    let mut failures = Vec::new();
    for (row, (who, token)) in principals.iter().enumerate() {
        let mut client = api.ws(token).await;
        for (col, channel) in channels.iter().enumerate() {
            let (reply, _) = client.request(json!({"op": "subscribe", "channel": channel})).await;
            let got = if reply["type"] == "subscribed" {
                OK
            } else {
                reply["code"].as_str().unwrap_or("?")
            };
            if got != subscribes[row][col] {
                failures.push(format!(
                    "{who} subscribe {channel}: want {} got {reply}",
                    subscribes[row][col]
                ));
            }
        }
        for (col, command) in commands.iter().enumerate() {
            let (reply, _) = client.request(command.clone()).await;
            let got = if reply["type"] == "ok" {
                OK
            } else {
                reply["code"].as_str().unwrap_or("?")
            };
            if got != outcomes[row][col] {
                failures.push(format!(
                    "{who} {}: want {} got {reply}",
                    command["op"], outcomes[row][col]
                ));
            }
        }
        // Same rules over REST for the incident commands and the task ack.
        let http = reqwest::Client::new();
        for (col, (path, body)) in [
            (format!("/api/v1/tasks/{}/ack", t.id), json!({})),
            (format!("/api/v1/incidents/{}/assign", inc.id), json!({"unit": u1})),
            (
                format!("/api/v1/incidents/{}/close", inc.id),
                json!({"disposition": "handled"}),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let want = outcomes[row][[0, 3, 6][col]];
            let r = http
                .post(api.url(&path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let want_status = match want {
                OK => 202,
                F => 403,
                NF => 404,
                _ => 400,
            };
            if status != want_status {
                failures.push(format!("{who} POST {path}: want {want_status} got {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn an_open_websocket_is_closed_with_4001_when_its_token_expires() {
    use futures::StreamExt;
    let ctx = context("api-expiry", |_| {}).await;
    let api = Api::start(&ctx).await;
    let short = api
        .keys
        .mint(
            "op-short",
            Role::Operator,
            &["quancheng".to_owned()],
            None,
            std::time::Duration::from_secs(2),
        )
        .unwrap();
    let mut client = api.ws(&short).await;
    let (pong, _) = client.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], "pong", "the token is good until it expires");
    let started = std::time::Instant::now();
    let frame = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.socket.next()).await {
            Ok(Some(Ok(tungstenite::Message::Close(frame)))) => break frame.expect("a close frame with a code"),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 4001);
    assert!(frame.reason.contains("token expired"));
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(4),
        "closed at expiry, not at idle"
    );
}

#[tokio::test]
async fn a_station_operator_assigns_only_its_own_units() {
    let ctx = context("api-assign-scope", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let inc = incident(&unique("inc"), "quancheng", 1, IncidentStatus::Dispatched);
    router.incident(&inc).await;
    let neighbour = unique("u-dmh");
    router.unit(&unit(&neighbour, "daminghu", UnitStatus::Available)).await;
    eventually("the api to see the unit", || async {
        ctx.store.unit(&neighbour).await.unwrap().is_some()
    })
    .await;
    let assign = json!({"op": "assign", "incident": inc.id, "unit": neighbour});

    let station = api.token(Role::Operator, &["quancheng"], None);
    let (reply, _) = api.ws(&station).await.request(assign.clone()).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("daminghu"), "{reply}");

    let city = api.token(Role::Operator, &["quancheng", "daminghu"], None);
    let (reply, _) = api.ws(&city).await.request(assign).await;
    assert_eq!(
        reply["type"], "ok",
        "an operator over both stations may borrow the unit: {reply}"
    );
}
