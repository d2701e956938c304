//! Reconcile benchmarks against the real Docker daemon, 100 apps of the busybox test
//! image, each figure beside its reference measured in the same run:
//!
//! - first converge of 100 apps (`berth apply`) vs `docker run -d`, 8 at a time;
//! - a no-op pass (observe + plan) over 100 apps, with the Docker API calls counted,
//!   vs a no-op `docker-compose up -d` over the same 100 services;
//! - the planner alone over 100 apps.
//!
//! `cargo bench --bench reconcile` (needs Docker, docker-compose and busybox-static).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth::apply::{self, ApplyOptions};
use berth::drivers::docker::{
    BollardDocker, ContainerConfig, ContainerInfo, ContainerState, DockerApi, DockerError,
    EventStream, NetworkInfo, PullProgress, VolumeInfo,
};
use berth::observe;
use berth::plan::{self, PlanOptions};
use berth::state::secrets::SecretStore;
use berth::{desired, manifest};

const APPS: usize = 100;
const IMAGE: &str = "berth-test/busybox:latest";
const INSTANCE: &str = "bench";
const RUNS: usize = 15;

/// Counts every call that reaches the daemon.
struct Counting {
    inner: BollardDocker,
    calls: AtomicUsize,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl DockerApi for Counting {
    async fn ping(&self) -> Result<(), DockerError> {
        self.tick();
        self.inner.ping().await
    }
    async fn list_containers(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        self.tick();
        self.inner.list_containers().await
    }
    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, DockerError> {
        self.tick();
        self.inner.list_networks().await
    }
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DockerError> {
        self.tick();
        self.inner.list_volumes().await
    }
    async fn create_network(
        &self,
        n: &str,
        l: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), DockerError> {
        self.tick();
        self.inner.create_network(n, l, internal).await
    }
    async fn remove_network(&self, n: &str) -> Result<(), DockerError> {
        self.tick();
        self.inner.remove_network(n).await
    }
    async fn create_volume(
        &self,
        n: &str,
        l: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        self.tick();
        self.inner.create_volume(n, l).await
    }
    async fn remove_volume(&self, n: &str) -> Result<(), DockerError> {
        self.tick();
        self.inner.remove_volume(n).await
    }
    async fn image_exists(&self, i: &str) -> Result<bool, DockerError> {
        self.tick();
        self.inner.image_exists(i).await
    }
    async fn pull_image(
        &self,
        i: &str,
        p: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), DockerError> {
        self.tick();
        self.inner.pull_image(i, p).await
    }
    async fn create_container(&self, c: &ContainerConfig) -> Result<String, DockerError> {
        self.tick();
        self.inner.create_container(c).await
    }
    async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.tick();
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str, t: i32) -> Result<(), DockerError> {
        self.tick();
        self.inner.stop_container(id, t).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        self.tick();
        self.inner.remove_container(id).await
    }
    async fn rename_container(&self, id: &str, n: &str) -> Result<(), DockerError> {
        self.tick();
        self.inner.rename_container(id, n).await
    }
    async fn container_state(&self, id: &str) -> Result<ContainerState, DockerError> {
        self.tick();
        self.inner.container_state(id).await
    }
    fn container_events(&self, label: &str) -> EventStream {
        self.inner.container_events(label)
    }
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&std::path::Path>,
        stdout: Option<&std::path::Path>,
    ) -> Result<u64, DockerError> {
        self.tick();
        self.inner.exec(container, cmd, stdin, stdout).await
    }

    async fn exec_output(
        &self,
        container: &str,
        cmd: &[String],
        out: &(dyn for<'b> Fn(&'b [u8]) + Send + Sync),
    ) -> Result<i64, DockerError> {
        self.tick();
        self.inner.exec_output(container, cmd, out).await
    }

    async fn restart_container(&self, id: &str, timeout_secs: i32) -> Result<(), DockerError> {
        self.tick();
        self.inner.restart_container(id, timeout_secs).await
    }
}

