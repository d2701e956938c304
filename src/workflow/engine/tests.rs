//! The engine over a scripted executor and paused time: order, skips, branches,
//! `when: always`, timeouts, retries, the deadline and cancellation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;

/// Each node's behaviour: how long an attempt takes and whether attempts fail
/// (`fails` attempts fail, the next ones succeed).
#[derive(Default)]
struct Script {
    takes: BTreeMap<String, Duration>,
    fails: BTreeMap<String, u32>,
    calls: Mutex<Vec<(String, Duration)>>,
    sent: Mutex<Vec<String>>,
    start: Mutex<Option<Instant>>,
}

impl Script {
    fn takes(mut self, node: &str, secs: u64) -> Script {
        self.takes.insert(node.into(), Duration::from_secs(secs));
        self
    }
    fn fails(mut self, node: &str, attempts: u32) -> Script {
        self.fails.insert(node.into(), attempts);
        self
    }
    fn attempts(&self, node: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == node)
            .count()
    }
}

#[async_trait]
impl Executor for Script {
    async fn run(&self, node: &str, work: &Work, log: &NodeLog) -> Result<Outputs, String> {
        let start = *self.start.lock().unwrap().get_or_insert_with(Instant::now);
        let before = self.attempts(node) as u32;
        self.calls
            .lock()
            .unwrap()
            .push((node.to_owned(), start.elapsed()));
        if let Work::Notify { message, .. } = work {
            self.sent.lock().unwrap().push(message.clone());
        }
        if let Some(d) = self.takes.get(node) {
            tokio::time::sleep(*d).await;
        }
        log.line(&format!("{node} ran"));
        if before < self.fails.get(node).copied().unwrap_or(0) {
            log.set_output("status", Literal::Num(500.0));
            return Err(format!("{node} failed"));
        }
        Ok(BTreeMap::from([("status".to_owned(), Literal::Num(200.0))]))
    }
}

fn spec(yaml: &str) -> WorkflowSpec {
    let value: serde_json::Value = serde_yaml::from_str(yaml).expect("YAML");
    serde_json::from_value(value).expect("a workflow spec")
}

async fn go(spec: &WorkflowSpec, script: Arc<Script>) -> RunResult {
    let (_tx, rx) = watch::channel(false);
    let context = RunContext {
        workflow: "check".into(),
        revision: "3f2a1c0".into(),
        trigger: "manual".into(),
    };
    run(spec, &context, script, &Quiet, rx).await
}

fn outcome<'a>(r: &'a RunResult, node: &str) -> (Outcome, Option<&'a str>) {
    let n = r.nodes.iter().find(|n| n.name == node).expect(node);
    (n.outcome, n.message.as_deref())
}

const EXEC: &str = "action: {exec: {app: web, command: [ok]}}";

#[tokio::test(start_paused = true)]
async fn independent_nodes_run_side_by_side_and_needs_wait() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: a, {EXEC}}}\n- {{name: b, {EXEC}}}\n- {{name: c, needs: [a, b], {EXEC}}}\n"
    ));
    let script = Arc::new(Script::default().takes("a", 2).takes("b", 2));
    let started = Instant::now();
    let r = go(&s, script.clone()).await;
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    // a and b together take 2 s, not 4; c starts after both.
    let calls = script.calls.lock().unwrap().clone();
    let c_at = calls.iter().find(|(n, _)| n == "c").unwrap().1;
    assert_eq!(c_at, Duration::from_secs(2));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(r.nodes[0].log, "a ran\n");
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_need_failed_is_skipped_unless_it_says_always() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: deploy, {EXEC}}}\n- {{name: smoke, needs: [deploy], {EXEC}}}\n- {{name: tell, needs: [smoke], when: always, notify: {{notifier: team, message: 'deploy {{{{deploy.outcome}}}}, smoke {{{{smoke.outcome}}}} at {{{{revision}}}}'}}}}\n"
    ));
    let script = Arc::new(Script::default().fails("deploy", 1));
    let r = go(&s, script.clone()).await;
    assert_eq!(r.outcome, RunOutcome::Failed);
    assert_eq!(
        outcome(&r, "deploy"),
        (Outcome::Failed, Some("deploy failed"))
    );
    assert_eq!(
        outcome(&r, "smoke"),
        (Outcome::Skipped, Some("`deploy` failed"))
    );
    assert_eq!(outcome(&r, "tell").0, Outcome::Succeeded);
    assert_eq!(
        *script.sent.lock().unwrap(),
        ["deploy failed, smoke skipped at 3f2a1c0"]
    );
    // The failed attempt's output is kept.
    assert_eq!(r.nodes[0].output["status"], Literal::Num(500.0));
}

#[tokio::test(start_paused = true)]
async fn a_condition_runs_one_branch_and_the_other_is_recorded_skipped() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: probe, {EXEC}}}\n- name: ok\n  needs: [probe]\n  condition: {{if: 'probe.succeeded && probe.output.status == 200', then: [good], else: [bad]}}\n- {{name: good, notify: {{notifier: team, message: up}}}}\n- {{name: bad, notify: {{notifier: team, message: down}}}}\n- {{name: after, needs: [bad], {EXEC}}}\n"
    ));
    let script = Arc::new(Script::default());
    let r = go(&s, script.clone()).await;
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    assert_eq!(outcome(&r, "ok").0, Outcome::Succeeded);
    assert_eq!(r.nodes[1].output["value"], Literal::Bool(true));
    assert_eq!(outcome(&r, "good").0, Outcome::Succeeded);
    assert_eq!(
        outcome(&r, "bad"),
        (
            Outcome::Skipped,
            Some("condition `ok` did not take its `else` branch")
        )
    );
    assert_eq!(
        outcome(&r, "after"),
        (Outcome::Skipped, Some("`bad` was skipped"))
    );
    assert_eq!(*script.sent.lock().unwrap(), ["up"]);
}

