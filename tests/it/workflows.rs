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
    assert!(t.contains("step 1:\n  a: exec `sleep 2` in app "), "{t}");
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
            format!("workflow check run 1 failed (trigger: manual)"),
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
