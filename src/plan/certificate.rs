//! Certificates of berth's ACME client (nginx Domains with `tls: {acme: true}`):
//! ordered when a Domain has none valid for its hosts, renewed when due (inside the
//! CA's renewal window when it suggests one, else at two thirds of the lifetime, with
//! jitter), never sooner than the backoff after a failed order allows, and removed with
//! their Domain.

use super::{Action, Need, Op, Phase, PlanOptions, Step, Target};
use crate::desired::{Desired, DesiredCertificate};
use crate::observe::Observed;
use crate::state::certs::rfc3339;

/// The action of every certificate the Domains need.
pub(super) fn plan_certificates(desired: &Desired, options: PlanOptions) -> Vec<Action> {
    let now = options.now;
    let mut out = Vec::new();
    for (domain, c) in &desired.certificates {
        let mut a = Action::new(Target::Certificate, domain, Op::Noop);
        a.phase = Phase::Certificates;
        // The challenge is answered by the Domain's file: it must be live first.
        a.needs.push(Need {
            target: Target::Domain,
            name: domain.clone(),
        });
        let hosts = c.hosts.join(", ");
        if let Some(owner) = &c.owner {
            a.op = Op::Conflict;
            a.reasons.push(format!(
                "certs/{domain} belongs to berth instance `{owner}`; one domain name cannot \
                 be declared by two instances sharing a state directory: rename it in one of \
                 them"
            ));
            out.push(a);
            continue;
        }
        let due = match &c.current {
            _ if !c.usable(now) => Some((
                if c.current.is_some() {
                    Op::Update
                } else {
                    Op::Create
                },
                format!(
                    "issue certificate for {hosts} (ACME, HTTP-01){}",
                    why_unusable(c, now)
                ),
            )),
            Some(current) => {
                let (at, why) = renewal_time(c);
                (now >= at).then(|| {
                    (
                        Op::Update,
                        format!(
                            "renew certificate for {hosts} (ACME, HTTP-01): {why} (expires {})",
                            rfc3339(current.not_after)
                        ),
                    )
                })
            }
            None => None,
        };
        let record = c.record.clone().unwrap_or_default();
        match due {
            Some((_, reason)) if record.next_attempt.is_some_and(|n| n > now) => {
                a.waiting = true;
                a.reasons.push(format!(
                    "{reason}; waiting: {} failed, the last with: {}; next attempt at {}",
                    match record.failures {
                        1 => "1 attempt".to_owned(),
                        n => format!("{n} attempts"),
                    },
                    record.last_error.as_deref().unwrap_or("an unknown error"),
                    rfc3339(record.next_attempt.unwrap_or_default())
                ));
            }
            Some((op, reason)) => {
                a.op = op;
                a.reasons.push(reason);
                a.steps.push(Step::IssueCertificate {
                    domain: domain.clone(),
                    hosts: c.hosts.clone(),
                });
                if let Some(file) = desired.file_of(domain) {
                    a.steps.push(Step::ServeCertificate {
                        file: file.to_owned(),
                    });
                }
            }
            None => {
                if let Some(current) = &c.current {
                    let (at, _) = renewal_time(c);
                    a.reasons.push(format!(
                        "valid until {}, issued by {}; renewal at {}",
                        rfc3339(current.not_after),
                        current.issuer,
                        rfc3339(at)
                    ));
                }
            }
        }
        out.push(a);
    }
    out
}

/// Certificates this instance keeps for Domains that no longer need one: removed with
/// them when pruning, kept otherwise.
pub(super) fn prune_certificates(
    desired: &Desired,
    observed: &Observed,
    options: PlanOptions,
) -> Vec<Action> {
    let mut out = Vec::new();
    for domain in observed.certificates.keys() {
        if desired.certificates.contains_key(domain) {
            continue;
        }
        if options.prune {
            let mut a = Action::new(Target::Certificate, domain, Op::Delete);
            a.reasons.push(
                "its Domain is no longer declared with ACME: no longer renewed, certificate \
                 and key removed"
                    .into(),
            );
            a.steps.push(Step::RemoveCertificate {
                domain: domain.clone(),
            });
            a.phase = Phase::Prune;
            out.push(a);
        } else {
            let mut a = Action::new(Target::Certificate, domain, Op::Noop);
            a.reasons
                .push("no longer declared; no longer renewed, kept (pruning is off)".into());
            out.push(a);
        }
    }
    out
}

