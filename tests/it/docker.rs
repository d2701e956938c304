//! `berth apply` against the real Docker daemon, with an image built here from the
//! static busybox (no registry is reachable). Every test runs as its own berth
//! instance with its own names, and removes what it created.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::root;

/// The test image, built once per run under a tag of the run's own
/// (`berth-test/busybox:run<pid>`), removed when the run ends.
///
/// One image for the whole run, not one per test: tests share it, so it is built once.
/// A tag per run, not one shared by every run: several runs go on at once on a shared
/// host, and a run removing a shared tag at its end would pull the image from under
/// the others. Building the same content again costs next to nothing (Docker's build
/// cache, and the image ID is the content's digest, so every run's tag names the same
/// layers); removing this run's tag leaves the others' alone.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let tag = format!("berth-test/busybox:run{}", std::process::id());
        remove_when_the_run_ends(&tag);
        let out = Command::new("bash")
            .arg(root().join("tests/image/build.sh"))
            .arg(&tag)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "building the test image: {}",
            text(&out)
        );
        tag
    })
}

/// Removes image `tag` once this test process has exited. The test harness has no
/// hook at the end of a run (and statics are never dropped), so a shell waits for the
/// process to go, then removes the tag. It ignores the terminal's Ctrl-C, which stops
/// the run, and keeps no output of the run's open.
#[expect(
    clippy::zombie_processes,
    reason = "the shell outlives this process: nothing here is left to wait for it"
)]
fn remove_when_the_run_ends(tag: &str) {
    let script = "trap '' INT HUP; while kill -0 \"$1\" 2>/dev/null; do sleep 0.2; done; \
                  docker rmi \"$2\" >/dev/null 2>&1";
    Command::new("sh")
        .args(["-c", script, "sh", &std::process::id().to_string(), tag])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SECRET: &str = "s3cr3t-value-4f9a2b";

/// One isolated berth instance: its manifests, state directory and names.
pub struct Scenario {
    pub prefix: String,
    manifests: tempfile::TempDir,
    state: tempfile::TempDir,
    extra_images: Vec<String>,
}

/// The host policy of a scenario's state dir: the tests' own nginx, certificates and
/// HTTP listeners live in the temporary directory and on loopback, and reload through
/// `nginx` or `docker exec`. `/nonexistent` lets a test show nginx's own refusal of a
/// missing certificate.
pub fn test_policy(state: &std::path::Path) -> String {
    let tmp = std::env::temp_dir();
    let tmp = tmp.display();
    let state = state.display();
    format!(
        "hostPaths: [/srv, {state}/data, {tmp}]\n\
         proxyPaths: [{tmp}, /etc/nginx/conf.d, /etc/nginx/nginx.conf]\n\
         proxyCommands: [\"nginx *\", \"docker exec *\"]\n\
         tlsRoots: [{state}/tls, {tmp}, /nonexistent]\n\
         httpTargets: [public, 127.0.0.0/8, \"::1/128\"]\n"
    )
}

impl Scenario {
    pub fn new() -> Scenario {
        static N: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "bt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let state = tempfile::tempdir().unwrap();
        fs::create_dir(state.path().join("secrets")).unwrap();
        fs::write(state.path().join("secrets/api-token"), SECRET).unwrap();
        fs::write(state.path().join("policy.yaml"), test_policy(state.path())).unwrap();
        let s = Scenario {
            prefix,
            manifests: tempfile::tempdir().unwrap(),
            state,
            extra_images: Vec::new(),
        };
        s.write(
            "settings.yaml",
            &format!(
                "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: {{network: {}-net}}\n",
                s.prefix
            ),
        );
        s
    }

    pub fn state_path(&self) -> &std::path::Path {
        self.state.path()
    }

    pub fn manifests_path(&self) -> &std::path::Path {
        self.manifests.path()
    }

    pub fn name(&self, app: &str) -> String {
        format!("{}-{app}", self.prefix)
    }

    pub fn write(&self, file: &str, content: &str) {
        fs::write(self.manifests.path().join(file), content).unwrap();
    }

    pub fn remove(&self, file: &str) {
        fs::remove_file(self.manifests.path().join(file)).unwrap();
    }

    /// An app manifest with the test image.
    pub fn app(&self, app: &str, image: &str, extra: &str) -> String {
        format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {}}}\nspec:\n  image: {image}\n{extra}",
            self.name(app)
        )
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg(self.manifests.path())
            .args(["--state-dir", self.state.path().to_str().unwrap()])
            .args(["--instance", &self.prefix, "--ready-timeout", "20"])
            .env_remove("RUST_LOG")
            .output()
            .expect("berth runs")
    }

    pub fn apply(&self) -> String {
        let out = self.berth(&["apply"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "apply failed:\n{t}");
        t
    }

    pub fn dry_run(&self) -> (Option<i32>, String) {
        let out = self.berth(&["apply", "--dry-run", "--exit-code", "--color", "never"]);
        (out.status.code(), text(&out))
    }

    pub fn inspect(&self, container: &str) -> Value {
        let out = docker(&["inspect", container]);
        assert!(
            out.status.success(),
            "docker inspect {container}: {}",
            text(&out)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }

    /// The body of GET `path` from the container over its address on the test network.
    fn get(&self, container: &str, path: &str) -> String {
        let info = self.inspect(container);
        let ip = info["NetworkSettings"]["Networks"][format!("{}-net", self.prefix)]["IPAddress"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("http://{ip}:80{path}");
        let mut last = String::new();
        for _ in 0..40 {
            match crate::http::get(&url, None) {
                Ok(reply) if reply.status == 200 => return reply.body,
                Ok(reply) => last = format!("{reply:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{container} does not answer GET {url}: {last}");
    }

    /// The test image under another tag of this scenario's own (removed at its end).
    pub fn tag(&mut self, tag: &str) -> String {
        let t = format!("{}:{tag}", image().split(':').next().unwrap());
        let t = format!("{t}-{}", self.prefix);
        self.remove_with(&t);
        assert!(docker(&["tag", image(), &t]).status.success());
        t
    }

    /// Removes image `tag`, one this test made for itself, when the scenario ends.
    pub fn remove_with(&mut self, tag: &str) {
        self.extra_images.push(tag.to_owned());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let filter = format!("label=berth.instance={}", self.prefix);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        for name in ["web", "api", "worker", "site"] {
            // Unmanaged stand-ins some tests start by hand.
            docker(&["rm", "-f", &format!("{}-{name}", self.prefix)]);
        }
        let vols = docker(&["volume", "ls", "-q", "--filter", &filter]);
        for v in String::from_utf8_lossy(&vols.stdout).split_whitespace() {
            docker(&["volume", "rm", "-f", v]);
        }
        docker(&["network", "rm", &format!("{}-net", self.prefix)]);
        docker(&["network", "rm", &format!("{}-net-db", self.prefix)]);
        for i in &self.extra_images {
            docker(&["rmi", i]);
        }
    }
}

fn env_of(info: &Value) -> Vec<String> {
    info["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
}

#[test]
fn apply_from_nothing_runs_every_app_as_declared_then_is_in_sync() {
    let s = Scenario::new();
    let img = image();
    s.write(
        "web.yaml",
        &s.app(
            "web",
            img,
            "  env: {PAGE: front, WORKERS: 4}\n  secretEnv: {TOKEN: api-token}\n  port: 80\n  \
             volumes: [{name: data, mount: /data}]\n  \
             health: {cmd: [wget, -q, -O-, \"http://127.0.0.1/\"], interval: 1s, timeout: 2s, retries: 5}\n  \
             resources: {cpus: 0.5, memory: 64Mi}\n  restart: always\n  labels: {team: web}\n",
        ),
    );
    s.write(
        "worker.yaml",
        &s.app(
            "worker",
            img,
            &format!(
                "  command: [sleep, \"3600\"]\n  replicas: 2\n  dependsOn: [{}]\n  update: stop-first\n",
                s.name("web")
            ),
        ),
    );
    s.write(
        "api.yaml",
        &s.app(
            "api",
            img,
            "  port: 80\n  init: true\n  health: {http: /, interval: 1s}\n",
        ),
    );
    let out = s.apply();
    assert_no_secret("apply", &out);
    // `init: true`: Docker's init is PID 1, so SIGTERM stops busybox at once.
    assert_eq!(s.inspect(&s.name("api"))["HostConfig"]["Init"], true);

    let web = s.inspect(&s.name("web"));
    assert_eq!(web["State"]["Running"], true);
    let env = env_of(&web);
    assert!(env.contains(&"PAGE=front".to_owned()), "{env:?}");
    assert!(env.contains(&"WORKERS=4".to_owned()), "{env:?}");
    assert!(
        env.contains(&format!("TOKEN={SECRET}")),
        "the secret is injected"
    );
    let labels = &web["Config"]["Labels"];
    assert_eq!(labels["berth.managed"], "true");
    assert_eq!(labels["berth.kind"], "app");
    assert_eq!(labels["berth.name"], s.name("web"));
    assert_eq!(labels["berth.instance"], s.prefix);
    assert_eq!(labels["berth.spec-hash"].as_str().unwrap().len(), 64);
    assert_eq!(labels["berth.revision"].as_str().unwrap().len(), 12);
    assert_eq!(labels["team"], "web");
    assert_no_secret("container labels", &labels.to_string());
    let mount = &web["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Name"], format!("{}-data", s.name("web")));
    assert_eq!(mount["Destination"], "/data");
    assert!(web["NetworkSettings"]["Networks"][format!("{}-net", s.prefix)].is_object());
    assert_eq!(
        web["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "wget", "-q", "-O-", "http://127.0.0.1/"])
    );
    assert_eq!(web["HostConfig"]["NanoCpus"], 500_000_000);
    assert_ne!(web["HostConfig"]["Init"], true);
    assert_eq!(web["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(web["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert_eq!(web["State"]["Health"]["Status"], "healthy");
    assert!(
        s.get(&s.name("web"), "/")
            .contains("hello from the berth test image")
    );
    assert!(s.get(&s.name("web"), "/cgi-bin/env").contains("PAGE=front"));

    for worker in [s.name("worker"), format!("{}-2", s.name("worker"))] {
        let w = s.inspect(&worker);
        assert_eq!(w["State"]["Running"], true, "{worker}");
        assert_eq!(w["Config"]["Cmd"], serde_json::json!(["sleep", "3600"]));
    }
    assert_eq!(s.inspect(&s.name("api"))["State"]["Running"], true);

    let (code, out) = s.dry_run();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("0 to create, 0 to update, 0 to delete"),
        "{out}"
    );
    assert!(out.contains("the host is in sync"), "{out}");
}

#[test]
fn changes_give_exactly_the_expected_plan_and_data_survives() {
    let mut s = Scenario::new();
    let v1 = s.tag("v1");
    let v2 = s.tag("v2");
    let web = |image: &str, page: &str| {
        s.app(
            "web",
            image,
            &format!(
                "  env: {{PAGE: {page}}}\n  secretEnv: {{TOKEN: api-token}}\n  port: 80\n  \
                 volumes: [{{name: data, mount: /data}}]\n  health: {{http: /, interval: 1s}}\n"
            ),
        )
    };
    s.write("web.yaml", &web(&v1, "one"));
    s.write("api.yaml", &s.app("api", &v1, "  port: 80\n"));
    s.apply();
    let name = s.name("web");
    let out = docker(&["exec", &name, "sh", "-c", "echo kept > /data/file"]);
    assert!(out.status.success(), "{}", text(&out));

    // The image.
    s.write("web.yaml", &web(&v2, "one"));
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("~ update app {name}: image {v1} → {v2}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("-image: {v1}\n+image: {v2}\n")),
        "{out}"
    );
    assert!(
        out.contains("Plan: 0 to create, 1 to update, 0 to delete, 3 unchanged."),
        "{out}"
    );
    s.apply();
    let info = s.inspect(&name);
    assert_eq!(info["Config"]["Image"], v2.as_str());
    assert_eq!(info["State"]["Running"], true);
    let out = docker(&["exec", &name, "cat", "/data/file"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\n",
        "the volume's data survives an update"
    );

    // An env value.
    s.write("web.yaml", &web(&v2, "two"));
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2));
    assert!(
        out.contains(&format!("~ update app {name}: env PAGE changed\n")),
        "{out}"
    );
    s.apply();
    assert!(s.get(&name, "/cgi-bin/env").contains("PAGE=two"));

    // A secret's value: visible as a change, never as a value.
    fs::write(
        s.state.path().join("secrets/api-token"),
        "another-secret-value",
    )
    .unwrap();
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2));
    assert!(
        out.contains(&format!("~ update app {name}: secret TOKEN changed\n")),
        "{out}"
    );
    assert!(out.contains("<secret:api-token sha256:"), "{out}");
    assert!(!out.contains("another-secret-value"), "{out}");
    s.apply();
    assert!(env_of(&s.inspect(&name)).contains(&"TOKEN=another-secret-value".to_owned()));

    // Removing an app prunes its container and keeps its data.
    s.remove("web.yaml");
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2));
    assert!(
        out.contains(&format!("- delete app {name}: no longer declared\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "keep volume {name}-data: no longer declared; data kept (deletionPolicy: retain)"
        )),
        "{out}"
    );
    s.apply();
    assert!(
        !docker(&["inspect", &name]).status.success(),
        "the container is gone"
    );
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{name}-data:/d"),
        &v1,
        "cat",
        "/d/file",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\n",
        "the volume's data survives a prune"
    );
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn a_container_removed_by_hand_is_planned_as_drift_and_repaired() {
    let s = Scenario::new();
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.apply();
    let name = s.name("web");
    assert!(docker(&["rm", "-f", &name]).status.success());
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("~ update app {name}: container missing (drift)\n")),
        "{out}"
    );
    s.apply();
    assert_eq!(s.inspect(&name)["State"]["Running"], true);

    // Stopped by hand: started again.
    assert!(docker(&["stop", "-t", "1", &name]).status.success());
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!("container {name} is exited (drift)")),
        "{out}"
    );
    s.apply();
    assert_eq!(s.inspect(&name)["State"]["Running"], true);
}

