//! Stopping an nginx a test started: its master and every worker, waited for, so that
//! no test leaves an nginx process behind (a master killed outright orphans its
//! workers, which keep their ports and run on after the test binary exits).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A directory for an nginx's prefix and files, named after this test process
/// (`berth-test-nginx-<pid>-…`): nginx's command line shows it, so a process left
/// behind says which run started it.
pub fn prefix_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("berth-test-nginx-{}-", std::process::id()))
        .tempdir()
        .unwrap()
}

/// The pids whose parent is `pid` (an nginx master's workers and cache processes).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `/proc/<pid>/stat`: "pid (comm) state ppid …"; comm may hold spaces.
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` still runs (a zombie has stopped: only its parent's wait is left).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .output();
}

/// Stops the nginx whose master is `master` and waits until it and its workers are
/// gone: SIGTERM (nginx's fast shutdown: the master stops its workers, then itself),
/// and SIGKILL for whatever still runs after ten seconds.
pub fn stop(master: u32) {
    let mut pids = children(master);
    pids.push(master);
    signal("TERM", master);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        if Instant::now() > deadline {
            for &p in pids.iter().filter(|&&p| alive(p)) {
                signal("KILL", p);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The master's pid from the `pid` file of a daemonized nginx. The process that was
/// started returns before its daemon writes the file: wait for it a little.
pub fn master_from(pid_file: &Path) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