/// Why a certificate in place cannot serve its Domain.
fn why_unusable(c: &DesiredCertificate, now: u64) -> String {
    match &c.current {
        None => match c.missing.as_deref() {
            None | Some("not issued yet") => String::new(),
            Some(why) => format!(": the one in place is unreadable ({why})"),
        },
        Some(current) if current.not_after <= now => {
            format!(": the one in place expired {}", rfc3339(current.not_after))
        }
        Some(current) => format!(
            ": the one in place covers {}",
            if current.hosts.is_empty() {
                "no host".to_owned()
            } else {
                current.hosts.join(", ")
            }
        ),
    }
}

/// When a valid certificate is renewed, and why then: a point of the CA's renewal
/// window when it suggests one, else the time chosen when it was issued (two thirds of
/// its lifetime, with jitter), else two thirds of its lifetime. The point in a window is fixed by the certificate's serial,
/// so every pass picks the same one.
pub fn renewal_time(c: &DesiredCertificate) -> (u64, &'static str) {
    let Some(current) = &c.current else {
        return (0, "no certificate");
    };
    if let Some(w) = c.window.filter(|w| w.end >= w.start) {
        let span = w.end - w.start;
        let offset = if span == 0 {
            0
        } else {
            crate::state::certs::jitter_seed(&current.serial) % span
        };
        return (w.start + offset, "inside the CA's renewal window");
    }
    // The time chosen when it was issued; a record older than the certificate in place
    // (berth stopped between storing the two) does not count.
    let chosen = c
        .record
        .as_ref()
        .and_then(|r| r.renew_at)
        .filter(|at| *at >= current.not_before);
    (
        chosen.unwrap_or_else(|| current.two_thirds()),
        "two thirds of its lifetime passed",
    )
}