#[test]
fn an_unmanaged_container_with_the_name_is_left_alone_and_reported() {
    let s = Scenario::new();
    let name = s.name("web");
    let out = docker(&["run", "-d", "--name", &name, image()]);
    assert!(out.status.success(), "{}", text(&out));
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write("api.yaml", &s.app("api", image(), "  port: 80\n"));

    let (code, out) = s.dry_run();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "! conflict app {name}: container `{name}` exists and is not managed by berth"
        )),
        "{out}"
    );
    let out = s.berth(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("app {name}: conflict:")),
        "{}",
        text(&out)
    );

    let info = s.inspect(&name);
    assert_eq!(info["State"]["Running"], true);
    assert!(
        info["Config"]["Labels"].get("berth.managed").is_none(),
        "untouched"
    );
    // The other app still converged.
    assert_eq!(s.inspect(&s.name("api"))["State"]["Running"], true);
}

#[test]
fn a_new_version_that_fails_its_health_check_leaves_the_old_one_serving() {
    let s = Scenario::new();
    let name = s.name("web");
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  env: {PAGE: one}\n  health: {http: /, interval: 1s}\n",
        ),
    );
    s.apply();
    let before = s.inspect(&name)["Id"].clone();
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  env: {PAGE: two}\n  health: {http: /missing, interval: 1s}\n",
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["apply"])
        .arg(s.manifests.path())
        .args([
            "--state-dir",
            s.state.path().to_str().unwrap(),
            "--instance",
            &s.prefix,
            "--ready-timeout",
            "3",
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("answered 404"), "{t}");
    assert!(t.contains("keeps running (degraded)"), "{t}");
    let info = s.inspect(&name);
    assert_eq!(
        info["Id"], before,
        "the old container is still the one serving"
    );
    assert_eq!(info["State"]["Running"], true);
    assert!(s.get(&name, "/cgi-bin/env").contains("PAGE=one"));
    let ps = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=berth.name={name}"),
        "-q",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).lines().count(),
        1,
        "the failed container is removed"
    );
}