fn sh(script: &str) -> Duration {
    let start = Instant::now();
    // No standard input: docker-compose waits on a terminal it does not need.
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("bash runs");
    assert!(status.success(), "failed: {script}");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn cleanup() {
    sh(&format!(
        "docker ps -aq --filter label=berth.instance={INSTANCE} | xargs -r docker rm -f >/dev/null; \
         docker ps -aq --filter name=^benchrun- | xargs -r docker rm -f >/dev/null; \
         docker-compose -p berthbench -f /tmp/berth-bench-compose.yml down >/dev/null 2>&1 || true; \
         docker network rm berth-bench >/dev/null 2>&1 || true"
    ));
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    sh(&format!(
        "bash {root}/tests/image/build.sh {IMAGE} 2>/dev/null"
    ));
    cleanup();

    // The reference for a first converge: `docker run -d`, 8 at a time.
    let run_loop = sh(&format!(
        "seq 1 {APPS} | xargs -P 8 -I{{}} docker run -d --name benchrun-{{}} {IMAGE} >/dev/null"
    ));
    sh("docker ps -aq --filter name=^benchrun- | xargs -r docker rm -f >/dev/null");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut text = String::from(
        "apiVersion: berth/v1\nkind: Settings\nmetadata: {name: host}\nspec: {network: berth-bench}\n",
    );
    for i in 0..APPS {
        text.push_str(&format!(
            "---\napiVersion: berth/v1\nkind: App\nmetadata: {{name: bench-{i:03}}}\nspec:\n  image: {IMAGE}\n  \
             env: {{INDEX: {i}}}\n  port: 80\n"
        ));
    }
    std::fs::write(dir.path().join("apps.yaml"), text).expect("write the manifests");
    let manifests = manifest::load_dir(dir.path()).expect("valid manifests");
    let desired = desired::build(&manifests, &SecretStore::new(dir.path()), &manifests.digest)
        .expect("no secrets needed");
    let options = PlanOptions {
        prune: true,
        now: 0,
    };

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let docker = Arc::new(Counting {
        inner: runtime
            .block_on(BollardDocker::connect())
            .expect("a Docker daemon"),
        calls: AtomicUsize::new(0),
    });

    // First converge.
    let start = Instant::now();
    let report = runtime.block_on(async {
        let observed = observe::observe(docker.as_ref(), INSTANCE)
            .await
            .expect("observe");
        let plan = plan::plan(&desired, &observed, options);
        let apply_options = ApplyOptions {
            instance: INSTANCE.to_owned(),
            ..ApplyOptions::default()
        };
        apply::apply(
            &plan,
            &desired,
            docker.clone(),
            &apply_options,
            Arc::new(|_| {}),
        )
        .await
    });
    let converge = start.elapsed();
    assert_eq!(report.failures(), 0, "{report:?}");

    // No-op passes.
    let mut passes = Vec::new();
    let mut calls = Vec::new();
    let mut plans = Vec::new();
    for _ in 0..RUNS {
        let before = docker.calls.load(Ordering::SeqCst);
        let start = Instant::now();
        let observed = runtime
            .block_on(observe::observe(docker.as_ref(), INSTANCE))
            .expect("observe");
        let plan_start = Instant::now();
        let plan = plan::plan(&desired, &observed, options);
        plans.push(plan_start.elapsed());
        passes.push(start.elapsed());
        calls.push(docker.calls.load(Ordering::SeqCst) - before);
        assert!(
            !plan.summary.has_changes(),
            "a no-op pass planned changes: {}",
            plan.summary
        );
    }

    // The same 100 services with docker-compose: created once, then timed no-op runs.
    let mut compose = String::from("version: '3'\nservices:\n");
    for i in 0..APPS {
        compose.push_str(&format!(
            "  bench-{i:03}:\n    image: {IMAGE}\n    environment:\n      INDEX: '{i}'\n"
        ));
    }
    std::fs::write("/tmp/berth-bench-compose.yml", compose).expect("write the compose file");
    let up = "docker-compose -p berthbench -f /tmp/berth-bench-compose.yml up -d >/dev/null 2>&1";
    // Created ten services at a time: compose 1.29 stalls creating 100 at once here.
    for batch in 0..APPS.div_ceil(10) {
        let services: Vec<String> = (batch * 10..(batch * 10 + 10).min(APPS))
            .map(|i| format!("bench-{i:03}"))
            .collect();
        sh(&format!(
            "{} {}",
            up.trim_end_matches(" >/dev/null 2>&1"),
            services.join(" ")
        ));
    }
    let compose_runs: Vec<Duration> = (0..3).map(|_| sh(up)).collect();

    cleanup();

    let pass = median(passes);
    let compose_noop = median(compose_runs);
    println!("reconcile benchmark, {APPS} apps of {IMAGE}");
    println!(
        "  first converge:      {} (docker run -d, 8 at a time: {}; ratio {:.2}; budget 1.2)",
        ms(converge),
        ms(run_loop),
        converge.as_secs_f64() / run_loop.as_secs_f64()
    );
    println!(
        "  no-op pass:          {} median of {RUNS} (budget 100 ms), {} Docker API calls (budget 5)",
        ms(pass),
        calls.iter().max().copied().unwrap_or(0)
    );
    println!(
        "  plan alone:          {} median (budget 5 ms)",
        ms(median(plans))
    );
    println!(
        "  docker-compose up -d no-op: {} median of 3; berth is {:.0}x faster (budget 10x)",
        ms(compose_noop),
        compose_noop.as_secs_f64() / pass.as_secs_f64()
    );
}
