//! Message formats: Discord and Slack webhook payloads, berth's own JSON, and its signature.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::Notification;
use crate::manifest::model::{EventKind, NotifierType};

// Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
const DISCORD_CONTENT: usize = 2000;
const EMBED_TITLE: usize = 256;
const EMBED_DESCRIPTION: usize = 4096;
const EMBED_FIELD_VALUE: usize = 1024;
const EMBED_FOOTER: usize = 2048;
const EMBED_TOTAL: usize = 6000;

// Slack's limits (https://api.slack.com/reference/block-kit/blocks).
const SLACK_HEADER: usize = 150;
const SLACK_TEXT: usize = 3000;

const GREEN: u32 = 0x2ecc71;
const RED: u32 = 0xe74c3c;
const YELLOW: u32 = 0xf1c40f;

/// A notification as one target sends it.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// What happened.
    pub(crate) notification: Arc<Notification>,
    /// When it was sent (retries keep the first time).
    pub(crate) at: SystemTime,
    /// A failure that lasts, told again after `repeatAfter`.
    pub(crate) repeat: bool,
}

/// A request body and the headers that describe it.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// The body and headers `kind` expects for `message`, signed when there is a key.
pub(crate) fn payload(
    kind: NotifierType,
    signing_key: Option<&[u8]>,
    message: &Message,
) -> Payload {
    let value = match kind {
        NotifierType::Discord => discord(message),
        NotifierType::Slack => slack(message),
        NotifierType::Webhook => webhook(message),
    };
    let body = value.to_string().into_bytes();
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        (
            "x-berth-event",
            event_name(message.notification.event).to_owned(),
        ),
    ];
    if let Some(key) = signing_key {
        headers.push(("x-berth-signature-256", signature(key, &body)));
    }
    Payload { body, headers }
}

pub use crate::state::secrets::signature;

/// berth's own JSON: every field, nothing shortened.
pub(crate) fn webhook(message: &Message) -> Value {
    let n = &message.notification;
    json!({
        "event": event_name(n.event),
        "instance": n.instance,
        "revision": n.revision,
        "summary": n.summary,
        "details": n.details,
        "timestamp": timestamp(message.at),
        "repeat": message.repeat,
    })
}

/// A Discord execute-webhook body: the summary as `content`, the details in one embed,
/// every text within Discord's limits and no one pinged.
pub(crate) fn discord(message: &Message) -> Value {
    let n = &message.notification;
    let title = title(n.event, message.repeat);
    let content = truncate(
        &format!("**{title}** · {}", discord_escape(&n.summary)),
        DISCORD_CONTENT,
    );

    let footer = truncate(&format!("berth · {}", n.instance), EMBED_FOOTER);
    let mut fields = vec![(
        "Instance",
        non_empty(truncate(&discord_escape(&n.instance), EMBED_FIELD_VALUE)),
    )];
    if let Some(revision) = &n.revision {
        let revision = truncate(&discord_escape(revision.short()), EMBED_FIELD_VALUE);
        fields.push(("Revision", non_empty(revision)));
    }
    let mut used = width(title) + width(&footer);
    for (name, value) in &fields {
        used += width(name) + width(value);
    }
    let mut embed = serde_json::Map::new();
    embed.insert("title".into(), json!(truncate(title, EMBED_TITLE)));
    if !n.details.is_empty() {
        let room = EMBED_DESCRIPTION.min(EMBED_TOTAL.saturating_sub(used));
        embed.insert(
            "description".into(),
            json!(fit_lines(&n.details, room, discord_escape)),
        );
    }
    embed.insert("color".into(), json!(color(n.event)));
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value, "inline": true}))
        .collect();
    embed.insert("fields".into(), Value::Array(fields));
    embed.insert("footer".into(), json!({ "text": footer }));
    embed.insert("timestamp".into(), json!(timestamp(message.at)));

    json!({
        "username": "berth",
        "content": content,
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

/// A Slack incoming-webhook body: the summary as fallback `text`, then a header, the
/// summary, the details and a context line, each within Slack's limits.
pub(crate) fn slack(message: &Message) -> Value {
    let n = &message.notification;
    let title = title(n.event, message.repeat);
    let emoji = match tone(n.event) {
        Tone::Good => "✅",
        Tone::Bad => "❌",
        Tone::Notice => "⚠️",
    };
    let summary = truncate(&slack_escape(&n.summary), SLACK_TEXT);
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(&format!("{emoji} {title} · {}", n.instance), SLACK_HEADER),
                "emoji": true,
            },
        }),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": non_empty(summary.clone())}}),
    ];
    if !n.details.is_empty() {
        let details = fit_lines(&n.details, SLACK_TEXT, slack_escape);
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": non_empty(details)},
        }));
    }
    let mut context = format!("berth · {}", slack_escape(&n.instance));
    if let Some(revision) = &n.revision {
        context.push_str(&format!(" · revision `{}`", slack_escape(revision.short())));
    }
    context.push_str(&format!(" · {}", timestamp(message.at)));
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": truncate(&context, SLACK_TEXT)}],
    }));
    json!({ "text": format!("{title}: {summary}"), "blocks": blocks })
}

