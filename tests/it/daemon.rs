//! A Docker daemon of the test's own, so that tests can make it a Swarm manager (or
//! serve it over TLS) without touching the host's daemon.
//!
//! It runs in network and mount namespaces of its own (`unshare -n -m`): its bridges,
//! iptables rules and swarm interfaces live and die there, and the host's `docker0` is
//! never touched (a daemon with `--bridge none` in the host's namespace deletes it). Its
//! configuration file is empty (the host's `/etc/docker/daemon.json` pins a data root),
//! and its data root, exec root, pid file and socket are under a directory named after
//! the test and this process. Dropping it stops the daemon, kills what it left running
//! (by pid, found by that directory in their command lines) and removes the directory.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::docker::text;

/// A running daemon of the test's own.
pub struct TestDaemon {
    dir: PathBuf,
    pid: u32,
    child: std::process::Child,
    /// `unix:///…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
}

/// Starts the daemon in its namespaces: loopback up, `/sys` of its network namespace
/// (so that its bridges can be configured) with the host's cgroups kept in it.
const START: &str = r#"set -e
d=$1; shift
[ -z "$BERTH_NODE_HOSTNAME" ] || hostname "$BERTH_NODE_HOSTNAME"
ip link set lo up
mkdir -p "$d/cgroup"
mount --rbind /sys/fs/cgroup "$d/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "$d/cgroup" /sys/fs/cgroup
exec dockerd --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" "$@"
"#;

impl TestDaemon {
    /// Starts a daemon for test `name` with `args` added to dockerd's (such as
    /// `--tlsverify` and a `tcp://` listener), and waits until it answers.
    pub fn start(name: &str, args: &[&str]) -> TestDaemon {
        TestDaemon::start_as(name, "", args)
    }

    /// Starts a daemon as [`TestDaemon::start`] does, on a machine named `hostname` (its
    /// own UTS namespace), when not empty.
    pub fn start_as(name: &str, hostname: &str, args: &[&str]) -> TestDaemon {
        // Short: a unix socket's path has at most 107 bytes.
        let dir = PathBuf::from(format!("/tmp/berth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        std::fs::write(dir.join("start.sh"), START).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-n", "-m", "-u", "--propagation", "private", "sh"])
            .env("BERTH_NODE_HOSTNAME", hostname)
            .arg(dir.join("start.sh"))
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare runs (util-linux)");
        let daemon = TestDaemon {
            host: format!("unix://{}", dir.join("docker.sock").display()),
            // `unshare` and `sh` exec into dockerd: the child is the daemon.
            pid: child.id(),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if daemon
                .docker(&["info", "--format", "{{.ID}}"])
                .status
                .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the test's dockerd does not answer; its log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    /// Starts a daemon and makes it the manager of a single-node swarm.
    pub fn swarm(name: &str) -> TestDaemon {
        let daemon = TestDaemon::start(name, &[]);
        let out = daemon.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(out.status.success(), "swarm init: {}", text(&out));
        daemon
    }

    /// What dockerd wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", &self.host])
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    /// Runs the docker CLI against this daemon and returns its trimmed output; fails
    /// the test when the command fails.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Copies `image` from the host's daemon (no registry is reachable).
    pub fn load(&self, image: &str) {
        let script = r#"docker save "$1" | docker -H "$2" load -q"#;
        let out = Command::new("sh")
            .args(["-c", script, "sh", image, &self.host])
            .output()
            .unwrap();
        assert!(out.status.success(), "loading {image}: {}", text(&out));
    }

    /// A command that runs `program` in the daemon's network namespace (where its
    /// `tcp://127.0.0.1` listener is).
    pub fn in_netns(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-n", program]);
        c
    }
}

impl TestDaemon {
    /// The daemon's process id (its namespaces are `/proc/<pid>/ns/…`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops the daemon as a machine going down would (its containers stop), leaving
    /// its directory.
    pub fn stop(&mut self) {
        let kill = |pid: u32, signal: &str| {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        // dockerd stops its containers and its containerd on SIGTERM.
        kill(self.pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever outlived it (a shim, a containerd) names this directory.
        let mark = self.dir.to_string_lossy().into_owned();
        for _ in 0..3 {
            let left = leftovers(&mark);
            if left.is_empty() {
                break;
            }
            for pid in left {
                kill(pid, "-KILL");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The processes whose command line names `mark`.
fn leftovers(mark: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(mark))
        })
        .collect()
}
