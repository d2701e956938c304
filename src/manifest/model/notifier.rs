//! Notifier: a destination for events, and the events berth reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::units::Duration;

/// A destination for events: a Discord or Slack channel, or any HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifierSpec {
    /// `discord`, `slack` or `webhook`.
    #[serde(rename = "type")]
    pub kind: NotifierType,
    /// The secret holding the webhook URL (URLs carry tokens, so they are not in Git).
    pub url_secret: String,
    /// The events sent. Default: all of them.
    #[serde(default = "all_events")]
    pub events: Vec<EventKind>,
    /// A failure that lasts is repeated at most this often. Default: `1h`.
    #[serde(default = "default_repeat")]
    pub repeat_after: Duration,
    /// For `webhook`: the secret the body is signed with (`X-Berth-Signature-256`).
    /// Default: no signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

fn all_events() -> Vec<EventKind> {
    EventKind::ALL.to_vec()
}

fn default_repeat() -> Duration {
    Duration::from_secs(3600)
}

/// Notifier formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NotifierType {
    /// A Discord execute-webhook URL.
    Discord,
    /// A Slack incoming-webhook URL.
    Slack,
    /// Any URL receiving berth's JSON.
    Webhook,
}

/// Events berth reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum EventKind {
    /// A new revision was applied.
    Deployed,
    /// A revision could not be applied (first failure, then at most every `repeatAfter`).
    SyncFailed,
    /// Applying works again after a failure.
    SyncRecovered,
    /// A resource stopped being healthy.
    Degraded,
    /// A degraded resource is healthy again.
    Recovered,
    /// Something changed by hand was put back.
    DriftCorrected,
    /// A plan waits for `berth apply` (`autoApply: false`).
    PlanPending,
    /// A workflow run succeeded.
    WorkflowSucceeded,
    /// A workflow run failed.
    WorkflowFailed,
    /// A backup failed.
    BackupFailed,
    /// A Domain's certificate was issued or renewed (berth's ACME client, nginx).
    CertificateIssued,
    /// Issuing or renewing a certificate failed (told once per run of failures; the
    /// certificate in place keeps serving).
    CertificateRenewalFailed,
    /// A certificate expires within 14 days and has not been renewed.
    CertificateExpiring,
    /// A workflow's `notify` node: sent to the Notifier it names, whatever its `events`
    /// (not a subscribable event).
    #[serde(skip_deserializing)]
    #[schemars(skip)]
    WorkflowMessage,
}

impl EventKind {
    /// Every event.
    pub const ALL: [EventKind; 13] = [
        EventKind::Deployed,
        EventKind::SyncFailed,
        EventKind::SyncRecovered,
        EventKind::Degraded,
        EventKind::Recovered,
        EventKind::DriftCorrected,
        EventKind::PlanPending,
        EventKind::WorkflowSucceeded,
        EventKind::WorkflowFailed,
        EventKind::BackupFailed,
        EventKind::CertificateIssued,
        EventKind::CertificateRenewalFailed,
        EventKind::CertificateExpiring,
    ];
}