#[tokio::test(start_paused = true)]
async fn a_failure_a_condition_reads_is_handled() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: probe, {EXEC}}}\n- name: check\n  needs: [probe]\n  condition: {{if: probe.failed, then: [undo]}}\n- {{name: undo, rollback: {{app: web}}}}\n"
    ));
    let script = Arc::new(Script::default().fails("probe", 1));
    let r = go(&s, script.clone()).await;
    assert_eq!(outcome(&r, "probe").0, Outcome::Failed);
    assert_eq!(outcome(&r, "undo").0, Outcome::Succeeded);
    assert_eq!(r.outcome, RunOutcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_node_timeout_stops_the_attempt_and_retries_run_the_given_number_of_times() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: slow, timeout: 1s, {EXEC}}}\n- {{name: flaky, retries: 3, retryDelay: 1s, {EXEC}}}\n- {{name: broken, retries: 2, retryDelay: 10s, {EXEC}}}\n"
    ));
    let script = Arc::new(
        Script::default()
            .takes("slow", 60)
            .fails("flaky", 2)
            .fails("broken", 99),
    );
    let started = Instant::now();
    let r = go(&s, script.clone()).await;
    assert_eq!(
        outcome(&r, "slow"),
        (Outcome::TimedOut, Some("stopped after its timeout (1s)"))
    );
    assert_eq!(r.nodes[0].took, Duration::from_secs(1));
    assert_eq!(outcome(&r, "flaky").0, Outcome::Succeeded);
    assert_eq!(script.attempts("flaky"), 3);
    assert_eq!(r.nodes[1].attempts, 3);
    assert_eq!(outcome(&r, "broken").0, Outcome::Failed);
    assert_eq!(script.attempts("broken"), 3);
    // Delays double: 10 s then 20 s.
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(
        r.nodes[2]
            .log
            .contains("attempt 1 failed: broken failed; trying again in 10s")
    );
    assert_eq!(r.outcome, RunOutcome::Failed);
}

#[tokio::test(start_paused = true)]
async fn the_run_deadline_cancels_what_runs_and_what_waits() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\ntimeout: 5s\nnodes:\n- {{name: long, {EXEC}}}\n- {{name: next, needs: [long], {EXEC}}}\n"
    ));
    let script = Arc::new(Script::default().takes("long", 60));
    let started = Instant::now();
    let r = go(&s, script).await;
    assert_eq!(r.outcome, RunOutcome::TimedOut);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        outcome(&r, "long"),
        (Outcome::Cancelled, Some("the run's timeout (5s) passed"))
    );
    assert_eq!(
        outcome(&r, "next"),
        (
            Outcome::Cancelled,
            Some("not started: the run's timeout passed")
        )
    );
}

#[tokio::test(start_paused = true)]
async fn shutting_down_cancels_the_run() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: long, {EXEC}}}\n"
    ));
    let script: Arc<dyn Executor> = Arc::new(Script::default().takes("long", 60));
    let (tx, rx) = watch::channel(false);
    let run =
        tokio::spawn(async move { run(&s, &RunContext::default(), script, &Quiet, rx).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(true).unwrap();
    let r = run.await.unwrap();
    assert_eq!(r.outcome, RunOutcome::Cancelled);
    assert_eq!(r.nodes[0].outcome, Outcome::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn at_most_four_nodes_run_at_once() {
    let nodes: String = (0..8)
        .map(|i| format!("- {{name: n{i}, {EXEC}}}\n"))
        .collect();
    let s = spec(&format!("triggers: [{{on: manual}}]\nnodes:\n{nodes}"));
    let mut script = Script::default();
    for i in 0..8 {
        script = script.takes(&format!("n{i}"), 1);
    }
    let started = Instant::now();
    let r = go(&s, Arc::new(script)).await;
    assert_eq!(r.outcome, RunOutcome::Succeeded);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[test]
fn logs_keep_their_end_and_say_what_was_dropped() {
    let log = NodeLog::default();
    log.append(&"x".repeat(LOG_LIMIT));
    log.append("tail\n");
    let text = log.text();
    assert!(
        text.starts_with("[… 5 earlier bytes dropped]\n"),
        "{}",
        &text[..40]
    );
    assert!(text.ends_with("xtail\n"));
}

#[test]
fn waves_show_the_order_nodes_start_in() {
    let s = spec(&format!(
        "triggers: [{{on: manual}}]\nnodes:\n- {{name: a, {EXEC}}}\n- {{name: b, {EXEC}}}\n- name: c\n  needs: [a]\n  condition: {{if: a.failed, then: [d]}}\n- {{name: d, rollback: {{app: web}}}}\n"
    ));
    assert_eq!(waves(&s), [vec!["a", "b"], vec!["c"], vec!["d"]]);
}
