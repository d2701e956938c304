//! Controller benchmarks: `berth run` (the release binary) against the real daemon.
//!
//! - a file change (directory source) to the app converged: from the write to the
//!   status showing the new revision applied (the pass has finished: new container
//!   ready, old one gone);
//! - a push webhook (Git source, a local bare repository) to the app converged: from
//!   the POST to the same;
//! - the controller idle with 100 apps converged: resident memory, and CPU time over
//!   30 s.
//!
//! Each figure is printed beside the container's own start time measured in the same
//! run (`docker run -d` of the same image). `cargo bench --bench controller`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";
const INSTANCE: &str = "benchctl";
const RUNS: usize = 9;
const IDLE_APPS: usize = 100;

fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "failed: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn git(dir: &Path, args: &str) -> String {
    sh(&format!(
        "cd {} && git -c user.name=bench -c user.email=bench@example.com \
         -c init.defaultBranch=main -c commit.gpgsign=false {args}",
        dir.display()
    ))
}

fn cleanup() {
    sh(&format!(
        "docker ps -aq --filter label=berth.instance={INSTANCE} | xargs -r docker rm -f >/dev/null; \
         docker ps -aq --filter name=^benchctl-ref | xargs -r docker rm -f >/dev/null; \
         docker network ls -q --filter label=berth.instance={INSTANCE} | xargs -r docker network rm >/dev/null"
    ));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request to the controller; returns the status code and body (0 and nothing
/// while it does not answer). The client is built once, as a user's tool would keep it.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds")
    });
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let Ok(response) = request.send() else {
        return (0, String::new());
    };
    let code = response.status().as_u16();
    (code, response.text().unwrap_or_default())
}

