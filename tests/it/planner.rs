//! Table-driven planner tests: each folder under tests/fixtures/plan/ holds desired
//! manifests, an observed snapshot (observed.json) and the expected plan as berth
//! prints it, followed by the steps apply would run. In observed.json a container's
//! `"hash": "=desired"` and `"spec": "=desired"` stand for the desired app's own.

use std::fmt::Write as _;
use std::fs;

use berth::desired::Desired;
use berth::observe::Observed;
use berth::reconcile::{self, PassOptions};
use berth::state::StateDir;
use berth::{manifest, plan};
use serde_json::Value;

use crate::root;

fn run_case(dir: &std::path::Path) -> String {
    let manifests =
        manifest::load_dir(&dir.join("manifests")).expect("fixture manifests are valid");
    let mut raw: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("observed.json")).unwrap()).unwrap();
    // `"spec": "=desired"` is filled in by `settle`, once the desired state is resolved.
    let mut desired_specs = Vec::new();
    if let Some(containers) = raw.get_mut("containers").and_then(Value::as_array_mut) {
        for (i, c) in containers.iter_mut().enumerate() {
            if c["spec"] == "=desired" {
                c["spec"] = Value::Null;
                desired_specs.push(i);
            }
        }
    }
    // The same for a swarm's services.
    let mut desired_services = Vec::new();
    if let Some(services) = raw
        .pointer_mut("/swarm/services")
        .and_then(Value::as_array_mut)
    {
        for (i, s) in services.iter_mut().enumerate() {
            if s["spec"] == "=desired" {
                s["spec"] = Value::Null;
                desired_services.push(i);
            }
        }
    }
    let state = StateDir::new(dir, "default");
    let options = PassOptions {
        instance: "default".into(),
        apply: false,
        no_prune: false,
    };
    let prepare = || {
        let observed: Observed =
            serde_json::from_value(raw.clone()).expect("observed.json is an Observed");
        reconcile::plan_against(&manifests, "rev1", &state, &options, observed, |d, o| {
            settle(d, o, &desired_specs);
            settle_services(d, o, &desired_services);
        })
        .expect("the fixture plans")
    };
    let prepared = prepare();
    assert!(
        prepared.missing_secrets.is_empty(),
        "fixture secrets exist: {:?}",
        prepared.missing_secrets
    );
    let p = prepared.plan;
    assert_eq!(p, prepare().plan, "planning is deterministic");
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
    // Files berth writes live under the state dir: shown without this machine's path.
    out.replace(&dir.display().to_string(), "<state-dir>")
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

/// Puts the desired apps' own hash and spec where a fixture's container says
/// `"=desired"`, once host ports are resolved (they are part of the spec).
fn settle(desired: &Desired, observed: &mut Observed, desired_specs: &[usize]) {
    for (i, c) in observed.containers.iter_mut().enumerate() {
        let app = desired.apps.get(&c.app);
        if c.hash == "=desired" {
            if let Some(app) = app {
                c.hash = app.hash.clone();
            }
        }
        if desired_specs.contains(&i) {
            c.spec = app.map(|a| a.spec.clone());
        }
    }
}

/// [`settle`] for the services of a swarm (`runtime: swarm` fixtures).
fn settle_services(desired: &Desired, observed: &mut Observed, desired_specs: &[usize]) {
    let Some(swarm) = observed.swarm.as_mut() else {
        return;
    };
    for (i, s) in swarm.services.iter_mut().enumerate() {
        let app = desired.apps.get(&s.app);
        if s.hash == "=desired" {
            if let Some(app) = app {
                s.hash = app.hash.clone();
            }
        }
        if desired_specs.contains(&i) {
            s.spec = app.map(|a| a.spec.clone());
        }
    }
}
