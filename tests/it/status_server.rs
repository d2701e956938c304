//! The status server of `berth run` under hostile clients: slow headers, slow bodies
//! and crowds of idle connections are closed at their timeouts or shed under the
//! connection cap, and `/healthz` keeps answering meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::docker::Scenario;
use crate::run::{Controller, eventually};

/// The server's header, request and idle timeouts (`Limits::default()`).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Raises this process's soft limit on open files to its hard limit and returns it.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("the status server accepts")
}

/// Whether the server closed `stream` (after whatever it answered), without waiting.
fn closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// `GET /healthz` on a fresh connection: the answer and how long it took.
fn healthz(port: u16) -> (u16, Duration) {
    let started = Instant::now();
    let reply = crate::http::get(&format!("http://127.0.0.1:{port}/healthz"), None)
        .expect("/healthz answers");
    (reply.status, started.elapsed())
}

#[test]
fn the_status_server_has_timeouts_and_a_connection_cap_so_slow_and_idle_clients_cannot_exhaust_it()
{
    let limit = raise_fd_limit();
    let s = Scenario::new();
    let source = s.manifests_path().display().to_string();
    let c = Controller::start_with(&s, &source, &[]);
    eventually(&c, 30, "berth run answers /healthz", || {
        crate::http::get(&format!("http://127.0.0.1:{}/healthz", c.port), None)
            .is_ok_and(|r| r.status == 200)
    });

    // The crowd: 1,000 connections that send half a header, 10,000 that send nothing
    // (fewer when this process may not open that many files).
    let idle_count = 10_000.min(limit.saturating_sub(2_500) as usize);
    if idle_count < 10_000 {
        eprintln!("open files limited to {limit}: {idle_count} idle connections instead of 10,000");
    }
    let mut crowd = Vec::with_capacity(1_000 + idle_count);
    for _ in 0..1_000 {
        let mut slow = connect(c.port);
        slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0")
            .unwrap();
        crowd.push(slow);
    }
    for _ in 0..idle_count {
        crowd.push(connect(c.port));
    }
    let crowd_opened = Instant::now();

    // With all of them open, /healthz answers at once, every time.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (status, took) = healthz(c.port);
        assert_eq!(status, 200);
        worst = worst.max(took);
    }
    eprintln!(
        "/healthz with {} connections opened: slowest of 20 answers {worst:?}",
        crowd.len()
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // Fewer than the cap, opened last: each is closed at its timeout, not before.
    let mut late = Vec::new();
    for _ in 0..80 {
        let mut slow = connect(c.port);
        slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0")
            .unwrap();
        late.push(slow);
    }
    for _ in 0..80 {
        let mut body = connect(c.port);
        body.write_all(
            b"POST /hooks/git HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"ref\":",
        )
        .unwrap();
        late.push(body);
    }
    for _ in 0..80 {
        // Kept alive after one answer, then silent.
        let mut kept = connect(c.port);
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 512];
        let n = kept.read(&mut answer).unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        late.push(kept);
    }
    let late_opened = Instant::now();

    std::thread::sleep(TIMEOUT / 2);
    let open_halfway = late.iter().filter(|s| !closed(s)).count();
    assert_eq!(
        open_halfway,
        late.len(),
        "connections within the cap are closed at their timeout, not before"
    );

    let deadline = late_opened + TIMEOUT + Duration::from_secs(3);
    while Instant::now() < deadline && !late.iter().all(closed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_open = late.iter().filter(|s| !closed(s)).count();
    assert_eq!(
        still_open, 0,
        "slow headers, slow bodies and idle keep-alive connections are closed {TIMEOUT:?} on"
    );
    let crowd_open = crowd.iter().filter(|s| !closed(s)).count();
    assert_eq!(
        crowd_open,
        0,
        "every connection of the crowd is closed {:?} after it came",
        crowd_opened.elapsed()
    );
    assert_eq!(healthz(c.port).0, 200);
}

#[test]
fn the_status_server_refuses_a_foreign_host_header_against_dns_rebinding() {
    let s = Scenario::new();
    let source = s.manifests_path().display().to_string();
    let c = Controller::start_with(&s, &source, &["--allowed-host", "status.example.com"]);
    let url = format!("http://127.0.0.1:{}/api/v1/status", c.port);
    eventually(&c, 30, "berth run answers", || {
        crate::http::get(&url, None).is_ok_and(|r| r.status == 200)
    });
    let evil = crate::http::get(&url, Some("evil.example")).unwrap();
    assert_eq!(evil.status, 421, "{}", evil.body);
    assert!(
        evil.body.contains("--allowed-host evil.example"),
        "{}",
        evil.body
    );
    let named = crate::http::get(&url, Some("status.example.com")).unwrap();
    assert_eq!(named.status, 200, "{}", named.body);
    let local = crate::http::get(&url, Some(&format!("localhost:{}", c.port))).unwrap();
    assert_eq!(local.status, 200, "{}", local.body);
}

/// `--token` shows in `ps`; `--token-file` and `BERTH_TOKEN` keep it out of every argv.
#[test]
fn the_status_token_can_be_given_without_putting_it_in_the_process_list() {
    let s = Scenario::new();
    let token = "st4tus-t0ken-q9";
    let file = s.state_path().join("status-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let source = s.manifests_path().display().to_string();
    let c = Controller::start_with(&s, &source, &["--token-file", file.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{}", c.port);
    eventually(&c, 30, "berth run answers", || {
        crate::http::get(&format!("{url}/healthz"), None).is_ok_and(|r| r.status == 200)
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", c.child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(token));
    assert_eq!(
        crate::http::get(&format!("{url}/api/v1/status"), None)
            .unwrap()
            .status,
        401
    );
    let status = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["status", "--url", &url, "-o", "json"])
            .args(args)
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_STATUS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = status(&["--token-file", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    let out = status(&[], &[("BERTH_TOKEN", token)]);
    assert!(out.status.success(), "{out:?}");
    let out = status(&[], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file PATH or set BERTH_TOKEN"),
        "{out:?}"
    );
}
