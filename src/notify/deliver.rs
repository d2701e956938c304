//! Delivery: a worker per target POSTs its queue in order, retrying, never logging a URL.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use super::format::{self, Message};
use super::{DeliveryOptions, Target};

/// The most of a refusal's body kept in an error (services explain themselves briefly).
const BODY_EXCERPT: usize = 200;
/// The most of a refusal's body read.
const BODY_READ: usize = 16 * 1024;

/// A message on its way to one target.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) target: Arc<Target>,
    pub(crate) message: Message,
}

/// One target's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) last_error: Option<String>,
}

/// Messages accepted and not yet delivered or given up, across all targets.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until nothing is pending; false if `timeout` passed first.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a `done` in between is not missed.
            idle.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.count.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// Locks `m`, carrying on past a panic elsewhere: counters are still worth showing.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Delivers the jobs of one target, in order, until its queue is closed and drained.
pub(crate) async fn run_worker(
    mut queue: mpsc::Receiver<Job>,
    http: Result<reqwest::Client, String>,
    options: DeliveryOptions,
    stats: Arc<Mutex<Stats>>,
    pending: Arc<Pending>,
    counted: Arc<tokio::sync::watch::Sender<u64>>,
) {
    while let Some(job) = queue.recv().await {
        let name = &job.target.name;
        let event = format::event_name(job.message.notification.event);
        let result = match &http {
            Ok(client) => deliver(client, &options, &job).await,
            Err(e) => Err(format!("failed to set up the HTTP client: {e}")),
        };
        match result {
            Ok(attempts) => {
                debug!(notifier = %name, event, attempts, "notification delivered");
                lock(&stats).sent += 1;
            }
            Err(error) => {
                warn!(notifier = %name, event, "failed to deliver a notification: {error}");
                let mut stats = lock(&stats);
                stats.failed += 1;
                stats.last_error = Some(error);
            }
        }
        counted.send_modify(|n| *n += 1);
        pending.done();
    }
}

/// What one POST came to.
enum Outcome {
    Delivered,
    /// Worth trying again (5xx, 408, timeouts, connection errors).
    Failed(String),
    /// 429: try again after the delay the service asks for.
    RateLimited(String, Option<Duration>),
    /// Another status: the request itself is wrong, trying again will not help.
    Rejected(StatusCode, String),
}

/// POSTs `job` until it is accepted, refused, or `attempts` are used up; the number of
/// attempts made, or what went wrong last (without the URL).
async fn deliver(
    client: &reqwest::Client,
    options: &DeliveryOptions,
    job: &Job,
) -> Result<u32, String> {
    let target = &job.target;
    let payload = format::payload(target.kind, target.signing_key.as_deref(), &job.message);
    let attempts = options.attempts.max(1);
    let mut backoff = options.first_retry;
    let mut attempt = 1;
    loop {
        let (error, wait) = match post(client, target, &payload).await {
            Outcome::Delivered => return Ok(attempt),
            Outcome::Rejected(status, error) => {
                let status = status.as_u16();
                warn!(notifier = %target.name, status, "notification refused; not retrying");
                return Err(error);
            }
            Outcome::RateLimited(error, Some(after)) => (error, after.min(options.max_retry)),
            Outcome::RateLimited(error, None) | Outcome::Failed(error) => {
                let wait = backoff;
                backoff = backoff.saturating_mul(2).min(options.max_retry);
                (error, wait)
            }
        };
        if attempt >= attempts {
            return Err(format!("{error} (gave up after {attempts} attempts)"));
        }
        debug!(notifier = %target.name, attempt, ?wait, "not delivered, retrying: {error}");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn post(client: &reqwest::Client, target: &Target, payload: &format::Payload) -> Outcome {
    let mut request = client.post(&target.url).body(payload.body.clone());
    for (name, value) in &payload.headers {
        request = request.header(*name, value);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::Failed(scrub(&describe(e), &target.url)),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let header_delay = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(seconds);
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= BODY_READ {
            break;
        }
    }
    let body = String::from_utf8_lossy(&body);
    let mut error = format!("HTTP {status}");
    let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if !excerpt.is_empty() {
        let cut: String = excerpt.chars().take(BODY_EXCERPT).collect();
        let more = if cut.len() < excerpt.len() { "…" } else { "" };
        error.push_str(&format!(": {cut}{more}"));
    }
    let error = scrub(&error, &target.url);
    if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::RateLimited(error, retry_after(&body).or(header_delay))
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        Outcome::Failed(error)
    } else {
        Outcome::Rejected(status, error)
    }
}

/// The delay in a 429 body: Discord and others send `{"retry_after": 1.5}` (seconds).
fn retry_after(body: &str) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value.get("retry_after")?.as_f64().and_then(seconds_f64)
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by webhook services).
fn seconds(text: &str) -> Option<Duration> {
    text.trim().parse::<f64>().ok().and_then(seconds_f64)
}

fn seconds_f64(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// A transport error and its causes on one line. Called on errors without their URL.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` with the URL, its path and any long part of it (tokens) replaced: the last line
/// of defence for text that came from elsewhere.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "<url>");
    if let Ok(parsed) = reqwest::Url::parse(url) {
        let mut parts: Vec<&str> = parsed
            .path()
            .split('/')
            .chain(parsed.query().unwrap_or("").split(['&', '=']))
            .filter(|part| part.len() >= 16)
            .collect();
        if parsed.path().len() >= 8 {
            parts.push(parsed.path());
        }
        // Longest first, so a part inside another is not replaced before it.
        parts.sort_by_key(|part| std::cmp::Reverse(part.len()));
        for part in parts {
            out = out.replace(part, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_read_from_the_body_or_the_header() {
        assert_eq!(
            retry_after(r#"{"retry_after": 0.3, "global": false}"#),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            retry_after(r#"{"retry_after": 2}"#),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_after(r#"{"retry_after": -1}"#), None);
        assert_eq!(retry_after("slow down"), None);
        assert_eq!(seconds(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn urls_and_their_tokens_are_scrubbed() {
        let url = "https://discord.com/api/webhooks/123/AbCdEfGhIjKlMnOpQrSt?wait=true";
        assert_eq!(scrub(&format!("bad {url} here"), url), "bad <url> here");
        assert_eq!(
            scrub("token AbCdEfGhIjKlMnOpQrSt is invalid", url),
            "token <redacted> is invalid"
        );
        assert_eq!(
            scrub("no webhook at /api/webhooks/123/AbCdEfGhIjKlMnOpQrSt", url),
            "no webhook at <redacted>"
        );
        assert_eq!(
            scrub("HTTP 500 Internal Server Error", url),
            "HTTP 500 Internal Server Error"
        );
    }
}
