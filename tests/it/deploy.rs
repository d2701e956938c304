//! berth shipped as a service and as a container: the systemd unit under deploy/ passes
//! `systemd-analyze verify`, and the root Dockerfile's runtime (its packages, user,
//! state volume and health check), holding this build's berth, runs `berth run` on a
//! local Git repository with the host's Docker socket mounted, converges a test app on
//! the host daemon, and reports healthy through its HEALTHCHECK on `/healthz`. The full
//! image, compiled in the Dockerfile's build stage, is built and timed by
//! tests/container/build-image.sh (see BENCHMARKS.md): a release build takes too long
//! for every test run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::docker::{Scenario, docker, image, text};
use crate::gitops::Repo;
use crate::root;

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {}", text(&out));
}

/// `systemd-analyze verify` of `unit` in a root holding systemd's own units and this
/// build's berth at /usr/local/bin: its exit code and what it said.
fn verify(unit: &str) -> (bool, String) {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    copy_dir(Path::new("/usr/lib/systemd/system"), &units);
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_berth"), bin.join("berth")).unwrap();
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("berth.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg(etc.join("berth.service"))
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    (out.status.success(), text(&out))
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_parses() {
    let unit = std::fs::read_to_string(root().join("deploy/berth.service")).unwrap();
    let (ok, said) = verify(&unit);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // A unit with a mistake is caught: the check above can fail.
    let (_, said) = verify(&unit.replace("Restart=on-failure", "Restart=sometimes"));
    assert!(
        said.contains("Failed to parse service restart specifier, ignoring: sometimes"),
        "{said}"
    );

    // The ExecStart line is a command line berth takes, with BERTH_SOURCE from the
    // environment file.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/berth "))
        .expect("an ExecStart line");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(exec.split_whitespace())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[env: BERTH_SOURCE="), "{}", text(&out));
}

/// The runtime stage of the root Dockerfile, on a Debian base made here with its
/// packages, and this build's berth (stripped) in it. The image with berth is removed
/// when the test ends; the runtime stays cached.
struct BerthImage(String);

impl BerthImage {
    fn build(prefix: &str) -> BerthImage {
        let base = Command::new("bash")
            .arg(root().join("tests/image/debian-base.sh"))
            .args([
                "ca-certificates",
                "curl",
                "git",
                "openssh-client",
                "postgresql-client",
                "mariadb-client",
            ])
            .output()
            .unwrap();
        assert!(base.status.success(), "debian-base.sh: {}", text(&base));
        let base = String::from_utf8_lossy(&base.stdout).trim().to_owned();
        // The runtime is cached by content, and kept: removing it could take the
        // layers from under a build of the whole Dockerfile going on beside.
        let dockerfile = std::fs::read(root().join("Dockerfile")).unwrap();
        let hash = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(&dockerfile);
            h.update(base.as_bytes());
            hex::encode(h.finalize())
        };
        let runtime = format!("berth-test/berth-runtime:{}", &hash[..12]);
        let image = BerthImage(format!("berth-test/berth:{prefix}"));
        let out = Command::new("docker")
            .args(["build", "-q", "--target", "runtime", "-t", &runtime])
            .args(["--build-arg", &format!("RUNTIME_IMAGE={base}")])
            .arg(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build --target runtime: {}",
            text(&out)
        );
        let ctx = tempfile::tempdir().unwrap();
        let out = Command::new("strip")
            .arg("-o")
            .arg(ctx.path().join("berth"))
            .arg(env!("CARGO_BIN_EXE_berth"))
            .output()
            .unwrap();
        assert!(out.status.success(), "strip: {}", text(&out));
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {runtime}\nCOPY berth /usr/local/bin/berth\n"),
        )
        .unwrap();
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &image.0])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "docker build: {}", text(&out));
        image
    }
}

impl Drop for BerthImage {
    fn drop(&mut self) {
        // Untagged parent layers stay: a build beside may be using them.
        docker(&["rmi", "-f", "--no-prune", &self.0]);
    }
}

/// A container the test started, removed (with its state volume) when it ends.
struct Container {
    name: String,
    volume: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.name]);
        docker(&["volume", "rm", "-f", &self.volume]);
    }
}

fn inspect(name: &str, format: &str) -> String {
    let out = docker(&["inspect", "-f", format, name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_container_runs_berth_on_a_git_repository_and_answers_its_health_check() {
    let s = Scenario::new();
    let app = s.name("web");
    let image_tag = BerthImage::build(&s.prefix);
    let repo = Repo::new();
    repo.commit(
        "first",
        &[
            (
                "settings.yaml",
                format!(
                    "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\n\
                     spec: {{network: {}-net}}\n",
                    s.prefix
                ),
            ),
            ("web.yaml", s.app("web", image(), "  port: 80\n")),
        ],
    );
    // The image's user (uid 10001) reads the repository through a bind mount; git
    // refuses a repository another user owns.
    let out = Command::new("chown")
        .args(["-R", "10001:10001"])
        .arg(repo.bare.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let port = crate::free_port();
    let socket_group = Command::new("stat")
        .args(["-c", "%g", "/var/run/docker.sock"])
        .output()
        .unwrap();
    let socket_group = String::from_utf8_lossy(&socket_group.stdout)
        .trim()
        .to_owned();
    let c = Container {
        name: format!("{}-berth", s.prefix),
        volume: format!("{}-berth-state", s.prefix),
    };
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &c.name,
        "--network",
        "host",
        "--group-add",
        &socket_group,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/var/lib/berth", c.volume),
        "-v",
        &format!("{}:/srv/state.git:ro", repo.bare.display()),
        "-e",
        &format!("BERTH_LISTEN=127.0.0.1:{port}"),
        "-e",
        &format!("BERTH_INSTANCE={}", s.prefix),
        &image_tag.0,
        "run",
        "--source",
        "file:///srv/state.git#main:deploy",
        "--interval",
        "2s",
    ]);
    assert!(out.status.success(), "docker run: {}", text(&out));

    let deadline = Instant::now() + Duration::from_secs(90);
    let logs = || text(&docker(&["logs", &c.name]));
    loop {
        let app_running = inspect(&app, "{{.State.Running}}") == "true";
        let health = inspect(&c.name, "{{.State.Health.Status}}");
        if app_running && health == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 90s: app running {app_running}, berth {health}; berth said:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The app carries this instance's labels, and the container runs berth as `berth`.
    assert_eq!(
        inspect(&app, "{{index .Config.Labels \"berth.instance\"}}"),
        s.prefix
    );
    assert_eq!(inspect(&c.name, "{{.Config.User}}"), "berth");
    let status = crate::http::get(&format!("http://127.0.0.1:{port}/api/v1/status"), None).unwrap();
    assert_eq!(status.status, 200);
    assert!(status.body.contains("\"Ready\""), "{}", status.body);
    assert!(!logs().contains('\x1b'), "{}", logs());
}

/// `--source /var/lib/berth` (the image's state volume) made every write of berth's a
/// new pass, one every few hundred milliseconds.
#[test]
fn a_source_inside_the_state_dir_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let source = state.path().join("manifests");
    std::fs::create_dir(&source).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--source"])
        .arg(&source)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "error: --source {} is inside the state directory {}: berth writes there",
            source.display(),
            state.path().display()
        )),
        "{}",
        text(&out)
    );
}
