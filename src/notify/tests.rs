//! Notifier tests against real HTTP listeners on 127.0.0.1.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

/// Looks like a webhook token; must never show up in an error or a log line.
const TOKEN: &str = "NotARealTokenButLongEnough-0123456789";

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

/// What a listener answers: `answers` in order, then `otherwise`, after `delay`.
#[derive(Clone)]
struct Script {
    answers: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    otherwise: (u16, &'static str),
    delay: Duration,
    received: Arc<Mutex<Vec<Received>>>,
}

struct Listener {
    url: String,
    script: Script,
}

impl Listener {
    async fn start(answers: &[(u16, &'static str)], otherwise: (u16, &'static str)) -> Listener {
        Self::start_slow(answers, otherwise, Duration::ZERO).await
    }

    async fn start_slow(
        answers: &[(u16, &'static str)],
        otherwise: (u16, &'static str),
        delay: Duration,
    ) -> Listener {
        let script = Script {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            otherwise,
            delay,
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(socket, app).await });
        Listener {
            url: format!("http://{addr}/api/webhooks/42/{TOKEN}"),
            script,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.script.received.lock().unwrap().clone()
    }

    fn bodies(&self) -> Vec<Value> {
        self.received()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.headers["x-berth-event"].to_str().unwrap().to_owned())
            .collect()
    }
}

async fn answer(
    State(script): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    script.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    tokio::time::sleep(script.delay).await;
    let (code, text) = script
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(script.otherwise);
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
}

const OK: (u16, &str) = (200, "");

/// Small delays, so that retries take milliseconds.
fn quick() -> DeliveryOptions {
    DeliveryOptions {
        queue: 16,
        attempts: 3,
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    }
}

fn target(name: &str, kind: NotifierType, url: &str) -> Target {
    Target {
        name: name.into(),
        kind,
        url: url.into(),
        events: EventKind::ALL.to_vec(),
        repeat_after: Duration::from_secs(3600),
        signing_key: None,
    }
}

fn note(event: EventKind, summary: &str) -> Notification {
    Notification {
        event,
        instance: "host-1".into(),
        revision: Some(crate::source::RevisionId::commit(
            "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
        )),
        resource: None,
        summary: summary.into(),
        details: vec![],
    }
}

async fn flushed(notifier: &Notifier) {
    assert!(
        notifier.flush(Duration::from_secs(5)).await,
        "messages still pending"
    );
}

/// Log lines from berth at debug and above, captured on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("berth=debug")
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn a_webhook_receives_the_exact_body_signed() {
    let listener = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    let mut hook = target("ops", NotifierType::Webhook, &listener.url);
    hook.signing_key = Some(b"shared-key".to_vec());
    notifier.set_targets(vec![hook]);

    let mut n = note(
        EventKind::Deployed,
        "deployed 3f2a1c0: app blog updated (image ghost:5.1 → ghost:5.2)",
    );
    n.details = vec!["App/blog: image \"ghost:5.1\" → \"ghost:5.2\"".into()];
    notifier.send(n);
    flushed(&notifier).await;

    let received = listener.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.path, format!("/api/webhooks/42/{TOKEN}"));
    let body = String::from_utf8(r.body.clone()).unwrap();
    let timestamp = serde_json::from_str::<Value>(&body).unwrap()["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = humantime::parse_rfc3339(&timestamp).unwrap();
    assert!(
        sent.elapsed().unwrap_or_default() < Duration::from_secs(60),
        "{timestamp}"
    );
    assert_eq!(
        body,
        format!(
            "{{\"event\":\"Deployed\",\"instance\":\"host-1\",\
             \"revision\":\"3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49\",\
             \"summary\":\"deployed 3f2a1c0: app blog updated (image ghost:5.1 → ghost:5.2)\",\
             \"details\":[\"App/blog: image \\\"ghost:5.1\\\" → \\\"ghost:5.2\\\"\"],\
             \"timestamp\":\"{timestamp}\",\"repeat\":false}}"
        )
    );
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        r.headers[header::USER_AGENT],
        concat!("berth/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.headers["x-berth-event"], "Deployed");

    // Verified the way a receiver would, independently of `signature`.
    let header = r.headers["x-berth-signature-256"].to_str().unwrap();
    let digest = hex::decode(header.strip_prefix("sha256=").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"shared-key").unwrap();
    mac.update(&r.body);
    mac.verify_slice(&digest).expect("the signature verifies");

    assert_eq!(
        notifier.deliveries(),
        vec![Delivery {
            notifier: "ops".into(),
            sent: 1,
            failed: 0,
            dropped: 0,
            last_error: None,
        }]
    );
}

#[tokio::test]
async fn discord_gets_one_message_for_a_deployment() {
    let listener = Listener::start(&[], (204, "")).await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("chat", NotifierType::Discord, &listener.url)]);

    notifier.send(note(
        EventKind::Deployed,
        "deployed 3f2a1c0: app blog updated",
    ));
    flushed(&notifier).await;

    let bodies = listener.bodies();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["username"], "berth");
    assert_eq!(
        body["content"],
        "**Deployed** · deployed 3f2a1c0: app blog updated"
    );
    assert_eq!(body["embeds"][0]["title"], "Deployed");
    assert_eq!(body["embeds"][0]["color"], json!(0x2ecc71));
    assert_eq!(body["embeds"][0]["footer"]["text"], "berth · host-1");
    assert!(
        listener.received()[0]
            .headers
            .get("x-berth-signature-256")
            .is_none()
    );
    assert_eq!(notifier.deliveries()[0].sent, 1);
}

#[tokio::test]
async fn a_lasting_failure_is_told_once_and_its_recovery_once() {
    let listener = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("ops", NotifierType::Webhook, &listener.url)]);

