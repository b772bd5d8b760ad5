//! The simulated source systems: posts events to `POST /v1/events` and CAP
//! alerts to `POST /v1/alerts/cap` with a source token, as any 110 or sensor
//! platform would, and counts what the deployment said.
//!
//! It only speaks the public HTTP contract. A 503 or a refused connection is
//! retried a few times (the deployment may be starting); a 4xx is counted
//! and logged, never retried. It must never log the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, warn};

/// Attempts per item before it is counted as failed.
const ATTEMPTS: u32 = 4;
/// Upper bound on a server's Retry-After we honour, so shutdown stays quick.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("ingest refused the item with {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("ingest unavailable after {ATTEMPTS} attempts: {0}")]
    Unavailable(String),
    #[error("unexpected ingest answer: {0}")]
    BadResponse(String),
}

/// What ingest answered for one posted item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
}

/// Counters of the posting side, shared with the report.
#[derive(Debug, Default)]
pub struct PostCounters {
    pub calls: AtomicU64,
    pub sensor_alarms: AtomicU64,
    pub cap_alerts: AtomicU64,
    pub repeats: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

impl PostCounters {
    pub fn record(&self, result: &Result<Posted, PostError>) {
        match result {
            Ok(p) => {
                self.accepted.fetch_add(p.accepted as u64, Ordering::Relaxed);
                self.duplicates.fetch_add(p.duplicates as u64, Ordering::Relaxed);
                self.rejected.fetch_add(p.rejected as u64, Ordering::Relaxed);
            }
            Err(PostError::Rejected { .. }) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An HTTP client of ingest.
#[derive(Debug, Clone)]
pub struct IngestClient {
    http: reqwest::Client,
    events_url: String,
    cap_url: String,
    token: String,
}

impl IngestClient {
    pub fn new(ingest_url: &str, token: &str) -> Result<IngestClient, PostError> {
        let base = ingest_url.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| PostError::Unavailable(e.to_string()))?;
        Ok(IngestClient {
            http,
            events_url: format!("{base}/v1/events"),
            cap_url: format!("{base}/v1/alerts/cap"),
            token: token.to_owned(),
        })
    }

    /// Posts one input event.
    pub async fn post_event(&self, event: &Value) -> Result<Posted, PostError> {
        let body = serde_json::to_vec(event).map_err(|e| PostError::BadResponse(e.to_string()))?;
        self.post(&self.events_url, "application/json", body).await
    }

    /// Posts one CAP document.
    pub async fn post_cap(&self, xml: String) -> Result<Posted, PostError> {
        self.post(&self.cap_url, "application/cap+xml", xml.into_bytes()).await
    }

    async fn post(&self, url: &str, content_type: &str, body: Vec<u8>) -> Result<Posted, PostError> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .post(url)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone())
                .send()
                .await;
            let wait = match sent {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() || status.as_u16() == 400 {
                        return parse_answer(status.as_u16(), &text);
                    }
                    if status.as_u16() == 503 || status.is_server_error() {
                        last = format!("{status}: {}", cut(&text));
                        retry_after
                            .unwrap_or(Duration::from_millis(500) * attempt)
                            .min(MAX_RETRY_AFTER)
                    } else {
                        return Err(PostError::Rejected {
                            status: status.as_u16(),
                            body: cut(&text),
                        });
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    Duration::from_millis(500) * attempt
                }
            };
            debug!(attempt, error = %last, "ingest post failed, retrying");
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
            }
        }
        warn!(error = %last, "ingest post given up");
        Err(PostError::Unavailable(last))
    }
}

/// Reads ingest's `{"accepted":[…],"rejected":[…]}`.
fn parse_answer(status: u16, text: &str) -> Result<Posted, PostError> {
    let value: Value = serde_json::from_str(text).map_err(|_| PostError::BadResponse(cut(text)))?;
    let accepted = value.get("accepted").and_then(Value::as_array);
    let rejected = value.get("rejected").and_then(Value::as_array);
    if accepted.is_none() && rejected.is_none() {
        return Err(PostError::BadResponse(cut(text)));
    }
    let duplicates = accepted.map_or(0, |a| {
        a.iter()
            .filter(|x| x.get("duplicate").and_then(Value::as_bool) == Some(true))
            .count()
    });
    let posted = Posted {
        accepted: accepted.map_or(0, Vec::len) - duplicates,
        duplicates,
        rejected: rejected.map_or(0, Vec::len),
    };
    if posted.rejected > 0 {
        // Every simulated event is valid: a rejection is a contract mismatch
        // somebody should look at.
        let why = rejected
            .map(|r| cut(&Value::Array(r.clone()).to_string()))
            .unwrap_or_default();
        warn!(status, rejected = %why, "ingest rejected a simulated event");
    }
    Ok(posted)
}

fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted() {
        let p = parse_answer(
            202,
            r#"{"accepted":[{"index":0,"id":"a","source_id":"s","duplicate":false},{"index":1,"id":"b","source_id":"t","duplicate":true}],"rejected":[]}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Posted {
                accepted: 1,
                duplicates: 1,
                rejected: 0
            }
        );
        let p = parse_answer(400, r#"{"accepted":[],"rejected":[{"index":0,"errors":[]}]}"#).unwrap();
        assert_eq!(p.rejected, 1);
        assert!(parse_answer(202, "<html>").is_err());
        assert!(parse_answer(202, "{}").is_err());
    }
}
