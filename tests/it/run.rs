//! `berth run` with a directory source against the real daemon: a change converges,
//! an invalid revision applies nothing, a container removed by hand is repaired
//! without waiting for the resync timer (also while the newest revision is invalid),
//! SIGTERM stops it cleanly.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::{Scenario, docker, image};

pub struct Controller {
    pub child: Child,
    log: std::path::PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Controller {
    fn start(s: &Scenario) -> Controller {
        let source = s.manifests_path().display().to_string();
        Controller::start_with(s, &source, &[])
    }

    /// `berth run --source <source> <extra…>` for the scenario's instance and state.
    pub fn start_with(s: &Scenario, source: &str, extra: &[&str]) -> Controller {
        Controller::start_with_env(s, source, extra, &[])
    }

    /// The same, with more environment variables.
    pub fn start_with_env(
        s: &Scenario,
        source: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Controller {
        Controller::spawn(source, s.state_path(), &s.prefix, extra, env)
    }

    /// `berth run --source <source> <extra…>` for instance `instance` in `state`.
    pub fn spawn(
        source: &str,
        state: &std::path::Path,
        instance: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.log");
        let port = crate::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["run", "--source", source])
            .args(extra)
            .arg("--state-dir")
            .arg(state)
            .args(["--instance", instance, "--ready-timeout", "20"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "berth=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("berth run starts");
        Controller {
            child,
            log,
            port,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status endpoint's JSON at `path` (null while the controller does not answer).
    pub fn api(&self, path: &str) -> serde_json::Value {
        crate::http::get(&format!("http://127.0.0.1:{}{path}", self.port), None)
            .ok()
            .and_then(|reply| serde_json::from_str(&reply.body).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `secs` for `check`; panics with `what` and the controller's log.
pub fn eventually(c: &Controller, secs: u64, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} within {secs}s; berth run said:\n{}", c.log());
}

pub fn env_of(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{json .Config.Env}}", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn running(name: &str) -> bool {
    let out = docker(&["inspect", "-f", "{{.State.Running}}", name]);
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

#[test]
fn the_controller_converges_changes_stalls_on_bad_ones_and_repairs_drift() {
    let s = Scenario::new();
    let web = s.name("web");
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: one}\n"),
    );
    let mut c = Controller::start(&s);
    eventually(&c, 40, "the app runs", || running(&web));
    eventually(&c, 10, "the status shows the app ready", || {
        let r = c.api(&format!("/api/v1/resources/App/{web}"));
        r["conditions"][0]["type"] == "Ready" && r["conditions"][0]["status"] == true
    });
    // A resource is reported ready as the pass goes; the revision once it is over.
    eventually(&c, 10, "the status shows the revision applied", || {
        c.api("/api/v1/status")["revisionApplied"].is_string()
    });
    let status = c.api("/api/v1/status");
    let applied = status["revisionApplied"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(applied.len(), 12, "{status}");
    // `berth status` shows the same in a terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["status", "--url", &format!("http://127.0.0.1:{}", c.port)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("revision applied {applied}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("App/{web}")) && text.contains("  yes  "),
        "{text}"
    );

    // A change to a file converges.
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: two}\n"),
    );
    eventually(&c, 40, "the new env is live", || {
        env_of(&web).contains("PAGE=two")
    });

    // An invalid revision: nothing of it is applied, the last good one stays live.
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  env: {PAGE: three}\n  imgae: typo\n",
        ),
    );
    eventually(&c, 20, "the invalid revision is reported", || {
        c.log().contains("revision is invalid")
    });
    assert!(
        c.log()
            .contains("unknown field `imgae`; did you mean `image`?"),
        "{}",
        c.log()
    );
    assert!(env_of(&web).contains("PAGE=two"));
    assert!(running(&web));
    let status = c.api("/api/v1/status");
    assert_ne!(
        status["revisionObserved"], status["revisionApplied"],
        "{status}"
    );
    let failures: Vec<_> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "SyncFailed")
        .collect();
    assert_eq!(failures.len(), 1, "one SyncFailed event: {status}");
    assert!(
        failures[0]["message"].as_str().unwrap().contains("imgae"),
        "{status}"
    );
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: four}\n"),
    );
    eventually(&c, 40, "the fixed revision is live", || {
        env_of(&web).contains("PAGE=four")
    });

    // Removed by hand: repaired at once, long before the 5 minute resync.
    assert!(docker(&["rm", "-f", &web]).status.success());
    eventually(&c, 30, "the container is repaired", || running(&web));

    // SIGTERM stops it cleanly.
    let pid = c.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = c.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth run did not stop:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", c.log());
    assert!(c.log().contains("stopped"), "{}", c.log());
}