#[test]
fn no_output_shows_a_secret() {
    let s = Scenario::new();
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  secretEnv: {TOKEN: api-token}\n  port: 80\n  command: [sh, -c, \"exit 3\"]\n",
        ),
    );
    let mut outputs = Vec::new();
    for args in [
        vec!["apply", "--dry-run"],
        vec!["apply", "--dry-run", "-o", "json"],
        vec!["apply", "--dry-run", "--offline"],
        vec!["-vv", "apply"],
        vec!["apply", "-o", "json"],
    ] {
        let out = s.berth(&args);
        outputs.push((format!("{args:?}"), text(&out)));
    }
    // The app exits at once: the failure message is there, the secret is not.
    assert!(
        outputs[3].1.contains("before it was ready"),
        "{}",
        outputs[3].1
    );
    assert!(
        outputs[3]
            .1
            .contains(&format!("FAILED: container {} exited", s.name("web"))),
        "{}",
        outputs[3].1
    );
    for (what, out) in &outputs {
        assert_no_secret(what, out);
    }
    let applied = s.state.path().join(format!("applied-{}.json", s.prefix));
    let applied = fs::read_to_string(applied).unwrap_or_default();
    assert_no_secret("applied.json", &applied);
}

#[test]
fn an_unknown_secret_is_a_clear_error_naming_app_and_secret() {
    let s = Scenario::new();
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  secretEnv: {MAIL_PASSWORD: mail-password}\n",
        ),
    );
    let name = s.name("web");
    let message = format!(
        "App/{name}: env MAIL_PASSWORD: secret `mail-password` is not in the secret store: \
         write it to {}/secrets/mail-password (mode 0600) or set BERTH_SECRET_MAIL_PASSWORD",
        s.state.path().display()
    );
    let out = s.berth(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&message), "{err}");
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(
        !docker(&["inspect", &name]).status.success(),
        "nothing was created"
    );

    // A dry run (on a laptop, say) still shows the plan, and says what it cannot see.
    let out = s.berth(&["apply", "--dry-run", "--color", "never"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "warning: {message}; the plan cannot show changes of its value"
        )),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("+ create app {name}")));
}

