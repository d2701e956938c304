//! The checks of a Notifier: its secrets, events listed once, the repeat interval.

use std::collections::BTreeSet;

use super::Report;
use crate::manifest::model::{NotifierSpec, NotifierType};
use crate::manifest::syntax;

/// Checks a Notifier spec.
pub(super) fn check_notifier(report: &mut Report, doc: usize, n: &NotifierSpec) {
    report.check(doc, "/spec/urlSecret", syntax::check_name(&n.url_secret));
    if let Some(s) = &n.signing_secret {
        if n.kind != NotifierType::Webhook {
            report.at(
                doc,
                "/spec/signingSecret",
                "`signingSecret` is only for `type: webhook`",
            );
        }
        report.check(doc, "/spec/signingSecret", syntax::check_name(s));
    }
    let mut seen = BTreeSet::new();
    for (i, e) in n.events.iter().enumerate() {
        if !seen.insert(e) {
            report.at(
                doc,
                &format!("/spec/events/{i}"),
                format!("event `{e:?}` is listed twice"),
            );
        }
    }
    if n.repeat_after.get().as_secs() < 60 {
        report.at(doc, "/spec/repeatAfter", "repeatAfter must be at least 1m");
    }
}
