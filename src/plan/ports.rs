//! Host ports for apps the proxy reaches through `127.0.0.1:<port>`: allocated from
//! `Settings.hostPorts`, skipping every port a container publishes and every listening
//! socket, and kept stable (an app keeps the port its container's label records).
//! Pure: the ports in use are observed (observe/ports.rs).

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::model::PortRange;

/// What an app asks of the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wish {
    /// The port it has: kept while it is in range and nobody else has it.
    Keep(u16),
    /// A port none of its containers holds (`avoid`): the new container of a
    /// start-first update, beside the old one.
    Fresh {
        /// The ports its containers hold now.
        avoid: Vec<u16>,
    },
    /// Any free port (a new app).
    Any,
}

/// Allocates a port to each app (sorted, so the result is deterministic). `used` holds
/// ports taken by anything else; a port an app keeps is never given to another, nor is
/// one of the ports an app is moving away from.
pub fn allocate(
    wishes: &BTreeMap<String, Wish>,
    used: &BTreeSet<u16>,
    range: PortRange,
) -> Result<BTreeMap<String, u16>, String> {
    let mut out = BTreeMap::new();
    let mut taken: BTreeSet<u16> = used.clone();
    for (app, wish) in wishes {
        if let Wish::Keep(port) = wish {
            if (range.from..=range.to).contains(port) && !out.values().any(|p| p == port) {
                out.insert(app.clone(), *port);
                taken.insert(*port);
            }
        }
    }
    // Ports being left stay busy until the proxy has switched away from them.
    for wish in wishes.values() {
        match wish {
            Wish::Keep(port) => {
                taken.insert(*port);
            }
            Wish::Fresh { avoid } => taken.extend(avoid),
            Wish::Any => {}
        }
    }
    for app in wishes.keys() {
        if out.contains_key(app) {
            continue;
        }
        let port = (range.from..=range.to)
            .find(|p| !taken.contains(p))
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

    const RANGE: PortRange = PortRange {
        from: 8000,
        to: 8004,
    };

    fn wishes(list: &[(&str, Wish)]) -> BTreeMap<String, Wish> {
        list.iter()
            .map(|(a, w)| ((*a).to_owned(), w.clone()))
            .collect()
    }

    #[test]
    fn ports_are_stable_skip_used_ones_and_run_out_clearly() {
        let used = BTreeSet::from([8000, 8002]);
        let first = allocate(
            &wishes(&[("api", Wish::Any), ("blog", Wish::Any)]),
            &used,
            RANGE,
        )
        .unwrap();
        assert_eq!(
            first,
            BTreeMap::from([("api".into(), 8001), ("blog".into(), 8003)])
        );
        // A new app sorting first does not move the others.
        let again = allocate(
            &wishes(&[
                ("aaa", Wish::Any),
                ("api", Wish::Keep(8001)),
                ("blog", Wish::Keep(8003)),
            ]),
            &used,
            RANGE,
        )
        .unwrap();
        assert_eq!(again["api"], 8001);
        assert_eq!(again["blog"], 8003);
        assert_eq!(again["aaa"], 8004);
        let err = allocate(
            &wishes(&[
                ("a", Wish::Any),
                ("b", Wish::Any),
                ("c", Wish::Any),
                ("d", Wish::Any),
            ]),
            &used,
            RANGE,
        )
        .unwrap_err();
        assert!(
            err.contains("no free host port left in 8000-8004 for app d"),
            "{err}"
        );
    }

    #[test]
    fn a_container_taking_over_gets_a_port_of_its_own_and_the_old_one_stays_busy() {
        // blog's new container must not reuse 8001, which the old one serves on until
        // the proxy switches; nor may a new app take 8001 meanwhile.
        let got = allocate(
            &wishes(&[
                ("aaa", Wish::Any),
                ("blog", Wish::Fresh { avoid: vec![8001] }),
            ]),
            &BTreeSet::new(),
            RANGE,
        )
        .unwrap();
        assert_eq!(got["aaa"], 8000);
        assert_eq!(got["blog"], 8002);
        // Five updates in a row alternate between free ports, never the old one.
        let mut port = 8001;
        for _ in 0..5 {
            let next = allocate(
                &wishes(&[("blog", Wish::Fresh { avoid: vec![port] })]),
                &BTreeSet::new(),
                RANGE,
            )
            .unwrap()["blog"];
            assert_ne!(next, port);
            port = next;
        }
    }
}