#[test]
fn an_unreachable_daemon_is_a_clear_error_and_offline_plans_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = root().join("examples/static-site");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["apply", "--dry-run"])
        .arg(&manifests)
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: cannot reach the Docker daemon")),
        "{err}"
    );
    assert!(err.contains("--offline"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["apply", "--offline", "--exit-code", "--color", "never"])
        .arg(&manifests)
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+ create app site: new app (nginx:1.27-alpine)"),
        "{text}"
    );
    assert!(
        text.contains("+ create domain site: new route example.net, www.example.net, xn--bcher-kva.example.net at / → site:80\n"),
        "{text}"
    );
    assert!(
        text.ends_with("Plan: 3 to create, 0 to update, 0 to delete, 0 unchanged.\n"),
        "{text}"
    );
}

#[test]
fn an_image_that_cannot_be_had_fails_that_app_only() {
    let s = Scenario::new();
    let missing = format!("berth-test/absent:{}", s.prefix);
    s.write("web.yaml", &s.app("web", &missing, "  port: 80\n"));
    s.write("api.yaml", &s.app("api", image(), "  port: 80\n"));
    let out = s.berth(&["apply"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "app {}: FAILED: failed to pull image {missing}: ",
            s.name("web")
        )),
        "{t}"
    );
    assert!(t.contains("build or load it here"), "{t}");
    assert!(t.contains("Applied: 2 changed, 1 failed."), "{t}");
    assert_eq!(s.inspect(&s.name("api"))["State"]["Running"], true);
}

