//! The order apps are applied in: dependency rounds, each after the one it depends on.

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::Desired;

/// Groups apps into rounds: round 0 depends on no app, round N only on earlier rounds.
/// Within a round apps are sorted by name and may run concurrently. Dependencies on
/// things that are not apps (databases) do not order apps here. Validation refuses
/// cycles; should one slip through, its apps form a last round rather than vanish.
pub fn rounds(desired: &Desired) -> Vec<Vec<String>> {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = desired
        .apps
        .values()
        .map(|a| {
            let deps = a
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| desired.apps.contains_key(*d) && *d != a.name)
                .collect();
            (a.name.as_str(), deps)
        })
        .collect();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(name, _)| *name)
            .collect();
        if ready.is_empty() {
            out.push(remaining.keys().map(|n| (*n).to_owned()).collect());
            break;
        }
        for name in &ready {
            remaining.remove(name);
        }
        for deps in remaining.values_mut() {
            for name in &ready {
                deps.remove(name);
            }
        }
        out.push(ready.into_iter().map(str::to_owned).collect());
    }
    out
}
