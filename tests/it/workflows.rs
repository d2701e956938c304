//! Workflows against the real daemon and real listeners: `berth workflow run` in process
//! (parallel exec nodes, a node timeout that stops the command, retries, an http check
//! branching to two notify nodes, `when: always`, secrets redacted in logs), and
//! `berth run` starting workflows on their triggers.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{Scenario, docker, image, text};
use crate::listener::Listener;

const SECRET: &str = "s3cr3t-value-4f9a2b";

fn settings(s: &Scenario) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\n\
         spec: {{network: {}-net, workflows: {{allowPrivateTargets: true}}}}\n",
        s.prefix
    )
}

fn notifier(s: &Scenario, listener: &Listener) -> String {
    std::fs::write(
        s.state_path().join("secrets/hook-url"),
        format!("{}/hook", listener.base),
    )
    .unwrap();
    "apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: team}\n\
     spec: {type: webhook, urlSecret: hook-url, events: [WorkflowFailed]}\n"
        .to_owned()
}

/// The summaries the listener received at `/hook`, in order.
fn messages(listener: &Listener) -> Vec<String> {
    listener
        .received()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| r.json()["summary"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// berth with `args`, the scenario's state dir and instance, and nothing else.
fn plain(s: &Scenario, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .args(["--instance", &s.prefix, "--state-dir"])
        .arg(s.state_path())
        .output()
        .unwrap()
}

fn node<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {run:#}"))
}

fn started(n: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(n["started"].as_str().unwrap()).unwrap()
}

#[test]
fn a_workflow_run_by_hand_runs_its_graph_on_the_host() {
    let s = Scenario::new();
    let listener = Listener::start(200);
    s.write("settings.yaml", &settings(&s));
    s.write("team.yaml", &notifier(&s, &listener));
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  secretEnv: {API_TOKEN: api-token}\n",
        ),
    );
    let web = s.name("web");
    s.write(
        "check.yaml",
        &format!(
            r#"apiVersion: berth/v1
kind: Workflow
metadata: {{name: check}}
spec:
  triggers: [{{on: manual}}]
  nodes:
    - {{name: a, action: {{exec: {{app: {web}, command: [sleep, "2"]}}}}}}
    - {{name: b, action: {{exec: {{app: {web}, command: [sleep, "2"]}}}}}}
    - {{name: leak, action: {{exec: {{app: {web}, command: [sh, -c, 'echo the token is $API_TOKEN']}}}}}}
    - {{name: slow, timeout: 1s, action: {{exec: {{app: {web}, command: [sleep, "37"]}}}}}}
    - {{name: flaky, retries: 2, retryDelay: 100ms, action: {{exec: {{app: {web}, command: [sh, -c, 'echo x >> /tries; test $(wc -l < /tries) -ge 3']}}}}}}
    - {{name: probe, needs: [a, b], action: {{http: {{url: "{base}/health", expectStatus: 200}}}}}}
    - name: up
      needs: [probe]
      condition: {{if: 'probe.succeeded && probe.output.status == 200', then: [good], else: [bad]}}
    - {{name: good, notify: {{notifier: team, message: "{{{{workflow}}}} answered {{{{probe.output.status}}}}"}}}}
    - {{name: bad, notify: {{notifier: team, message: "down"}}}}
    - {{name: final, needs: [slow], when: always, notify: {{notifier: team, message: "slow {{{{slow.outcome}}}}"}}}}
"#,
            base = listener.base
        ),
    );
    s.apply();

    // The dry run resolves every node and does nothing.
    let out = s.berth(&["workflow", "run", "check", "--dry-run"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "step 1:\n  a: exec `sleep 2` in app {web} (image {}, container {web}) [timeout 5m]",
            image()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "  probe: GET {}/health (expects 200) [after a, b; timeout 5m]",
            listener.base
        )),
        "{t}"
    );
    assert!(
        t.contains(
            "  up: if `probe.succeeded && probe.output.status == 200` then [good] else [bad]"
        ),
        "{t}"
    );
    assert!(messages(&listener).is_empty());

    let began = Instant::now();
    let out = s.berth(&["workflow", "run", "check", "-o", "json"]);
    let took = began.elapsed();
    let t = text(&out);
    // `slow` timed out and nothing handled it: the run failed.
    assert_eq!(out.status.code(), Some(1), "{t}");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(run["state"], "failed", "{run:#}");
    for name in ["a", "b", "leak", "probe", "up", "good", "final"] {
        assert_eq!(node(&run, name)["state"], "succeeded", "{name}: {run:#}");
    }
    // Two independent 2-second nodes take about 2 s together, not 4.
    let (a, b, probe) = (node(&run, "a"), node(&run, "b"), node(&run, "probe"));
    let apart = (started(a) - started(b)).num_milliseconds().abs();
    assert!(apart < 800, "a and b started {apart} ms apart");
    let wait = (started(probe) - started(a)).num_milliseconds();
    assert!(
        (1900..3500).contains(&wait),
        "probe started {wait} ms after a"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // The timeout stopped the command, in the container too.
    let slow = node(&run, "slow");
    assert_eq!(slow["state"], "timedOut");
    assert_eq!(slow["message"], "stopped after its timeout (1s)");
    std::thread::sleep(Duration::from_millis(500));
    let top = text(&docker(&["top", &format!("{web}-1")]));
    assert!(
        !top.contains("sleep 37"),
        "the timed-out command still runs:\n{top}"
    );
    // Retries: two failures, then success on the third attempt.
    let flaky = node(&run, "flaky");
    assert_eq!(flaky["state"], "succeeded", "{flaky:#}");
    assert_eq!(flaky["attempts"], 3);
    // The right branch ran; the other is recorded skipped.
    assert_eq!(node(&run, "up")["output"]["value"], true);
    let bad = node(&run, "bad");
    assert_eq!(bad["state"], "skipped");
    assert_eq!(
        bad["message"],
        "condition `up` did not take its `else` branch"
    );
    assert_eq!(probe["output"]["status"], 200.0);
    // A secret printed by a command is redacted in the stored log.
    let leak = node(&run, "leak")["log"].as_str().unwrap().to_owned();
    assert!(
        leak.starts_with("the token is <secret:api-token sha256:"),
        "{leak}"
    );
    let stored = std::fs::read_to_string(
        s.state_path()
            .join(format!("workflow-runs-{}.json", s.prefix)),
    )
    .unwrap();
    assert!(!stored.contains(SECRET), "the run record holds the secret");
    assert!(!t.contains(SECRET));
    // The notify nodes' messages, rendered, and the WorkflowFailed the notifier subscribes to.
    let mut got = messages(&listener);
    got.sort();
    assert_eq!(
        got,
        [
            "check answered 200".to_owned(),
            "slow timedOut".to_owned(),
            "workflow check run 1 failed (trigger: manual)".to_owned(),
        ],
        "{:#?}",
        listener.received()
    );

    // The record is there for `berth workflow runs`.
    let out = plain(&s, &["workflow", "runs", "check"]);
    let t = text(&out);
    assert!(t.contains("workflow check run 1 (manual, revision "), "{t}");
    assert!(t.contains("  ✗ slow"), "{t}");
    let path = s.manifests_path().display().to_string();
    let out = plain(&s, &["workflow", "list", &path]);
    let t = text(&out);
    assert!(
        t.contains("check                    10 nodes  on manual"),
        "{t}"
    );
    assert!(t.contains("run 1 failed ("), "{t}");
}