#[test]
fn the_driver_streams_events_of_managed_containers() {
    use berth::drivers::docker::{BollardDocker, ContainerConfig, DockerApi};
    use futures_util::StreamExt;

    let s = Scenario::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = BollardDocker::connect().await.unwrap();
        let network = format!("{}-net", s.prefix);
        let mut labels = berth::desired::labels::owner_labels(
            &s.prefix,
            berth::desired::ObjectKind::Network,
            "test",
        );
        docker
            .create_network(&network, &labels, false)
            .await
            .unwrap();
        let mut events = docker.container_events(&format!("berth.instance={}", s.prefix));
        // The stream subscribes when first polled: keep polling it from a task.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<
            Result<berth::drivers::docker::ContainerEvent, berth::drivers::docker::DockerError>,
        >();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        labels.insert("berth.kind".into(), "app".into());
        let config = ContainerConfig {
            name: s.name("web"),
            image: image().to_owned(),
            labels,
            network,
            restart: "no".into(),
            ..ContainerConfig::default()
        };
        let id = docker.create_container(&config).await.unwrap();
        docker.start_container(&id).await.unwrap();
        docker.remove_container(&id).await.unwrap();
        let mut seen = Vec::new();
        let wait = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(ev) = rx.recv().await {
                let ev = ev.unwrap();
                assert_eq!(ev.id, id);
                assert_eq!(ev.labels.get("berth.instance"), Some(&s.prefix));
                seen.push(ev.action.clone());
                if ev.action == "destroy" {
                    break;
                }
            }
        });
        wait.await.expect("a destroy event within 20 s");
        for action in ["create", "start", "die", "destroy"] {
            assert!(seen.iter().any(|a| a == action), "{action} not in {seen:?}");
        }
    });
}
