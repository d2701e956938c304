//! `berth rollback` against the real daemon: an app goes back to the spec it ran
//! before its last deployment and stays there through later passes, until a revision
//! changes its declared spec or `--release`; the spec history is capped and holds no
//! secret value; `berth run` reports the held app as `RolledBack`.

use std::fs;

use serde_json::Value;

use crate::docker::{Scenario, docker, image, text};
use crate::run::{Controller, env_of, eventually};

/// The app's manifest: the test image with `VERSION` in its env and a secret.
fn web(s: &Scenario, version: &str) -> String {
    s.app(
        "web",
        image(),
        &format!("  env: {{VERSION: {version}}}\n  secretEnv: {{TOKEN: api-token}}\n"),
    )
}

fn container_id(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn history(s: &Scenario) -> Value {
    let path = s.state_path().join(format!("history-{}.json", s.prefix));
    serde_json::from_str(&fs::read_to_string(path).unwrap_or_else(|_| "{}".into())).unwrap()
}

fn pins(s: &Scenario) -> Value {
    let path = s.state_path().join(format!("pins-{}.json", s.prefix));
    serde_json::from_str(&fs::read_to_string(path).unwrap_or_else(|_| "{}".into())).unwrap()
}

/// The revisions in the app's history, oldest first.
fn revisions(s: &Scenario, app: &str) -> Vec<String> {
    history(s)[app]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["revision"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_rollback_holds_until_the_declared_spec_changes_or_is_released() {
    let s = Scenario::new();
    let name = s.name("web");
    s.write("web.yaml", &web(&s, "one"));
    s.apply();

    // One deployment only: there is nothing to go back to.
    let out = s.berth(&["rollback", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "error: app {name} has no earlier deployment to roll back to (berth keeps the last \
             10 applied specs per app)"
        )),
        "{}",
        text(&out)
    );

    s.write("web.yaml", &web(&s, "two"));
    s.apply();
    assert!(env_of(&name).contains("VERSION=two"));
    let [rev1, rev2] = <[String; 2]>::try_from(revisions(&s, &name)).unwrap();
    assert_ne!(rev1, rev2);

    // A dry run shows the rollback and changes nothing.
    let out = s.berth(&["rollback", &name, "--dry-run", "--color", "never"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "~ update app {name}: rolled back to {rev1} by berth rollback; env VERSION changed"
        )),
        "{t}"
    );
    assert!(env_of(&name).contains("VERSION=two"));
    assert_eq!(pins(&s), serde_json::json!({}));

    // An unknown revision names the ones there are.
    let out = s.berth(&["rollback", &name, "--to", "ffff"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "error: app {name} was never deployed at a revision ffff…; the revisions it ran: \
             {rev2}, {rev1}"
        )),
        "{}",
        text(&out)
    );

    let out = s.berth(&["rollback", &name, "--color", "never"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "Rolled back app {name} to revision {rev1}: it stays there until a revision changes \
             its declared spec, or `berth rollback --release {name}`."
        )),
        "{t}"
    );
    assert!(env_of(&name).contains("VERSION=one"), "{}", env_of(&name));
    assert_eq!(pins(&s)[&name]["held"]["revision"], rev1.as_str());
    assert_eq!(pins(&s)[&name]["by"], "hand");

    // Later passes leave the held container alone, and say why.
    let held = container_id(&name);
    for _ in 0..3 {
        let t = s.apply();
        assert!(
            t.contains(&format!(
                "\n  = hold app {name} at {rev1} (rolled back by berth rollback)\n"
            )),
            "{t}"
        );
        assert!(t.contains("the host is in sync"), "{t}");
        assert_eq!(container_id(&name), held);
    }
    let (code, t) = s.dry_run();
    assert_eq!(code, Some(0), "a held app is no pending change: {t}");

    // A revision that changes the app releases the pin and deploys it.
    s.write("web.yaml", &web(&s, "three"));
    let t = s.apply();
    assert!(
        t.contains(&format!(
            "~ update app {name}: pin released: the declared spec changed; env VERSION changed"
        )),
        "{t}"
    );
    assert!(env_of(&name).contains("VERSION=three"));
    assert_eq!(pins(&s), serde_json::json!({}));

    // Back again (to what ran before "three"), then released by hand.
    let out = s.berth(&["rollback", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env_of(&name).contains("VERSION=one"));
    let out = s.berth(&["rollback", "--release", &name, "--color", "never"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "~ update app {name}: pin released by berth rollback --release; env VERSION changed"
        )),
        "{t}"
    );
    assert!(t.contains(&format!("Released app {name}: it runs its declared spec.")));
    assert!(env_of(&name).contains("VERSION=three"));
    assert_eq!(pins(&s), serde_json::json!({}));
    let out = s.berth(&["rollback", "--release", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "error: app {name} is not pinned: there is no rollback to release"
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn the_history_keeps_ten_specs_per_app_and_never_a_secret_value() {
    let s = Scenario::new();
    let name = s.name("web");
    let secret = fs::read_to_string(s.state_path().join("secrets/api-token")).unwrap();
    let mut seen = Vec::new();
    for n in 0..12 {
        s.write("web.yaml", &web(&s, &format!("v{n}")));
        s.apply();
        seen.push(revisions(&s, &name).last().cloned().unwrap());
    }
    // A pass that deploys nothing adds nothing.
    s.apply();
    assert_eq!(revisions(&s, &name), seen[2..]);
    let file =
        fs::read_to_string(s.state_path().join(format!("history-{}.json", s.prefix))).unwrap();
    assert!(
        !file.contains(secret.trim()),
        "the history holds a secret:\n{file}"
    );
    let entry = &history(&s)[&name][9];
    assert!(
        entry["spec"]["secretEnv"]["TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("<secret:api-token sha256:"),
        "{entry}"
    );
    assert_eq!(entry["secrets"]["TOKEN"], "api-token");
    assert_eq!(entry["spec"]["env"]["VERSION"], "v11");

    // Rolled back, the secret comes back from the store, not from the history.
    let out = s.berth(&["rollback", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let env = env_of(&name);
    assert!(env.contains("VERSION=v10"), "{env}");
    assert!(env.contains(&format!("TOKEN={}", secret.trim())), "{env}");
    let pins = fs::read_to_string(s.state_path().join(format!("pins-{}.json", s.prefix))).unwrap();
    assert!(
        !pins.contains(secret.trim()),
        "the pins hold a secret:\n{pins}"
    );
}

#[test]
fn the_controller_keeps_a_rolled_back_app_and_reports_it_rolled_back() {
    let s = Scenario::new();
    let name = s.name("web");
    s.write("web.yaml", &web(&s, "one"));
    let c = Controller::start_with(&s, &s.manifests_path().display().to_string(), &[]);
    eventually(&c, 40, "v1 runs", || env_of(&name).contains("VERSION=one"));
    s.write("web.yaml", &web(&s, "two"));
    eventually(&c, 40, "v2 runs", || env_of(&name).contains("VERSION=two"));
    eventually(&c, 10, "v2 is recorded", || revisions(&s, &name).len() == 2);
    let rev1 = revisions(&s, &name)[0].clone();

    let out = s.berth(&["rollback", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(env_of(&name).contains("VERSION=one"));
    let held = container_id(&name);

    // A new revision that leaves the app as it is keeps the hold.
    s.write("web.yaml", &format!("# reviewed\n{}", web(&s, "two")));
    let resource = format!("/api/v1/resources/App/{name}");
    eventually(&c, 20, "the status says the app is rolled back", || {
        c.api(&resource)["conditions"][0]["reason"] == "RolledBack"
    });
    let ready = &c.api(&resource)["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], false);
    let revision = c.api("/api/v1/status")["revisionApplied"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ready["message"],
        format!(
            "rolled back by berth rollback: runs the spec of revision {rev1}, not the one \
             revision {revision} declares; a revision that changes app {name} releases it, or \
             `berth rollback --release {name}`"
        )
    );
    let plan = c.api("/api/v1/plan");
    let action = plan["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == name.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(action["op"], "noop", "{plan}");
    assert_eq!(
        action["reasons"][0],
        format!("hold at {rev1} (rolled back by berth rollback)")
    );
    assert_eq!(
        container_id(&name),
        held,
        "the held container is left alone"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["status", "--url", &format!("http://127.0.0.1:{}", c.port)])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains(&format!("App/{name}")) && t.contains("rolled back by berth rollback"),
        "{t}"
    );
}
