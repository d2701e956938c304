//! Table-driven planner tests: each folder under tests/fixtures/plan/ holds desired
//! manifests, an observed snapshot (observed.json) and the expected plan as berth
//! prints it, followed by the steps apply would run. In observed.json a container's
//! `"hash": "=desired"` and `"spec": "=desired"` stand for the desired app's own.

use std::fmt::Write as _;
use std::fs;

use berth::observe::Observed;
use berth::plan::{self, PlanOptions};
use berth::state::secrets::SecretStore;
use berth::{desired, manifest};
use serde_json::Value;

use crate::root;

fn run_case(dir: &std::path::Path) -> String {
    let manifests =
        manifest::load_dir(&dir.join("manifests")).expect("fixture manifests are valid");
    let store = SecretStore::new(dir);
    let desired = desired::build(&manifests, &store, "rev1").expect("fixture secrets exist");
    let mut raw: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("observed.json")).unwrap()).unwrap();
    if let Some(containers) = raw.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers {
            let app = c["app"].as_str().unwrap().to_owned();
            if let Some(d) = desired.apps.get(&app) {
                if c["hash"] == "=desired" {
                    c["hash"] = d.hash.clone().into();
                }
                if c["spec"] == "=desired" {
                    c["spec"] = serde_json::to_value(&d.spec).unwrap();
                }
            } else if c["spec"] == "=desired" {
                c["spec"] = Value::Null;
            }
        }
    }
    let observed: Observed = serde_json::from_value(raw).expect("observed.json is an Observed");
    let prune = manifests.settings().prune;
    let p = plan::plan(&desired, &observed, PlanOptions { prune });
    let again = plan::plan(&desired, &observed, PlanOptions { prune });
    assert_eq!(p, again, "planning is deterministic");
    let mut out = plan::render_text(&p, false);
    out.push_str("\nsteps:\n");
    for a in &p.actions {
        for s in &a.steps {
            let _ = writeln!(
                out,
                "  {} {} (round {}): {}",
                a.target,
                a.name,
                a.round,
                serde_json::to_string(s).unwrap()
            );
        }
    }
    out
}

#[test]
fn every_fixture_plans_as_expected() {
    let base = root().join("tests/fixtures/plan");
    let mut cases: Vec<_> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10);
    let bless = std::env::var_os("BERTH_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let got = run_case(&case);
        let path = case.join("expected.txt");
        if bless {
            fs::write(&path, &got).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