/// The event as berth's API and manifests spell it.
pub(crate) fn event_name(event: EventKind) -> &'static str {
    match event {
        EventKind::Deployed => "Deployed",
        EventKind::SyncFailed => "SyncFailed",
        EventKind::SyncRecovered => "SyncRecovered",
        EventKind::Degraded => "Degraded",
        EventKind::Recovered => "Recovered",
        EventKind::DriftCorrected => "DriftCorrected",
        EventKind::PlanPending => "PlanPending",
        EventKind::WorkflowSucceeded => "WorkflowSucceeded",
        EventKind::WorkflowFailed => "WorkflowFailed",
        EventKind::BackupFailed => "BackupFailed",
        EventKind::CertificateIssued => "CertificateIssued",
        EventKind::CertificateRenewalFailed => "CertificateRenewalFailed",
        EventKind::CertificateExpiring => "CertificateExpiring",
        EventKind::WorkflowMessage => "WorkflowMessage",
    }
}

/// The event in words, as a message's headline.
fn title(event: EventKind, repeat: bool) -> &'static str {
    match (event, repeat) {
        (EventKind::Deployed, _) => "Deployed",
        (EventKind::SyncFailed, false) => "Sync failed",
        (EventKind::SyncFailed, true) => "Sync still failing",
        (EventKind::SyncRecovered, _) => "Sync recovered",
        (EventKind::Degraded, false) => "Degraded",
        (EventKind::Degraded, true) => "Still degraded",
        (EventKind::Recovered, _) => "Recovered",
        (EventKind::DriftCorrected, _) => "Drift corrected",
        (EventKind::PlanPending, _) => "Plan pending",
        (EventKind::WorkflowSucceeded, _) => "Workflow succeeded",
        (EventKind::WorkflowFailed, _) => "Workflow failed",
        (EventKind::BackupFailed, _) => "Backup failed",
        (EventKind::CertificateIssued, _) => "Certificate issued",
        (EventKind::CertificateRenewalFailed, _) => "Certificate renewal failed",
        (EventKind::CertificateExpiring, false) => "Certificate expiring",
        (EventKind::CertificateExpiring, true) => "Certificate still expiring",
        (EventKind::WorkflowMessage, _) => "Workflow",
    }
}

enum Tone {
    Good,
    Bad,
    Notice,
}