    for _ in 0..3 {
        notifier.send(note(EventKind::SyncFailed, "sync failed at 3f2a1c0"));
    }
    flushed(&notifier).await;
    assert_eq!(listener.events(), ["SyncFailed"]);

    notifier.send(note(EventKind::SyncRecovered, "sync works again"));
    flushed(&notifier).await;
    assert_eq!(listener.events(), ["SyncFailed", "SyncRecovered"]);

    notifier.send(note(EventKind::SyncRecovered, "sync works again"));
    flushed(&notifier).await;
    assert_eq!(listener.events(), ["SyncFailed", "SyncRecovered"]);
    assert_eq!(notifier.deliveries()[0].sent, 2);
}

#[tokio::test]
async fn a_lasting_failure_is_told_again_after_repeat_after() {
    let listener = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    let mut hook = target("ops", NotifierType::Webhook, &listener.url);
    hook.repeat_after = Duration::from_millis(50);
    notifier.set_targets(vec![hook]);

    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    flushed(&notifier).await;
    assert_eq!(listener.received().len(), 1);

    tokio::time::sleep(Duration::from_millis(60)).await;
    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    flushed(&notifier).await;
    let repeats: Vec<Value> = listener
        .bodies()
        .iter()
        .map(|b| b["repeat"].clone())
        .collect();
    assert_eq!(repeats, [json!(false), json!(true)]);
}

#[tokio::test]
async fn a_rate_limited_message_waits_as_asked_then_is_delivered() {
    let listener = Listener::start(
        &[(429, r#"{"retry_after": 0.3, "global": false}"#)],
        (204, ""),
    )
    .await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("chat", NotifierType::Discord, &listener.url)]);

    notifier.send(note(EventKind::Deployed, "deployed"));
    flushed(&notifier).await;

    let received = listener.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(300),
        "retried after {waited:?}"
    );
    assert_eq!(received[0].body, received[1].body);
    let d = &notifier.deliveries()[0];
    assert_eq!((d.sent, d.failed), (1, 0));
}

#[tokio::test]
async fn a_failing_webhook_is_retried_then_reported_without_its_url() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let listener = Listener::start(&[], (500, r#"{"error": "boom"}"#)).await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("ops", NotifierType::Webhook, &listener.url)]);

    let started = Instant::now();
    notifier.send(note(EventKind::WorkflowFailed, "workflow nightly failed"));
    assert!(started.elapsed() < Duration::from_millis(50), "send waited");
    assert!(listener.received().is_empty(), "send delivered inline");
    flushed(&notifier).await;

    let received = listener.received();
    assert_eq!(received.len(), 3);
    // Exponential backoff: 20 ms, then 40 ms.
    assert!(received[1].at - received[0].at >= Duration::from_millis(20));
    assert!(received[2].at - received[1].at >= Duration::from_millis(40));

    let d = notifier.deliveries().remove(0);
    assert_eq!((d.sent, d.failed, d.dropped), (0, 1, 0));
    let error = d.last_error.unwrap();
    assert_eq!(
        error,
        r#"HTTP 500 Internal Server Error: {"error": "boom"} (gave up after 3 attempts)"#
    );
    let logs = logs.text();
    assert!(logs.contains("notifier=ops"), "{logs}");
    assert!(logs.contains("gave up after 3 attempts"), "{logs}");
    for text in [&error, &logs] {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("/api/webhooks"), "{text}");
    }
}