#[test]
fn an_http_action_to_a_private_address_is_refused_unless_the_settings_allow_it() {
    let s = Scenario::new();
    let listener = Listener::start(200);
    s.write(
        "check.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Workflow\nmetadata: {{name: poke}}\nspec:\n  triggers: [{{on: manual}}]\n  nodes:\n    - {{name: daemon, action: {{http: {{url: \"{}/x\"}}}}}}\n",
            listener.base
        ),
    );
    let out = s.berth(&["workflow", "run", "poke", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = node(&run, "daemon")["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("127.0.0.1 is a private or loopback address; set `workflows: {allowPrivateTargets: true}` in the Settings"),
        "{message}"
    );
    assert!(listener.received().is_empty(), "the request was sent");
}

/// GET `path` from the controller with the status token; `Null` while it does not answer.
fn api(c: &crate::run::Controller, path: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{}{path}", c.port))
        .bearer_auth(TOKEN)
        .send()
        .ok()
        .and_then(|r| r.bytes().ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The runs of `workflow` the controller reports, newest first.
fn runs_of(c: &crate::run::Controller, workflow: &str) -> Vec<Value> {
    api(c, &format!("/api/v1/workflows/{workflow}/runs"))["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const TOKEN: &str = "status-token-7c1e";

#[test]
fn berth_run_starts_workflows_on_their_triggers_and_by_a_control_call() {
    let s = Scenario::new();
    let listener = Listener::start(200);
    s.write("settings.yaml", &settings(&s));
    s.write("team.yaml", &notifier(&s, &listener));
    let web = s.name("web");
    let app = |page: &str| {
        s.app(
            "web",
            image(),
            &format!("  port: 80\n  env: {{PAGE: {page}}}\n"),
        )
    };
    s.write("web.yaml", &app("one"));
    s.write(
        "flows.yaml",
        &format!(
            r#"apiVersion: berth/v1
kind: Workflow
metadata: {{name: on-apply}}
spec:
  triggers: [{{on: revisionApplied}}]
  nodes:
    - {{name: probe, action: {{http: {{url: "{base}/applied"}}}}}}
    - {{name: tell, needs: [probe], notify: {{notifier: team, message: "applied {{{{revision}}}}"}}}}
---
apiVersion: berth/v1
kind: Workflow
metadata: {{name: tick}}
spec:
  triggers: [{{on: schedule, cron: "* * * * *"}}]
  nodes:
    - {{name: ok, action: {{exec: {{app: {web}, command: ["true"]}}}}}}
---
apiVersion: berth/v1
kind: Workflow
metadata: {{name: by-hand}}
spec:
  triggers: [{{on: manual}}]
  nodes:
    - {{name: deploy, action: {{deploy: {{app: {web}}}}}}}
    - {{name: page, needs: [deploy], action: {{exec: {{app: {web}, command: [sh, -c, "echo page $PAGE"]}}}}}}
---
apiVersion: berth/v1
kind: Workflow
metadata: {{name: long}}
spec:
  triggers: [{{on: manual}}]
  nodes:
    - {{name: wait, action: {{exec: {{app: {web}, command: [sleep, "41"]}}}}}}
"#,
            base = listener.base
        ),
    );
    let source = s.manifests_path().display().to_string();
    let mut c = crate::run::Controller::start_with(&s, &source, &["--token", TOKEN]);
    crate::run::eventually(&c, 60, "the first revision's workflow runs", || {
        runs_of(&c, "on-apply")
            .first()
            .is_some_and(|r| r["state"] == "succeeded")
    });
    let applied = |l: &Listener| l.received().iter().filter(|r| r.path == "/applied").count();
    assert_eq!(applied(&listener), 1);

    // By hand, through the controller: without the token it is refused and says why.
    let out = s.berth(&["workflow", "run", "by-hand", "--wait"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("starting a workflow there needs its status token"),
        "{t}"
    );
    let anonymous = crate::http::post_json(
        &format!("http://127.0.0.1:{}/api/v1/workflows/by-hand/runs", c.port),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(anonymous.status, 401);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "workflow",
            "run",
            "by-hand",
            "--wait",
            "--instance",
            &s.prefix,
            "--state-dir",
        ])
        .arg(s.state_path())
        .env("BERTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}\n{}", c.log());
    assert!(
        t.contains("workflow by-hand run 1 (manual, revision "),
        "{t}"
    );
    assert!(t.contains("| page one"), "{t}");

    // A new revision: the revisionApplied workflow runs once more, not once per pass.
    s.write("web.yaml", &app("two"));
    crate::run::eventually(&c, 60, "the second revision's workflow runs", || {
        runs_of(&c, "on-apply").len() == 2 && runs_of(&c, "on-apply")[0]["state"] == "succeeded"
    });
    assert!(crate::run::env_of(&web).contains("PAGE=two"));
    let told: Vec<String> = messages(&listener);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|m| m.starts_with("applied ")), "{told:?}");

    // The schedule fires within a minute.
    crate::run::eventually(&c, 75, "the scheduled workflow runs", || {
        runs_of(&c, "tick")
            .first()
            .is_some_and(|r| r["state"] == "succeeded" && r["trigger"] == "schedule * * * * *")
    });
    assert_eq!(applied(&listener), 2, "no pass fired revisionApplied again");

    // A run cut short by a kill is recorded interrupted after a restart, not run again.
    let started = reqwest::blocking::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/workflows/long/runs",
            c.port
        ))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(started.status(), 202);
    crate::run::eventually(&c, 20, "the long run starts its node", || {
        runs_of(&c, "long")
            .first()
            .is_some_and(|r| r["nodes"][0]["state"] == "running")
    });
    let pid = c.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = c.child.wait();
    let c = crate::run::Controller::start_with(&s, &source, &["--token", TOKEN]);
    crate::run::eventually(&c, 30, "the restarted controller answers", || {
        !runs_of(&c, "long").is_empty()
    });
    let long = runs_of(&c, "long");
    assert_eq!(long.len(), 1, "{long:#?}");
    assert_eq!(long[0]["state"], "interrupted");
    assert_eq!(
        long[0]["message"],
        "cut short by a restart of berth; not run again"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs_of(&c, "long").len(), 1);
    assert_eq!(
        runs_of(&c, "on-apply").len(),
        2,
        "a restart is not a new revision"
    );
}

#[test]
fn a_failed_deploy_is_rolled_back_by_a_workflow_and_held_until_the_app_changes() {
    let s = Scenario::new();
    let listener = Listener::start(200);
    s.write("settings.yaml", &settings(&s));
    s.write("team.yaml", &notifier(&s, &listener));
    let web = s.name("web");
    let app = |page: &str, health: &str| {
        s.app(
            "web",
            image(),
            &format!(
                "  port: 80\n  env: {{PAGE: {page}}}\n  health: {{http: {health}, interval: 1s}}\n"
            ),
        )
    };
    s.write("web.yaml", &app("one", "/"));
    s.write(
        "flow.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Workflow\nmetadata: {{name: deploy-check}}\nspec:\n  \
             triggers: [{{on: appFailed, app: {web}}}]\n  nodes:\n    \
             - {{name: undo, rollback: {{app: {web}}}}}\n    \
             - {{name: tell, needs: [undo], notify: {{notifier: team, message: \"{{{{workflow}}}}: {{{{trigger}}}}, rolled back to {{{{undo.output.revision}}}}\"}}}}\n"
        ),
    );
    let source = s.manifests_path().display().to_string();
    let c = crate::run::Controller::start_with(&s, &source, &["--token", TOKEN]);
    crate::run::eventually(&c, 60, "v1 serves", || {
        crate::run::env_of(&web).contains("PAGE=one")
    });
    let v1 = s.inspect(&web)["Id"].clone();
    // The container serves before the pass that made it has finished recording.
    crate::run::eventually(&c, 30, "v1's revision is applied", || {
        api(&c, "/api/v1/status")["revisionApplied"].is_string()
    });
    let rev1 = api(&c, "/api/v1/status")["revisionApplied"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // v2 never gets healthy: appFailed → the workflow rolls back and tells the team once.
    s.write("web.yaml", &app("two", "/missing"));
    crate::run::eventually(&c, 90, "the rollback workflow ran", || {
        runs_of(&c, "deploy-check")
            .first()
            .is_some_and(|r| r["state"] == "succeeded")
    });
    let told = || {
        messages(&listener)
            .into_iter()
            .filter(|m| m.starts_with("deploy-check:"))
            .collect::<Vec<_>>()
    };
    crate::run::eventually(&c, 10, "the message is delivered", || told().len() == 1);
    assert_eq!(
        told(),
        [format!(
            "deploy-check: appFailed {web}, rolled back to {rev1}"
        )]
    );
    assert_eq!(s.inspect(&web)["Id"], v1, "v1 is the container serving");
    assert!(crate::run::env_of(&web).contains("PAGE=one"));

    // Three more passes (revisions that leave the app as it is) keep v1: it is pinned.
    let resource = format!("/api/v1/resources/App/{web}");
    for n in 0..3 {
        let before = api(&c, "/api/v1/status")["revisionApplied"].clone();
        s.write("note.yaml", &format!("# pass {n}\n"));
        crate::run::eventually(&c, 30, "a pass over the new revision", || {
            let now = api(&c, "/api/v1/status")["revisionApplied"].clone();
            now != before && !now.is_null()
        });
    }
    assert_eq!(
        s.inspect(&web)["Id"],
        v1,
        "the held container is left alone"
    );
    let ready = api(&c, &resource)["conditions"][0].clone();
    assert_eq!(ready["reason"], "RolledBack", "{ready:#}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!(
                "rolled back by workflow deploy-check: runs the spec of revision {rev1}"
            )),
        "{ready:#}"
    );
    assert_eq!(told().len(), 1, "the failure was told once");
    assert_eq!(runs_of(&c, "deploy-check").len(), 1, "one run per failure");

    // A revision that changes the app releases the pin and deploys it.
    s.write("web.yaml", &app("three", "/"));
    crate::run::eventually(&c, 60, "the changed app deploys", || {
        crate::run::env_of(&web).contains("PAGE=three")
    });
    crate::run::eventually(&c, 20, "the app is ready as declared", || {
        api(&c, &resource)["conditions"][0]["status"] == true
    });
}