/// The names of the scenario's containers, sorted.
fn containers_of(s: &Scenario) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=berth.instance={}", s.prefix),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn kill_9(c: &mut Controller) {
    let pid = c.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = c.child.wait();
}

#[test]
fn killed_mid_pass_the_controller_converges_without_duplicates_or_orphans() {
    let s = Scenario::new();
    let apps = ["a", "b", "c", "d", "e"];
    let write_all = |page: &str| {
        for a in apps {
            s.write(
                &format!("{a}.yaml"),
                &s.app(
                    a,
                    image(),
                    &format!("  port: 80\n  env: {{PAGE: {page}}}\n"),
                ),
            );
        }
    };
    let mut want: Vec<String> = apps.iter().map(|a| s.name(a)).collect();
    want.sort();
    let source = s.manifests_path().display().to_string();
    let serial = ["--concurrency", "1"];

    // Killed while creating: some containers exist, not all.
    write_all("one");
    let mut c = Controller::start_with(&s, &source, &serial);
    eventually(&c, 40, "the first container is created", || {
        !containers_of(&s).is_empty()
    });
    kill_9(&mut c);
    let partial = containers_of(&s);
    assert!(partial.len() < apps.len(), "killed too late: {partial:?}");
    let c = Controller::start_with(&s, &source, &serial);
    eventually(&c, 60, "every app runs after the restart", || {
        want.iter().all(|n| running(n))
    });
    assert_eq!(containers_of(&s), want, "{}", c.log());
    drop(c);

    // Killed while updating start-first (a new container beside each old one).
    write_all("two");
    let mut c = Controller::start_with(&s, &source, &serial);
    eventually(&c, 40, "the update is under way", || {
        containers_of(&s).len() > apps.len() || want.iter().any(|n| env_of(n).contains("PAGE=two"))
    });
    kill_9(&mut c);
    let c = Controller::start_with(&s, &source, &serial);
    eventually(&c, 60, "every app runs the new env", || {
        want.iter()
            .all(|n| running(n) && env_of(n).contains("PAGE=two"))
            && containers_of(&s) == want
    });
    assert_eq!(containers_of(&s), want, "{}", c.log());
}

/// `docker rm -f` of an app stayed unrepaired through three resyncs while the newest
/// revision was invalid: the last good revision is kept converged, and the source
/// stays Stalled on the invalid one.
#[test]
fn drift_is_repaired_while_the_revision_is_invalid() {
    let s = Scenario::new();
    let web = s.name("web");
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: one}\n"),
    );
    let c = Controller::start(&s);
    eventually(&c, 40, "the app runs", || running(&web));
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  env: {PAGE: two}\n  imgae: typo\n",
        ),
    );
    eventually(&c, 20, "the invalid revision is reported", || {
        c.log().contains("revision is invalid")
    });
    let stalled = |status: &serde_json::Value| {
        status["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Stalled"
                    && c["status"] == true
                    && c["message"].as_str().is_some_and(|m| m.contains("imgae"))
            })
        })
    };
    eventually(&c, 10, "the source is Stalled", || {
        stalled(&c.api("/api/v1/status"))
    });

    assert!(docker(&["rm", "-f", &web]).status.success());
    let removed = Instant::now();
    eventually(&c, 15, "the container is back", || running(&web));
    let took = removed.elapsed();
    assert!(took < Duration::from_secs(15), "back after {took:?}");
    // The last good revision's container, and the source still Stalled on the new one.
    assert!(env_of(&web).contains("PAGE=one"), "{}", env_of(&web));
    let status = c.api("/api/v1/status");
    assert!(stalled(&status), "{status}");
    assert_ne!(
        status["revisionObserved"], status["revisionApplied"],
        "{status}"
    );
    eprintln!("repaired {took:?} after docker rm -f while the revision is invalid");
}
