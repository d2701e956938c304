//! The words status is made of — condition types, reasons, event reasons, pass results —
//! as types that serialize to the strings status.json and the HTTP API have always used.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a fieldless enum written as fixed strings (in JSON too).
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word, as status.json writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value written `text`.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        concat!("unknown ", stringify!($name), " `{}`"),
                        text
                    ))
                })
            }
        }
    };
}

words! {
    /// The type of a condition, as in Kubernetes and Flux.
    ConditionType {
        /// The resource (or the source as a whole) is as declared.
        Ready => "Ready",
        /// A pass is changing it.
        Reconciling => "Reconciling",
        /// Retrying will not help until the revision changes.
        Stalled => "Stalled",
    }
}

words! {
    /// Why a condition is as it is.
    Reason {
        /// Its change was applied.
        Applied => "Applied",
        /// Its change failed (may work next time).
        ApplyFailed => "ApplyFailed",
        /// Not attempted: something it needs failed or is not ready.
        DependencyFailed => "DependencyFailed",
        /// Blocked by an object berth does not own.
        Conflict => "Conflict",
        /// Already as declared.
        Unchanged => "Unchanged",
        /// Declared as it is, but not running as declared: a Swarm service's tasks fail
        /// or its node is down (the message says which).
        Degraded => "Degraded",
        /// Held at an earlier spec by a rollback until its declared spec changes.
        RolledBack => "RolledBack",
        /// Not as declared, and nothing is done before a later time: a certificate whose
        /// order failed waits for its retry, a Domain is served over plain HTTP until its
        /// certificate exists.
        Waiting => "Waiting",
        /// A secret it names is missing.
        SecretMissing => "SecretMissing",
        /// A pass is working on it.
        Progressing => "Progressing",
        /// Nothing is working on it.
        Idle => "Idle",
        /// The revision is invalid.
        InvalidRevision => "InvalidRevision",
        /// The revision is applied.
        Succeeded => "Succeeded",
        /// The plan waits for `berth apply` (autoApply off).
        PlanPending => "PlanPending",
        /// The last pass failed.
        SyncFailed => "SyncFailed",
        /// Nothing is known yet.
        Unknown => "Unknown",
        /// The condition does not hold and there is nothing to say (a `Stalled` that is false).
        Unset => "",
    }
}

impl Reason {
    /// Whether retrying cannot help until the revision changes.
    pub fn stalls(self) -> bool {
        matches!(self, Reason::InvalidRevision | Reason::Conflict)
    }
}

words! {
    /// What an entry of the event history records.
    EventReason {
        /// A new revision was applied.
        Deployed => "Deployed",
        /// Changes made by hand were put back.
        DriftCorrected => "DriftCorrected",
        /// A pass failed.
        SyncFailed => "SyncFailed",
        /// A fetch of the Git source failed.
        FetchFailed => "FetchFailed",
        /// A scheduled backup was written.
        BackedUp => "BackedUp",
        /// A scheduled backup failed.
        BackupFailed => "BackupFailed",
        /// A scheduled job was due while its last run was still going.
        JobSkipped => "JobSkipped",
        /// A Domain's certificate was issued or renewed.
        CertificateIssued => "CertificateIssued",
        /// Ordering a Domain's certificate failed (once per run of failures).
        CertificateRenewalFailed => "CertificateRenewalFailed",
        /// A Domain's certificate expires within 14 days.
        CertificateExpiring => "CertificateExpiring",
    }
}

words! {
    /// How a pass ended, as counted in status and metrics.
    PassResult {
        /// Something failed that may work next time.
        Failed => "Failed",
        /// Retrying will not help until the revision changes.
        Stalled => "Stalled",
        /// The revision is applied (or planned, with autoApply off).
        Synced => "Synced",
        /// A dependency is not ready yet; not a failure.
        Waiting => "Waiting",
    }
}

/// A condition of a resource, as in Kubernetes and Flux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// Whether the condition holds.
    pub status: bool,
    /// Why.
    pub reason: Reason,
    /// Words for people.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition: String,
}

impl Condition {
    /// A condition that keeps its `lastTransition` from `before` while its status holds
    /// (so the time says when it became so, not when it was last checked).
    pub(crate) fn keeping_transition(
        before: &[Condition],
        now: &str,
        kind: ConditionType,
        status: bool,
        reason: Reason,
        message: String,
    ) -> Condition {
        let last_transition = before
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition.clone());
        Condition {
            kind,
            status,
            reason,
            message,
            last_transition,
        }
    }
}

/// The condition of type `kind` among `conditions`.
pub fn find(conditions: &[Condition], kind: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.kind == kind)
}

/// Whether `conditions` say Ready.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find(conditions, ConditionType::Ready).is_some_and(|c| c.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_serialize_to_the_strings_status_json_always_held() {
        for (reason, text) in [
            (Reason::ApplyFailed, "\"ApplyFailed\""),
            (Reason::DependencyFailed, "\"DependencyFailed\""),
            (Reason::Unset, "\"\""),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), text);
            assert_eq!(serde_json::from_str::<Reason>(text).unwrap(), reason);
        }
        assert_eq!(
            serde_json::to_string(&ConditionType::Stalled).unwrap(),
            "\"Stalled\""
        );
        assert!(serde_json::from_str::<Reason>("\"Bogus\"").is_err());
        for words in [
            Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            EventReason::ALL.iter().map(|r| r.as_str()).collect(),
            PassResult::ALL.iter().map(|r| r.as_str()).collect(),
        ] {
            let mut unique = words.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), words.len(), "{words:?}");
        }
        // Pass results count in a map: their order is the strings' order.
        let mut sorted = PassResult::ALL.to_vec();
        sorted.sort_by_key(|r| r.as_str());
        assert_eq!(sorted, PassResult::ALL);
    }
}
