//! Host ports for apps the proxy reaches through `127.0.0.1:<port>`: allocated from
//! `Settings.hostPorts`, skipping every port a container publishes and every listening
//! socket, and kept stable (an app keeps the port its container's label records).
//! Pure: the ports in use are observed (observe/ports.rs).

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::model::PortRange;

/// Allocates a port to each app in `apps` (sorted, so the result is deterministic).
///
/// `current` holds the ports apps have now (from their containers' labels): an app
/// keeps its port while it is in range. `used` holds ports taken by anything else.
pub fn allocate(
    apps: &BTreeSet<String>,
    current: &BTreeMap<String, u16>,
    used: &BTreeSet<u16>,
    range: PortRange,
) -> Result<BTreeMap<String, u16>, String> {
    let mut out = BTreeMap::new();
    let mut taken: BTreeSet<u16> = used.clone();
    for app in apps {
        if let Some(&port) = current.get(app) {
            if (range.from..=range.to).contains(&port) && out.values().all(|p| *p != port) {
                out.insert(app.clone(), port);
                taken.insert(port);
            }
        }
    }
    // The current ports of apps that keep them are not free for others, even when a
    // listening socket (their own container's) shows them as used.
    for app in apps {
        if out.contains_key(app) {
            continue;
        }
        let port = (range.from..=range.to)
            .find(|p| !taken.contains(p) && !current.values().any(|c| c == p))
            .ok_or_else(|| {
                format!(
                    "no free host port left in {}-{} for app {app}: widen Settings hostPorts",
                    range.from, range.to
                )
            })?;
        taken.insert(port);
        out.insert(app.clone(), port);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(apps: &[&str]) -> BTreeSet<String> {
        apps.iter().map(|a| (*a).to_owned()).collect()
    }

    const RANGE: PortRange = PortRange {
        from: 8000,
        to: 8004,
    };

    #[test]
    fn ports_are_stable_skip_used_ones_and_run_out_clearly() {
        let used = BTreeSet::from([8000, 8002]);
        let first = allocate(&set(&["api", "blog"]), &BTreeMap::new(), &used, RANGE).unwrap();
        assert_eq!(
            first,
            BTreeMap::from([("api".into(), 8001), ("blog".into(), 8003)])
        );
        // A new app sorting first does not move the others.
        let again = allocate(&set(&["aaa", "api", "blog"]), &first, &used, RANGE).unwrap();
        assert_eq!(again["api"], 8001);
        assert_eq!(again["blog"], 8003);
        assert_eq!(again["aaa"], 8004);
        let err =
            allocate(&set(&["a", "b", "c", "d"]), &BTreeMap::new(), &used, RANGE).unwrap_err();
        assert!(
            err.contains("no free host port left in 8000-8004 for app d"),
            "{err}"
        );
    }
}