fn tone(event: EventKind) -> Tone {
    match event {
        EventKind::Deployed
        | EventKind::SyncRecovered
        | EventKind::Recovered
        | EventKind::WorkflowSucceeded
        | EventKind::CertificateIssued => Tone::Good,
        EventKind::SyncFailed
        | EventKind::Degraded
        | EventKind::WorkflowFailed
        | EventKind::BackupFailed
        | EventKind::CertificateRenewalFailed
        | EventKind::CertificateExpiring => Tone::Bad,
        EventKind::DriftCorrected | EventKind::PlanPending | EventKind::WorkflowMessage => {
            Tone::Notice
        }
    }
}

/// The Discord embed colour: green for good news, red for failures, yellow otherwise.
fn color(event: EventKind) -> u32 {
    match tone(event) {
        Tone::Good => GREEN,
        Tone::Bad => RED,
        Tone::Notice => YELLOW,
    }
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The length services limit. UTF-16 units are never fewer than characters, so a text
/// that fits counted this way fits however the service counts.
fn width(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` cut to at most `max` units on a character boundary, ending with "…" when cut;
/// an HTML entity (`&amp;`) is never cut in half.
fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub(1);
    let mut end = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        if used + c.len_utf16() > budget {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    let mut kept = &text[..end];
    if let Some(amp) = kept.rfind('&') {
        let tail = &kept[amp + 1..];
        if tail.len() <= 3 && tail.bytes().all(|b| b.is_ascii_alphabetic()) {
            kept = &kept[..amp];
        }
    }
    if max == 0 {
        String::new()
    } else {
        format!("{kept}…")
    }
}

/// As many of `lines` (escaped) as fit in `max` units, one a line, then how many were
/// left out.
fn fit_lines(lines: &[String], max: usize, escape: fn(&str) -> String) -> String {
    let escaped: Vec<String> = lines.iter().map(|line| escape(line)).collect();
    let all = escaped.join("\n");
    if width(&all) <= max {
        return all;
    }
    let note = |left: usize| {
        let s = if left == 1 { "" } else { "s" };
        format!("… {left} more line{s} not shown")
    };
    let budget = max.saturating_sub(width(&note(escaped.len())) + 1);
    let mut out = String::new();
    let mut shown = 0;
    for line in &escaped {
        let sep = usize::from(shown > 0);
        if width(&out) + sep + width(line) <= budget {
            if sep == 1 {
                out.push('\n');
            }
            out.push_str(line);
            shown += 1;
            continue;
        }
        if shown == 0 && budget > 0 {
            out = truncate(line, budget);
            shown = 1;
        }
        break;
    }
    let left = escaped.len() - shown;
    if left > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&note(left));
    }
    truncate(&out, max)
}

/// Text shown literally in Discord markdown.
fn discord_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut line_start = true;
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '|')
            || (line_start && matches!(c, '>' | '#' | '-'))
        {
            out.push('\\');
        }
        out.push(c);
        line_start = c == '\n';
    }
    out
}

/// Text shown literally in Slack mrkdwn (links and mentions are written with `<…>`).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack and Discord reject empty texts.
fn non_empty(text: String) -> String {
    if text.trim().is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::RevisionId;

    fn message(event: EventKind, summary: &str, details: Vec<String>) -> Message {
        Message {
            notification: Arc::new(Notification {
                event,
                instance: "host-1".into(),
                revision: Some(RevisionId::commit(
                    "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
                )),
                resource: None,
                summary: summary.into(),
                details,
            }),
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            repeat: false,
        }
    }

    /// 500 lines of 300 characters, with multi-byte characters to catch a cut inside one.
    fn huge() -> Message {
        let details = (0..500)
            .map(|i| {
                format!("{i:03} {}", "é€😀_*&<>".repeat(40))
                    .chars()
                    .take(300)
                    .collect()
            })
            .collect();
        let mut m = message(EventKind::SyncFailed, &"x&y ".repeat(2000), details);
        let n = Arc::make_mut(&mut m.notification);
        n.instance = "i".repeat(3000);
        n.revision = Some(RevisionId::content("r".repeat(500)));
        m
    }

    fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in {v}"))
    }

    #[test]
    fn the_signature_matches_githubs_published_example() {
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn revisions_are_shortened_like_git_does() {
        let short = |r: RevisionId| r.short().to_owned();
        assert_eq!(
            short(RevisionId::commit(
                "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"
            )),
            "3f2a1c0"
        );
        assert_eq!(
            short(RevisionId::content("dir-20240101-120000-abcdef")),
            "dir-20240101"
        );
        assert_eq!(short(RevisionId::content("v1.2")), "v1.2");
        assert_eq!(
            short(RevisionId::content("ééééééééééééééé")),
            "éééééééééééé"
        );
        // The kind, not the length, decides: a content hash is never cut to 7.
        assert_eq!(
            short(RevisionId::content(
                "3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49"
            )),
            "3f2a1c0d9e8b"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters_and_entities() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("😀😀😀", 4), "😀…");
        assert_eq!(truncate("ab&amp;cd", 6), "ab…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn lines_that_do_not_fit_are_counted() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
        assert_eq!(
            fit_lines(&lines[..2], 100, |s| s.to_owned()),
            "line 0\nline 1"
        );
        assert_eq!(
            fit_lines(&lines, 50, |s| s.to_owned()),
            "line 0\nline 1\nline 2\n… 7 more lines not shown"
        );
        assert_eq!(
            fit_lines(&["a".repeat(100), "b".into()], 40, |s| s.to_owned()),
            format!("{}…\n… 1 more line not shown", "a".repeat(14))
        );
    }

    #[test]
    fn discord_messages_lead_with_the_event_and_carry_the_details() {
        let m = message(
            EventKind::Deployed,
            "deployed 3f2a1c0: app blog updated (image ghost:5.1 → ghost:5.2)",
            vec!["App/blog: image ghost:5.1 → ghost:5.2".into()],
        );
        assert_eq!(
            discord(&m),
            json!({
                "username": "berth",
                "content": "**Deployed** · deployed 3f2a1c0: app blog updated (image ghost:5.1 → ghost:5.2)",
                "embeds": [{
                    "title": "Deployed",
                    "description": "App/blog: image ghost:5.1 → ghost:5.2",
                    "color": GREEN,
                    "fields": [
                        {"name": "Instance", "value": "host-1", "inline": true},
                        {"name": "Revision", "value": "3f2a1c0", "inline": true},
                    ],
                    "footer": {"text": "berth · host-1"},
                    "timestamp": "2023-11-14T22:13:20Z",
                }],
                "allowed_mentions": {"parse": []},
            })
        );
    }

    #[test]
    fn discord_colours_follow_the_news() {
        for (event, expected) in [
            (EventKind::Deployed, GREEN),
            (EventKind::SyncRecovered, GREEN),
            (EventKind::Recovered, GREEN),
            (EventKind::WorkflowSucceeded, GREEN),
            (EventKind::SyncFailed, RED),
            (EventKind::Degraded, RED),
            (EventKind::WorkflowFailed, RED),
            (EventKind::BackupFailed, RED),
            (EventKind::DriftCorrected, YELLOW),
            (EventKind::PlanPending, YELLOW),
        ] {
            let v = discord(&message(event, "s", vec![]));
            assert_eq!(v["embeds"][0]["color"], json!(expected), "{event:?}");
        }
    }

    #[test]
    fn discord_markdown_and_mentions_are_inert() {
        let mut m = message(
            EventKind::WorkflowFailed,
            "@everyone *bold* `code`",
            vec!["> quote".into()],
        );
        m.repeat = false;
        let v = discord(&m);
        assert_eq!(
            text(&v, "/content"),
            r"**Workflow failed** · @everyone \*bold\* \`code\`"
        );
        assert_eq!(text(&v, "/embeds/0/description"), r"\> quote");
        assert_eq!(v["allowed_mentions"], json!({"parse": []}));
    }

    #[test]
    fn a_huge_discord_message_stays_within_every_limit() {
        let v = discord(&huge());
        assert!(width(text(&v, "/content")) <= 2000);
        let embeds = v["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 1);
        let e = &embeds[0];
        let title = text(e, "/title");
        let description = text(e, "/description");
        let footer = text(e, "/footer/text");
        assert!(width(title) <= 256);
        assert!(width(description) <= 4096);
        assert!(width(footer) <= 2048);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= 25);
        let mut total = width(title) + width(description) + width(footer);
        for f in fields {
            assert!(width(text(f, "/name")) <= 256);
            assert!(width(text(f, "/value")) <= 1024);
            total += width(text(f, "/name")) + width(text(f, "/value"));
        }
        assert!(total <= 6000, "{total}");
        let shown = description.lines().count() - 1;
        assert!(shown > 0);
        let note = description.lines().last().unwrap();
        assert_eq!(note, format!("… {} more lines not shown", 500 - shown));
        assert!(text(&v, "/content").ends_with('…'));
    }

    #[test]
    fn slack_text_is_escaped() {
        let m = message(
            EventKind::SyncFailed,
            "a < b & c > d",
            vec!["<!channel> & co".into()],
        );
        let v = slack(&m);
        assert_eq!(
            v,
            json!({
                "text": "Sync failed: a &lt; b &amp; c &gt; d",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "❌ Sync failed · host-1", "emoji": true}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "a &lt; b &amp; c &gt; d"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "&lt;!channel&gt; &amp; co"}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "berth · host-1 · revision `3f2a1c0` · 2023-11-14T22:13:20Z"}]},
                ],
            })
        );
    }

    #[test]
    fn a_huge_slack_message_stays_within_every_limit() {
        let v = slack(&huge());
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert!(width(text(&blocks[0], "/text/text")) <= 150);
        for b in &blocks[1..3] {
            let t = text(b, "/text/text");
            assert!(width(t) <= 3000);
            // Every `&` starts a whole entity: none was cut in half.
            for (i, _) in t.match_indices('&') {
                let rest = &t[i..];
                assert!(
                    rest.starts_with("&amp;")
                        || rest.starts_with("&lt;")
                        || rest.starts_with("&gt;"),
                    "{}",
                    &rest[..rest.len().min(10)]
                );
            }
        }
        let details = text(&blocks[2], "/text/text");
        let shown = details.lines().count() - 1;
        assert_eq!(
            details.lines().last().unwrap(),
            format!("… {} more lines not shown", 500 - shown)
        );
        assert!(width(text(&blocks[3], "/elements/0/text")) <= 3000);
    }

    #[test]
    fn webhook_bodies_hold_everything_and_are_signed() {
        let mut m = message(
            EventKind::SyncFailed,
            "sync failed",
            vec!["a".into(), "b".into()],
        );
        m.repeat = true;
        let p = payload(NotifierType::Webhook, Some(b"key"), &m);
        let body = String::from_utf8(p.body.clone()).unwrap();
        assert_eq!(
            body,
            r#"{"event":"SyncFailed","instance":"host-1","revision":"3f2a1c0d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49","summary":"sync failed","details":["a","b"],"timestamp":"2023-11-14T22:13:20Z","repeat":true}"#
        );
        assert_eq!(
            p.headers,
            vec![
                ("content-type", "application/json".to_owned()),
                ("x-berth-event", "SyncFailed".to_owned()),
                ("x-berth-signature-256", signature(b"key", &p.body)),
            ]
        );
        let unsigned = payload(NotifierType::Discord, None, &m);
        assert!(
            unsigned
                .headers
                .iter()
                .all(|(name, _)| *name != "x-berth-signature-256")
        );
    }

    #[test]
    fn every_event_has_its_manifest_name() {
        for event in EventKind::ALL {
            assert_eq!(
                json!(event_name(event)),
                serde_json::to_value(event).unwrap()
            );
        }
    }
}
