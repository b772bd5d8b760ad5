//! The operator board (`/`) and the unit terminal (`/terminal`): static
//! pages compiled into the binary, so a deployment is one file and nothing
//! is fetched from outside at run time. They speak only the public REST and
//! WebSocket interfaces. No token is needed to load a page; the page sends
//! its token with every call.
//!
//! The pages take `?token=` in the URL (the demo prints such links), so
//! every response forbids referrers: the token must never leave in a
//! `Referer` header.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const BOARD_HTML: &str = include_str!("../web/board.html");
const TERMINAL_HTML: &str = include_str!("../web/terminal.html");
/// `/web/<name>`: the assets the pages load.
const ASSETS: [(&str, &str, &str); 10] = [
    ("style.css", "text/css; charset=utf-8", include_str!("../web/style.css")),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/common.js"),
    ),
    (
        "board.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board.js"),
    ),
    (
        "board-state.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-state.js"),
    ),
    (
        "board-list.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-list.js"),
    ),
    (
        "board-map.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-map.js"),
    ),
    (
        "board-assign.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-assign.js"),
    ),
    (
        "board-detail.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-detail.js"),
    ),
    (
        "board-forms.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/board-forms.js"),
    ),
    (
        "terminal.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/terminal.js"),
    ),
];

/// Scripts only from us; the WebSocket and REST calls to the same host.
const CSP: &str = "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; \
                   img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

pub async fn board() -> Response {
    page("text/html; charset=utf-8", BOARD_HTML)
}

pub async fn terminal() -> Response {
    page("text/html; charset=utf-8", TERMINAL_HTML)
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "not_found", "message": format!("no asset {name}")})),
        )
            .into_response(),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The pages change with the binary; a stale cached script would speak
    // an older protocol.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_and_assets_are_served_with_protective_headers() {
        for response in [board().await, terminal().await, asset(Path("board.js".into())).await] {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
            assert!(response.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        assert_eq!(
            asset(Path("../Cargo.toml".into())).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn every_asset_a_page_loads_is_served() {
        for html in [BOARD_HTML, TERMINAL_HTML] {
            for part in html.split("/web/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is not served");
            }
        }
    }
}
