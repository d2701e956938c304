//! One writer per instance, and instances side by side: concurrent `berth apply` of
//! one instance against a real nginx, two instances sharing an nginx config
//! directory and a state directory, and the instance lock as a user meets it.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::docker::{Scenario, docker, image, text};
use crate::nginx::{Nginx, domain, with_nginx};

/// `berth apply` of the manifests in `dir` as the instance of `s`, on `state`.
fn apply_cmd(s: &Scenario, dir: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("apply")
        .arg(dir)
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--instance", &s.prefix, "--ready-timeout", "30"])
        .args(extra)
        .env_remove("RUST_LOG");
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("berth runs")
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs")
}

/// The live config passes `nginx -t`.
fn assert_live_config_passes(nginx: &Nginx) {
    let out = Command::new("nginx")
        .arg("-t")
        .args(nginx.args())
        .output()
        .unwrap();
    assert!(out.status.success(), "nginx -t: {}", text(&out));
}

/// Waits until every host of `hosts` answers with `X-Revision: <revision>`.
fn assert_serves(nginx: &Nginx, hosts: &[String], revision: &str) {
    for host in hosts {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = nginx.get(host, "/", 200);
            let served = r.headers.get("x-revision").and_then(|v| v.to_str().ok());
            if r.status == 200 && served == Some(revision) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host} does not serve revision {revision}: {} {served:?}\n{}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const DOMAINS: usize = 12;

/// Two revisions of one instance: the same app behind 12 domains whose response
/// header differs. Returns the folders and the hosts.
fn two_revisions(s: &Scenario, nginx: &Nginx) -> ([tempfile::TempDir; 2], Vec<String>) {
    let web = s.name("web");
    let hosts: Vec<String> = (0..DOMAINS)
        .map(|i| format!("h{i}.{}.test", s.prefix))
        .collect();
    let folders = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // One Settings for both (each call picks another host-port range).
    let settings = nginx.settings(&format!("{}-net", s.prefix));
    for (folder, revision) in folders.iter().zip(["a", "b"]) {
        let write =
            |name: &str, content: &str| fs::write(folder.path().join(name), content).unwrap();
        write("settings.yaml", &settings);
        write("web.yaml", &s.app("web", image(), "  port: 80\n"));
        for (i, host) in hosts.iter().enumerate() {
            write(
                &format!("d{i}.yaml"),
                &domain(
                    &format!("{web}-d{i}"),
                    &web,
                    &format!("  hosts: [{host}]\n  headers: {{X-Revision: {revision}}}\n"),
                ),
            );
        }
    }
    (folders, hosts)
}

/// Starts `revisions` at once and waits for them all: (revision, output, when it ended).
fn concurrently(
    s: &Scenario,
    folders: &[tempfile::TempDir; 2],
    revisions: &[usize],
) -> Vec<(usize, Output, Instant)> {
    let children: Vec<(usize, Child)> = revisions
        .iter()
        .map(|&r| {
            let cmd = apply_cmd(s, folders[r].path(), s.state_path(), &[]);
            (r, spawn(cmd))
        })
        .collect();
    let waiters: Vec<_> = children
        .into_iter()
        .map(|(r, child)| {
            std::thread::spawn(move || {
                let out = child.wait_with_output().unwrap();
                (r, out, Instant::now())
            })
        })
        .collect();
    waiters.into_iter().map(|w| w.join().unwrap()).collect()
}

/// The case: applies of one instance running at once used to stage in the
/// same folder, remove it under each other and let a rejected config go live. Ten
/// trials of two concurrent applies of different revisions, then ten applies at
/// once: every apply succeeds, the live config passes `nginx -t`, no staging folder
/// is left, and nginx serves the revision of the apply that finished last.
#[test]
fn concurrent_applies_of_one_instance_take_turns_and_the_last_one_wins() {
    let (nginx, s) = with_nginx();
    let (folders, hosts) = two_revisions(&s, &nginx);
    let out = run(apply_cmd(&s, folders[0].path(), s.state_path(), &[]));
    assert!(out.status.success(), "first apply: {}", text(&out));
    assert_serves(&nginx, &hosts, "a");

    let names = ["a", "b"];
    let mut trials: Vec<Vec<usize>> = (0..10).map(|t| vec![t % 2, 1 - t % 2]).collect();
    trials.push((0..10).map(|i| i % 2).collect());
    let mut waits = 0;
    for (trial, revisions) in trials.iter().enumerate() {
        let results = concurrently(&s, &folders, revisions);
        for (r, out, _) in &results {
            assert!(
                out.status.success(),
                "trial {trial}: the apply of revision {} failed:\n{}",
                names[*r],
                text(out)
            );
        }
        assert_live_config_passes(&nginx);
        let files = nginx.files();
        assert_eq!(files.len(), DOMAINS, "trial {trial}: {files:?}");
        assert!(files.iter().all(|f| f.starts_with("berth-")), "{files:?}");
        let (last, _, _) = results.iter().max_by_key(|(_, _, at)| *at).unwrap();
        assert_serves(&nginx, &hosts, names[*last]);
        waits += results
            .iter()
            .filter(|(_, out, _)| {
                String::from_utf8_lossy(&out.stderr).contains("waiting for the lock")
            })
            .count();
    }
    // They did run at once: an apply that finds nothing to change may be done before
    // its partner asks for the lock, but one that rewrites 12 domains holds it long
    // enough to be waited for.
    assert!(waits >= 3, "only {waits} applies waited for another");
}

/// Two instances on one nginx config directory and one state directory: each owns
/// its own files, containers and records and never touches the other's.
#[test]
fn two_instances_share_a_proxy_and_a_state_dir_without_touching_each_other() {
    let (nginx, a) = with_nginx();
    let b = Scenario::new();
    b.write(
        "settings.yaml",
        &nginx.settings(&format!("{}-net", b.prefix)),
    );
    let state = a.state_path();
    let (a_web, b_web) = (a.name("web"), b.name("web"));
    a.write(
        "web.yaml",
        &a.app("web", image(), "  port: 80\n  env: {PAGE: a}\n"),
    );
    a.write(
        "domain.yaml",
        &domain(&a_web, &a_web, &format!("  hosts: [{}.test]\n", a.prefix)),
    );
    b.write(
        "web.yaml",
        &b.app("web", image(), "  port: 80\n  env: {PAGE: b}\n"),
    );
    b.write(
        "domain.yaml",
        &domain(&b_web, &b_web, &format!("  hosts: [{}.test]\n", b.prefix)),
    );
    // A file of an earlier berth (its header names no instance), declared by no one.
    let legacy = nginx
        .conf()
        .with_file_name("conf.d")
        .join("berth-legacy.conf");
    fs::write(
        &legacy,
        "# berth: Domain/legacy sha256:0011223344556677 (managed by berth: edits are reverted)\n",
    )
    .unwrap();

    let apply = |s: &Scenario| run(apply_cmd(s, s.manifests_path(), state, &[]));
    for s in [&a, &b] {
        let out = apply(s);
        assert!(out.status.success(), "{}: {}", s.prefix, text(&out));
    }
    let a_file = nginx
        .conf()
        .with_file_name("conf.d")
        .join(format!("berth-{a_web}.conf"));
    let b_file = nginx
        .conf()
        .with_file_name("conf.d")
        .join(format!("berth-{b_web}.conf"));
    let a_text = fs::read_to_string(&a_file).unwrap();
    let b_text = fs::read_to_string(&b_file).unwrap();
    assert!(
        a_text
            .lines()
            .next()
            .unwrap()
            .contains(&format!(" instance:{} ", a.prefix))
    );
    assert!(
        b_text
            .lines()
            .next()
            .unwrap()
            .contains(&format!(" instance:{} ", b.prefix))
    );
    assert_eq!(
        nginx.get(&format!("{}.test", a.prefix), "/", 200).status,
        200
    );
    assert_eq!(
        nginx.get(&format!("{}.test", b.prefix), "/", 200).status,
        200
    );

    // Each is in sync: neither plans to rewrite or prune the other's file.
    for s in [&a, &b] {
        let out = run(apply_cmd(
            s,
            s.manifests_path(),
            state,
            &["--dry-run", "--exit-code", "--color", "never"],
        ));
        assert_eq!(out.status.code(), Some(0), "{}: {}", s.prefix, text(&out));
    }

    // A domain name already used by the other instance is a conflict naming it; its
    // file is left as it was.
    b.write(
        "clash.yaml",
        &domain(
            &a_web,
            &b_web,
            &format!("  hosts: [clash.{}.test]\n", b.prefix),
        ),
    );
    let out = apply(&b);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("belongs to berth instance `{}`", a.prefix)),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read_to_string(&a_file).unwrap(), a_text);
    b.remove("clash.yaml");

    // Removing all of A's manifests (its Settings stays: the proxy it used) prunes
    // A's things only.
    let b_applied = state.join(format!("applied-{}.json", b.prefix));
    let b_record = fs::read(&b_applied).unwrap();
    assert!(String::from_utf8_lossy(&b_record).contains(&b_web));
    a.remove("web.yaml");
    a.remove("domain.yaml");
    let out = apply(&a);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!a_file.exists());
    assert_eq!(fs::read_to_string(&b_file).unwrap(), b_text);
    assert!(
        legacy.exists(),
        "only the default instance prunes a legacy file"
    );
    assert!(!docker(&["inspect", &a_web]).status.success());
    assert_eq!(a.inspect(&b_web)["State"]["Running"], true);
    assert_eq!(fs::read(&b_applied).unwrap(), b_record);
    let a_applied = fs::read_to_string(state.join(format!("applied-{}.json", a.prefix))).unwrap();
    assert!(!a_applied.contains(&a_web), "{a_applied}");
    assert!(!state.join("applied.json").exists());
    assert_eq!(
        nginx.get(&format!("{}.test", b.prefix), "/", 200).status,
        200
    );
    assert_eq!(
        nginx.get(&format!("{}.test", a.prefix), "/", 404).status,
        404
    );
    let out = run(apply_cmd(
        &b,
        b.manifests_path(),
        state,
        &["--dry-run", "--exit-code", "--color", "never"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Waits until the instance's lock file names `pid` as its holder.
fn wait_for_holder(state: &Path, instance: &str, pid: u32) {
    let path = state.join(format!("{instance}.lock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&path).is_ok_and(|t| t == format!("{pid} apply\n")) {
        assert!(Instant::now() < deadline, "apply {pid} never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An app that takes a few seconds to become ready, so that its apply holds the
/// lock meanwhile.
fn slow_app(s: &Scenario, page: &str) -> String {
    s.app(
        "web",
        image(),
        &format!(
            "  port: 80\n  env: {{PAGE: {page}}}\n  command: [sh, -c, \"sleep 3; exec httpd -f -p 80 -h /www\"]\n  \
             health: {{http: /, interval: 1s}}\n"
        ),
    )
}

#[test]
fn a_second_apply_waits_for_the_first_or_gives_up_after_its_timeout() {
    let s = Scenario::new();
    let state = s.state_path();
    s.write("web.yaml", &slow_app(&s, "one"));

    // A second apply waits, says for whom, and succeeds after the first.
    let first = spawn(apply_cmd(&s, s.manifests_path(), state, &[]));
    let holder = first.id();
    wait_for_holder(state, &s.prefix, holder);
    // A dry run changes nothing and waits for no one.
    let out = run(apply_cmd(&s, s.manifests_path(), state, &["--dry-run"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("waiting for the lock"),
        "{}",
        text(&out)
    );
    let second = run(apply_cmd(&s, s.manifests_path(), state, &[]));
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "first: {}", text(&first));
    assert!(second.status.success(), "second: {}", text(&second));
    let waited = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(
        waited
            .matches(&format!(
                "waiting for the lock on instance {}, held by pid {holder} (apply)",
                s.prefix
            ))
            .count(),
        1,
        "said once:\n{waited}"
    );

    // With --lock-timeout 1s it gives up, naming the holder and what to do.
    s.write("web.yaml", &slow_app(&s, "two"));
    let first = spawn(apply_cmd(&s, s.manifests_path(), state, &[]));
    let holder = first.id();
    wait_for_holder(state, &s.prefix, holder);
    let started = Instant::now();
    let out = run(apply_cmd(
        &s,
        s.manifests_path(),
        state,
        &["--lock-timeout", "1s"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    let message = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        message.contains(&format!(
            "error: apply did not start: failed to take the lock on instance {} ({}): \
             held by pid {holder} (apply) for more than 1s (--lock-timeout)",
            s.prefix,
            state.join(format!("{}.lock", s.prefix)).display()
        )),
        "{message}"
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "first: {}", text(&first));

    // A holder killed with SIGKILL frees the lock at once: no stale lock to clear.
    s.write("web.yaml", &slow_app(&s, "three"));
    let mut first = spawn(apply_cmd(&s, s.manifests_path(), state, &[]));
    wait_for_holder(state, &s.prefix, first.id());
    first.kill().unwrap();
    first.wait().unwrap();
    let out = run(apply_cmd(
        &s,
        s.manifests_path(),
        state,
        &["--lock-timeout", "0s"],
    ));
    assert!(out.status.success(), "after a killed apply: {}", text(&out));
    assert!(
        !text(&out).contains("waiting for the lock"),
        "{}",
        text(&out)
    );
}
