//! Domains: each one's proxy file written when new or changed (or edited by hand), left
//! alone when another program wrote it, removed when the Domain is gone.

use super::resolve::{redact_tokens, shown_token};
use super::{Action, Op, Phase, Step, Target, unified_diff};
use crate::desired::Desired;
use crate::desired::routes::FileState;
use crate::observe::Observed;

/// The proxy file of every declared Domain.
pub(super) fn plan_files(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    for (domain, content) in &desired.proxy_files {
        let mut a = Action::new(Target::Domain, domain, Op::Noop);
        a.phase = Phase::Proxy;
        let route = desired.routes.get(domain);
        match observed.proxy_files.get(domain) {
            None => {
                a.op = Op::Create;
                if let Some(r) = route {
                    let path = match &r.private_token {
                        Some(token) => format!("/p/{}/", shown_token(domain, token)),
                        None => r.public_path(),
                    };
                    a.reasons.push(format!(
                        "new route {} at {path} → {}",
                        r.hosts.join(", "),
                        r.upstream.address()
                    ));
                }
            }
            Some((FileState::Foreign, _)) => {
                a.op = Op::Conflict;
                a.reasons.push(
                    "its proxy file exists and was not written by berth (no berth header); \
                     move it away or rename the domain"
                        .into(),
                );
            }
            Some((FileState::OtherInstance(owner), _)) => {
                a.op = Op::Conflict;
                a.reasons.push(format!(
                    "its proxy file belongs to berth instance `{owner}`; one domain name \
                     cannot be declared by two instances: rename it in one of them"
                ));
            }
            Some((state, current)) if current != content || *state != FileState::Intact => {
                a.op = Op::Update;
                if *state == FileState::Legacy {
                    a.reasons.push(
                        "proxy file of an earlier berth (no instance in its header): taken over"
                            .into(),
                    );
                } else if *state == FileState::Edited {
                    a.drift = true;
                    a.reasons.push("proxy file edited by hand (drift)".into());
                } else {
                    a.reasons.push("proxy config changed".into());
                }
                // The token is a secret: the diff shows it redacted, as the reasons do.
                a.diff = Some(unified_diff(
                    &redact_tokens(domain, current),
                    &redact_tokens(domain, content),
                ));
            }
            Some(_) => {}
        }
        if matches!(a.op, Op::Create | Op::Update) {
            a.steps.push(Step::WriteProxyFile {
                domain: domain.clone(),
            });
        }
        out.push(a);
    }
    out
}

/// Proxy files berth wrote for Domains that are no longer declared.
pub(super) fn prune_files(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    for (domain, (state, _)) in &observed.proxy_files {
        // Only this instance's own files; another's, a foreign one or an earlier
        // berth's unnamed one is never removed.
        let ours = matches!(state, FileState::Intact | FileState::Edited);
        if ours && !desired.proxy_files.contains_key(domain) {
            let mut a = Action::new(Target::Domain, domain, Op::Delete);
            a.reasons.push("no longer declared".into());
            a.steps.push(Step::RemoveProxyFile {
                domain: domain.clone(),
            });
            out.push(a);
        }
    }
    out
}