fn status(port: u16) -> serde_json::Value {
    let (_, body) = http(port, "GET", "/api/v1/status", &[], b"");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// Polls the status every 2 ms until `done`; returns when it first held.
fn wait_until(port: u16, limit: Duration, done: impl Fn(&serde_json::Value) -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if done(&status(port)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "not converged in {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Run {
    child: Child,
    port: u16,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn berth_run(source: &str, state: &Path, extra: &[&str]) -> Run {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--source", source, "--instance", INSTANCE])
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth run starts");
    Run { child, port }
}

fn app(name: &str, page: usize) -> String {
    format!(
        "---\napiVersion: berth/v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  image: {IMAGE}\n  \
         init: true\n  port: 80\n  env: {{PAGE: \"{page}\"}}\n  health: {{http: /, interval: 1s}}\n"
    )
}

fn applied(st: &serde_json::Value) -> String {
    st["revisionApplied"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    sh(&format!(
        "bash {root}/tests/image/build.sh {IMAGE} >/dev/null 2>&1"
    ));
    cleanup();

    // The container's own start time: `docker run -d` of the same image.
    let mut own = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        sh(&format!(
            "docker run -d --init --name benchctl-ref{i} {IMAGE} >/dev/null"
        ));
        own.push(start.elapsed());
    }
    cleanup();
    let own = median(own);
    println!("container start (docker run -d --init): {}", ms(own));

    // File change → converged.
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let state = dir.path().join("state");
    std::fs::write(manifests.join("web.yaml"), app("benchctl-web", 0)).unwrap();
    let run = berth_run(manifests.to_str().unwrap(), &state, &[]);
    wait_until(run.port, Duration::from_secs(60), |st| {
        !applied(st).is_empty()
    });
    let mut file_times = Vec::new();
    for i in 1..=RUNS {
        let before = applied(&status(run.port));
        let start = Instant::now();
        std::fs::write(manifests.join("web.yaml"), app("benchctl-web", i)).unwrap();
        let done = wait_until(run.port, Duration::from_secs(60), |st| {
            let now = applied(st);
            !now.is_empty() && now != before && st["lastPass"]["result"] == "Synced"
        });
        file_times.push(done - start);
    }
    drop(run);
    cleanup();
    let file_median = median(file_times.clone());
    println!(
        "file change → converged: median {} (min {}, max {}) over {RUNS} changes",
        ms(file_median),
        ms(*file_times.iter().min().unwrap()),
        ms(*file_times.iter().max().unwrap())
    );

    // Push webhook → converged.
    let bare = dir.path().join("state.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("deploy")).unwrap();
    git(dir.path(), "init -q --bare state.git");
    git(&work, "init -q");
    git(&work, &format!("remote add origin {}", bare.display()));
    let commit = |page: usize| {
        std::fs::write(work.join("deploy/web.yaml"), app("benchctl-git", page)).unwrap();
        git(&work, "add -A");
        git(&work, &format!("commit -q -m page-{page}"));
        git(&work, "push -q origin HEAD:refs/heads/main");
        git(&work, "rev-parse HEAD")
    };
    let first = commit(0);
    let git_state = dir.path().join("git-state");
    std::fs::create_dir_all(git_state.join("secrets")).unwrap();
    std::fs::write(git_state.join("secrets/git-webhook"), "bench-secret").unwrap();
    let source = format!("file://{}#main:deploy", bare.display());
    let run = berth_run(&source, &git_state, &["--interval", "1h"]);
    wait_until(run.port, Duration::from_secs(60), |st| applied(st) == first);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = berth::source::webhook::github_signature(b"bench-secret", body);
    let mut hook_times = Vec::new();
    for i in 1..=RUNS {
        let id = commit(i);
        let start = Instant::now();
        let (code, text) = http(
            run.port,
            "POST",
            "/hooks/git",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &signature),
            ],
            body,
        );
        assert_eq!(code, 202, "{text}");
        let done = wait_until(run.port, Duration::from_secs(60), |st| {
            applied(st) == id && st["lastPass"]["result"] == "Synced"
        });
        hook_times.push(done - start);
    }
    drop(run);
    cleanup();
    let hook_median = median(hook_times.clone());
    println!(
        "push webhook → converged: median {} (min {}, max {}) over {RUNS} commits",
        ms(hook_median),
        ms(*hook_times.iter().min().unwrap()),
        ms(*hook_times.iter().max().unwrap())
    );

    // Idle with 100 apps.
    let many = dir.path().join("many");
    std::fs::create_dir_all(&many).unwrap();
    let mut text = String::new();
    for i in 0..IDLE_APPS {
        text.push_str(&format!(
            "---\napiVersion: berth/v1\nkind: App\nmetadata: {{name: benchctl-{i:03}}}\nspec:\n  \
             image: {IMAGE}\n  init: true\n  env: {{INDEX: \"{i}\"}}\n"
        ));
    }
    std::fs::write(many.join("apps.yaml"), text).unwrap();
    let idle_state = dir.path().join("idle-state");
    let run = berth_run(many.to_str().unwrap(), &idle_state, &[]);
    let start = Instant::now();
    wait_until(run.port, Duration::from_secs(300), |st| {
        !applied(st).is_empty()
            && st["resources"]
                .as_object()
                .is_some_and(|r| r.values().filter(|v| v["kind"] == "App").count() == IDLE_APPS)
    });
    println!(
        "first converge of {IDLE_APPS} apps by berth run: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(5));
    let pid = run.child.id();
    let passes_before = status(run.port)["passes"].clone();
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        // utime and stime, fields 14 and 15 of the whole line.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let ticks_per_second = sh("getconf CLK_TCK").parse::<f64>().unwrap();
    let window = Duration::from_secs(30);
    let before = cpu(pid);
    std::thread::sleep(window);
    let after = cpu(pid);
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let cpu_seconds = (after - before) as f64 / ticks_per_second;
    let passes_after = status(run.port)["passes"].clone();
    println!(
        "idle with {IDLE_APPS} apps: RSS {:.1} MiB, CPU {:.2} s over {} s ({:.2}%), passes {} → {}",
        rss_kib as f64 / 1024.0,
        cpu_seconds,
        window.as_secs(),
        cpu_seconds / window.as_secs_f64() * 100.0,
        passes_before,
        passes_after
    );
    drop(run);
    cleanup();
    println!(
        "\n| date | file change → converged | push webhook → converged | container start | idle RSS (100 apps) | idle CPU |"
    );
    println!(
        "| {} | {} | {} | {} | {:.1} MiB | {:.2}% |",
        sh("date +%F"),
        ms(file_median),
        ms(hook_median),
        ms(own),
        rss_kib as f64 / 1024.0,
        cpu_seconds / window.as_secs_f64() * 100.0
    );
}
