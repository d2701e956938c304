//! The status server under a crowd: `berth run` (the release binary) with one app,
//! while 1,000 connections send half a header and 10,000 send nothing.
//!
//! - `/healthz` latency on a fresh connection, quiet and with the crowd open;
//! - a container removed by hand: the time until it runs again, quiet and with the
//!   crowd open (the reconcile loop must not be starved of file descriptors).
//!
//! `cargo bench --bench status_server`.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";
const INSTANCE: &str = "benchsrv";
const APP: &str = "benchsrv-web";
const PROBES: usize = 50;

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

fn cleanup() {
    sh(&format!(
        "docker ps -aq --filter label=berth.instance={INSTANCE} | xargs -r docker rm -f >/dev/null; \
         docker network ls -q --filter label=berth.instance={INSTANCE} | xargs -r docker network rm >/dev/null"
    ));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/healthz` on a fresh connection, as a probe asks: how long it took (`None`: no
/// answer within 5 s).
fn healthz(port: u16) -> Option<Duration> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("the HTTP client builds");
    let start = Instant::now();
    let ok = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .is_ok_and(|r| r.status() == 200);
    ok.then(|| start.elapsed())
}

fn latencies(port: u16) -> (Duration, Duration, usize) {
    let mut took: Vec<Duration> = (0..PROBES).filter_map(|_| healthz(port)).collect();
    let failed = PROBES - took.len();
    took.sort();
    let median = took.get(took.len() / 2).copied().unwrap_or_default();
    let worst = took.last().copied().unwrap_or_default();
    (median, worst, failed)
}

fn running() -> bool {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", APP])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// Removes the app's container and waits until berth runs it again.
fn repair_time() -> Duration {
    sh(&format!("docker rm -f {APP} >/dev/null"));
    let start = Instant::now();
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the removed container was not repaired within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn main() {
    let limit = raise_fd_limit();
    let root = env!("CARGO_MANIFEST_DIR");
    sh(&format!(
        "bash {root}/tests/image/build.sh {IMAGE} >/dev/null 2>&1"
    ));
    cleanup();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {APP}}}\nspec:\n  image: {IMAGE}\n  \
             init: true\n  port: 80\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _run = Run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--source", manifests.to_str().unwrap()])
        .args(["--instance", INSTANCE])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth run starts"));
    let start = Instant::now();
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the app never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (median, worst, failed) = latencies(port);
    println!(
        "quiet: /healthz median {} (slowest {}, {failed} unanswered of {PROBES})",
        ms(median),
        ms(worst)
    );
    println!(
        "quiet: removed container running again after {}",
        ms(repair_time())
    );

    let idle = 10_000.min(limit.saturating_sub(2_500) as usize);
    let opened = Instant::now();
    let mut crowd = Vec::with_capacity(1_000 + idle);
    for _ in 0..1_000 {
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0")
            .unwrap();
        crowd.push(slow);
    }
    for _ in 0..idle {
        crowd.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    println!(
        "crowd: 1000 slow + {idle} idle connections opened in {}",
        ms(opened.elapsed())
    );
    let (median, worst, failed) = latencies(port);
    println!(
        "crowd: /healthz median {} (slowest {}, {failed} unanswered of {PROBES})",
        ms(median),
        ms(worst)
    );
    println!(
        "crowd: removed container running again after {}",
        ms(repair_time())
    );
    drop(crowd);
    cleanup();
}