/// Whether a certificate is expiring: its renewal is overdue (due, and not done) and
/// it expires within 14 days, or within a third of its lifetime for short-lived ones.
pub fn expiring(c: &DesiredCertificate, now: u64) -> bool {
    let Some(current) = &c.current else {
        return false;
    };
    let lifetime = current.not_after.saturating_sub(current.not_before);
    let within = (14 * 86_400).min(lifetime / 3);
    now >= renewal_time(c).0 && current.not_after.saturating_sub(now) < within
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::certs::{CertificateInfo, CertificateRecord, RenewalWindow};

    const DAY: u64 = 86_400;
    const T0: u64 = 1_800_000_000;

    fn cert(record: Option<CertificateRecord>) -> DesiredCertificate {
        DesiredCertificate {
            domain: "blog".into(),
            hosts: vec!["blog.example.com".into()],
            file: "/var/lib/berth/certs/blog/certificate.pem".into(),
            current: Some(CertificateInfo {
                hosts: vec!["blog.example.com".into()],
                not_before: T0,
                not_after: T0 + 90 * DAY,
                issuer: "Pebble Intermediate CA".into(),
                serial: "0a1b".into(),
                leaf_der: Vec::new(),
            }),
            missing: None,
            record,
            window: None,
            owner: None,
        }
    }

    fn plan_at(c: DesiredCertificate, now: u64) -> Action {
        let mut desired = Desired::default();
        desired.certificates.insert(c.domain.clone(), c);
        let mut actions = plan_certificates(&desired, PlanOptions { prune: true, now });
        actions.remove(0)
    }

    #[test]
    fn a_valid_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
        let a = plan_at(cert(None), T0 + 59 * DAY);
        assert_eq!(a.op, Op::Noop);
        assert_eq!(
            a.reasons,
            [
                "valid until 2027-04-15T08:00:00Z, issued by Pebble Intermediate CA; renewal \
                 at 2027-03-16T08:00:00Z"
            ]
        );
        let a = plan_at(cert(None), T0 + 60 * DAY);
        assert_eq!(a.op, Op::Update);
        assert_eq!(
            a.reasons,
            [
                "renew certificate for blog.example.com (ACME, HTTP-01): two thirds of its \
                 lifetime passed (expires 2027-04-15T08:00:00Z)"
            ]
        );
        assert_eq!(
            a.steps[0],
            Step::IssueCertificate {
                domain: "blog".into(),
                hosts: vec!["blog.example.com".into()]
            }
        );
    }

    #[test]
    fn a_renewal_time_recorded_for_an_older_certificate_does_not_count() {
        // Stopped between storing the certificate and its record: the record's time is
        // the previous certificate's.
        let stale = CertificateRecord {
            renew_at: Some(T0 - DAY),
            ..CertificateRecord::default()
        };
        assert_eq!(plan_at(cert(Some(stale)), T0 + DAY).op, Op::Noop);
        let chosen = CertificateRecord {
            renew_at: Some(T0 + 55 * DAY),
            ..CertificateRecord::default()
        };
        assert_eq!(plan_at(cert(Some(chosen)), T0 + 55 * DAY).op, Op::Update);
    }

    #[test]
    fn a_renewal_window_moves_the_renewal_and_a_point_in_it_is_stable() {
        let mut c = cert(None);
        c.window = Some(RenewalWindow {
            start: T0 + 10 * DAY,
            end: T0 + 12 * DAY,
        });
        let (at, why) = renewal_time(&c);
        assert_eq!(why, "inside the CA's renewal window");
        assert!((T0 + 10 * DAY..T0 + 12 * DAY).contains(&at), "{at}");
        assert_eq!(renewal_time(&c).0, at);
        assert_eq!(plan_at(c.clone(), at - 1).op, Op::Noop);
        assert_eq!(plan_at(c, at).op, Op::Update);
    }

    #[test]
    fn a_failed_order_waits_for_its_backoff_and_says_why() {
        let record = CertificateRecord {
            instance: "default".into(),
            failures: 2,
            last_attempt: Some(T0 + 60 * DAY),
            next_attempt: Some(T0 + 60 * DAY + 600),
            last_error: Some("connection refused".into()),
            ..CertificateRecord::default()
        };
        let a = plan_at(cert(Some(record.clone())), T0 + 60 * DAY + 599);
        assert_eq!(a.op, Op::Noop);
        assert!(a.waiting);
        assert!(a.steps.is_empty());
        assert!(
            a.reasons[0].ends_with(
                "; waiting: 2 attempts failed, the last with: connection refused; next \
                 attempt at 2027-03-16T08:10:00Z"
            ),
            "{:?}",
            a.reasons
        );
        let a = plan_at(cert(Some(record)), T0 + 60 * DAY + 600);
        assert_eq!(a.op, Op::Update);
    }

    #[test]
    fn a_certificate_is_expiring_once_its_renewal_is_overdue_and_14_days_remain() {
        let c = cert(None);
        // 90 days: renewal at 60; 14 days before expiry is day 76.
        assert!(!expiring(&c, T0 + 75 * DAY));
        assert!(expiring(&c, T0 + 77 * DAY));
        // A renewal that worked moves the renewal time: not expiring, however close.
        let mut renewed = cert(None);
        renewed.record = Some(CertificateRecord {
            renew_at: Some(T0 + 85 * DAY),
            ..CertificateRecord::default()
        });
        assert!(!expiring(&renewed, T0 + 80 * DAY));
        // Short-lived: a third of its lifetime.
        let mut short = cert(None);
        if let Some(cur) = short.current.as_mut() {
            cur.not_after = T0 + 6 * DAY;
        }
        assert!(!expiring(&short, T0 + 3 * DAY));
        assert!(expiring(&short, T0 + 4 * DAY + 1));
    }

    #[test]
    fn a_missing_expired_or_too_narrow_certificate_is_issued() {
        let mut c = cert(None);
        c.current = None;
        c.missing = Some("not issued yet".into());
        let a = plan_at(c, T0);
        assert_eq!(a.op, Op::Create);
        assert_eq!(
            a.reasons,
            ["issue certificate for blog.example.com (ACME, HTTP-01)"]
        );
        let a = plan_at(cert(None), T0 + 91 * DAY);
        assert_eq!(a.op, Op::Update);
        assert_eq!(
            a.reasons,
            [
                "issue certificate for blog.example.com (ACME, HTTP-01): the one in place \
                 expired 2027-04-15T08:00:00Z"
            ]
        );
        let mut c = cert(None);
        c.hosts.push("www.blog.example.com".into());
        let a = plan_at(c, T0);
        assert_eq!(
            a.reasons,
            [
                "issue certificate for blog.example.com, www.blog.example.com (ACME, \
                 HTTP-01): the one in place covers blog.example.com"
            ]
        );
    }
}