#[tokio::test]
async fn a_refused_message_is_not_retried() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let listener = Listener::start(
        &[],
        (404, r#"{"message": "Unknown Webhook", "code": 10015}"#),
    )
    .await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("chat", NotifierType::Discord, &listener.url)]);

    notifier.send(note(EventKind::Deployed, "deployed"));
    flushed(&notifier).await;

    assert_eq!(listener.received().len(), 1);
    let d = notifier.deliveries().remove(0);
    assert_eq!(
        d.last_error.as_deref(),
        Some(r#"HTTP 404 Not Found: {"message": "Unknown Webhook", "code": 10015}"#)
    );
    let logs = logs.text();
    assert!(
        logs.contains("WARN") && logs.contains("status=404") && logs.contains("notifier=chat"),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[tokio::test]
async fn an_unreachable_or_slow_webhook_fails_without_its_url() {
    // A port that was free a moment ago: connections are refused.
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let slow = Listener::start_slow(&[], OK, Duration::from_secs(2)).await;
    let notifier = Notifier::start(DeliveryOptions {
        attempts: 2,
        timeout: Duration::from_millis(100),
        ..quick()
    });
    notifier.set_targets(vec![
        target(
            "refused",
            NotifierType::Slack,
            &format!("http://{closed}/services/{TOKEN}"),
        ),
        target("slow", NotifierType::Slack, &slow.url),
    ]);

    notifier.send(note(
        EventKind::BackupFailed,
        "backup of Database/blog-db failed",
    ));
    flushed(&notifier).await;

    assert_eq!(slow.received().len(), 2);
    let d = notifier.deliveries();
    for d in &d {
        assert_eq!((d.sent, d.failed), (0, 1), "{d:?}");
        let error = d.last_error.as_deref().unwrap();
        assert!(error.ends_with("(gave up after 2 attempts)"), "{error}");
        assert!(!error.contains(TOKEN), "{error}");
        assert!(!error.contains("127.0.0.1"), "{error}");
    }
    assert!(
        d[0].last_error.as_deref().unwrap().contains("connect"),
        "{d:?}"
    );
    assert!(
        d[1].last_error.as_deref().unwrap().contains("timed out"),
        "{d:?}"
    );
}

#[tokio::test]
async fn only_the_chosen_events_are_sent() {
    let listener = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    let mut hook = target("deploys", NotifierType::Webhook, &listener.url);
    hook.events = vec![EventKind::Deployed, EventKind::SyncRecovered];
    notifier.set_targets(vec![hook]);

    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    notifier.send(note(EventKind::WorkflowFailed, "workflow failed"));
    notifier.send(note(EventKind::Deployed, "deployed"));
    // Not subscribed to failures, but their recovery is still paired with them.
    notifier.send(note(EventKind::SyncRecovered, "sync works again"));
    flushed(&notifier).await;

    assert_eq!(listener.events(), ["Deployed", "SyncRecovered"]);
}

#[tokio::test]
async fn a_full_queue_drops_messages_and_counts_them() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let listener = Listener::start(&[], OK).await;
    let notifier = Notifier::start(DeliveryOptions {
        queue: 1,
        ..quick()
    });
    notifier.set_targets(vec![target("ops", NotifierType::Webhook, &listener.url)]);

    // The worker runs on this thread only once the test yields: the queue fills up.
    for i in 0..3 {
        notifier.send(note(EventKind::Deployed, &format!("deployed {i}")));
    }
    flushed(&notifier).await;

    let summaries: Vec<Value> = listener
        .bodies()
        .iter()
        .map(|b| b["summary"].clone())
        .collect();
    assert_eq!(summaries, [json!("deployed 0")]);
    let d = notifier.deliveries().remove(0);
    assert_eq!((d.sent, d.dropped), (1, 2));
    let logs = logs.text();
    assert!(
        logs.contains("queue is full") && logs.contains("notifier=ops"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_slow_webhook_does_not_delay_another() {
    let slow = Listener::start_slow(&[], OK, Duration::from_secs(1)).await;
    let fast = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![
        target("a-slow", NotifierType::Webhook, &slow.url),
        target("b-fast", NotifierType::Webhook, &fast.url),
    ]);

    notifier.send(note(EventKind::Deployed, "first"));
    notifier.send(note(EventKind::Deployed, "second"));
    let started = Instant::now();
    while fast.received().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the fast webhook waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let summaries: Vec<Value> = fast.bodies().iter().map(|b| b["summary"].clone()).collect();
    assert_eq!(summaries, [json!("first"), json!("second")]);
    assert_eq!(
        slow.received().len(),
        1,
        "the slow webhook gets one message at a time"
    );
}

#[tokio::test]
async fn new_targets_keep_what_a_kept_name_has_told() {
    let old = Listener::start(&[], OK).await;
    let new = Listener::start(&[], OK).await;
    let other = Listener::start(&[], OK).await;
    let notifier = Notifier::start(quick());
    notifier.set_targets(vec![target("ops", NotifierType::Webhook, &old.url)]);
    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    flushed(&notifier).await;

    notifier.set_targets(vec![
        target("ops", NotifierType::Webhook, &new.url),
        target("added", NotifierType::Webhook, &other.url),
    ]);
    notifier.send(note(EventKind::SyncFailed, "sync failed"));
    notifier.send(note(EventKind::SyncRecovered, "sync works again"));
    flushed(&notifier).await;

    assert_eq!(old.events(), ["SyncFailed"]);
    // `ops` remembers the failure: no second SyncFailed, but its recovery, at its new URL.
    assert_eq!(new.events(), ["SyncRecovered"]);
    // `added` is new: it tells the failure it sees, then its recovery.
    assert_eq!(other.events(), ["SyncFailed", "SyncRecovered"]);
    let names: Vec<(String, u64)> = notifier
        .deliveries()
        .into_iter()
        .map(|d| (d.notifier, d.sent))
        .collect();
    assert_eq!(names, [("added".to_owned(), 2), ("ops".to_owned(), 2)]);
}

#[test]
fn targets_are_read_from_the_secret_store_without_showing_secrets() {
    use crate::manifest::units::Duration as Every;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let write = |name: &str, value: &str| {
        std::fs::write(dir.path().join("secrets").join(name), value).unwrap()
    };
    write(
        "notify-test-url",
        &format!("https://example.com/hooks/{TOKEN}\n"),
    );
    write("notify-test-key", "signing-key");
    write("notify-test-bad-url", TOKEN);
    let store = SecretStore::new(dir.path());
    let spec = NotifierSpec {
        kind: NotifierType::Webhook,
        url_secret: "notify-test-url".into(),
        events: vec![EventKind::Deployed],
        repeat_after: "90s".parse::<Every>().unwrap(),
        signing_secret: Some("notify-test-key".into()),
    };

    let t = Target::from_spec("ops", &spec, &store).unwrap();
    assert_eq!(t.url, format!("https://example.com/hooks/{TOKEN}"));
    assert_eq!(t.signing_key.as_deref(), Some(&b"signing-key"[..]));
    assert_eq!(t.repeat_after, Duration::from_secs(90));
    assert_eq!(t.events, [EventKind::Deployed]);
    assert!(!format!("{t:?}").contains(TOKEN));

    let missing = NotifierSpec {
        url_secret: "notify-test-missing".into(),
        ..spec.clone()
    };
    let err = Target::from_spec("ops", &missing, &store)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("failed to read the URL of notifier `ops`: secret `notify-test-missing`"),
        "{err}"
    );

    let bad = NotifierSpec {
        url_secret: "notify-test-bad-url".into(),
        ..spec.clone()
    };
    let err = Target::from_spec("ops", &bad, &store)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "notifier `ops`: secret `notify-test-bad-url` does not hold a valid webhook URL"
        ),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");

    let unsigned = NotifierSpec {
        signing_secret: Some("notify-test-missing-key".into()),
        ..spec
    };
    let err = Target::from_spec("ops", &unsigned, &store)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signing secret of notifier `ops`: secret `notify-test-missing-key`"),
        "{err}"
    );
}
