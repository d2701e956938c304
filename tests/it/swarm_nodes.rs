//! `runtime: swarm` on a swarm of three nodes: three Docker daemons the test starts,
//! each in network, mount and UTS namespaces of its own (`node-1`, the manager berth
//! talks to, and two workers), joined by a bridge in a network namespace of the test's
//! own, the private network Swarm's overlay runs over. Placement lands tasks on the
//! labelled nodes, a managed database pinned to one node serves an app on another
//! through the overlay network, a backup says where a task runs when it cannot reach
//! it, and a worker whose daemon stops has its tasks moved, as berth's status shows.

use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::daemon::TestDaemon;
use crate::docker::{image, test_policy, text};
use crate::run::{Controller, eventually};

/// Three nodes on a private network: `node-1` (manager), `node-2`, `node-3`.
struct Nodes {
    nodes: Vec<TestDaemon>,
    switch: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out));
}

impl Nodes {
    fn start() -> Nodes {
        let switch = format!("berth-sw{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &switch]).output();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        let mut nodes = Nodes {
            nodes: Vec::new(),
            switch,
        };
        for i in 1..=3 {
            let daemon = TestDaemon::start_as(&format!("node{i}"), &format!("node-{i}"), &[]);
            let port = format!("n{i}");
            let pid = daemon.pid().to_string();
            ip(&[
                "link",
                "add",
                "name",
                &port,
                "netns",
                &nodes.switch,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pid,
            ]);
            ip(&["-n", &nodes.switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &nodes.switch, "link", "set", &port, "up"]);
            let address = format!("192.168.77.{i}/24");
            for args in [
                vec!["addr", "add", address.as_str(), "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
            ] {
                let out = daemon.in_netns("ip").args(&args).output().unwrap();
                assert!(out.status.success(), "{}", text(&out));
            }
            daemon.load(image());
            nodes.nodes.push(daemon);
        }
        let manager = &nodes.nodes[0];
        manager.docker_ok(&["swarm", "init", "--advertise-addr", "192.168.77.1"]);
        let token = manager.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        for (i, node) in nodes.nodes.iter().enumerate().skip(1) {
            let address = format!("192.168.77.{}", i + 1);
            node.docker_ok(&[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &address,
                "192.168.77.1:2377",
            ]);
        }
        nodes
    }

    fn manager(&self) -> &TestDaemon {
        &self.nodes[0]
    }

    /// The host names of the nodes the service's running tasks are on, sorted.
    fn nodes_of(&self, service: &str) -> Vec<String> {
        let out = self.manager().docker_ok(&[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
            service,
        ]);
        let mut nodes: Vec<String> = out
            .lines()
            .filter(|l| l.contains(" Running"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .output();
    }
}

#[test]
fn on_three_nodes_placement_holds_a_database_serves_another_node_and_a_stopped_worker_is_shown() {
    let mut cluster = Nodes::start();
    let prefix = format!("sn{}", std::process::id());
    let (pg, far, api, web) = (
        format!("{prefix}-pg"),
        format!("{prefix}-far"),
        format!("{prefix}-api"),
        format!("{prefix}-web"),
    );
    let manager = cluster.manager();
    for (node, label) in [("node-1", "berth-db=main"), ("node-2", "tier=edge")] {
        manager.docker_ok(&["node", "update", "--label-add", label, node]);
    }
    let daemons: Vec<&TestDaemon> = cluster.nodes.iter().collect();
    let version = crate::swarm::postgres_standin(&prefix, &daemons);
    let (manifests, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(state.path().join("policy.yaml"), test_policy(state.path())).unwrap();
    let db = |name: &str, constraint: &str| {
        format!(
            "apiVersion: berth/v1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  engine: \
             postgres\n  version: {version}\n  placement: {{constraints: [\"{constraint}\"]}}\n---\n"
        )
    };
    fs::write(
        manifests.path().join("all.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: {{runtime: \
             swarm, network: {prefix}-net, proxy: {{kind: none}}}}\n---\n{}{}apiVersion: \
             berth/v1\nkind: App\nmetadata: {{name: {api}}}\nspec:\n  image: {img}\n  replicas: \
             2\n  endpointMode: dnsrr\n  databases: [{pg}]\n  placement: {{constraints: \
             [node.labels.tier==edge]}}\n---\napiVersion: berth/v1\nkind: App\nmetadata: \
             {{name: {web}}}\nspec:\n  image: {img}\n  replicas: 3\n  endpointMode: dnsrr\n  \
             placement: {{maxReplicasPerNode: 2}}\n",
            db(&pg, "node.labels.berth-db==main"),
            db(&far, "node.hostname==node-3"),
            img = image()
        ),
    )
    .unwrap();
    let berth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg(manifests.path())
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(["--instance", &prefix])
            .env("DOCKER_HOST", &manager.host)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = berth(&["apply", "--ready-timeout", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Placement: the tasks are on the nodes their constraints name.
    assert_eq!(cluster.nodes_of(&api), ["node-2", "node-2"]);
    assert_eq!(cluster.nodes_of(&pg), ["node-1"]);
    assert_eq!(cluster.nodes_of(&far), ["node-3"]);

    // The app on node-2 has the database of node-1 in its environment, and reaches it
    // by name through the overlay network.
    let node2 = &cluster.nodes[1];
    let task = node2.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={api}"),
    ]);
    let task = task.lines().next().unwrap();
    let environ = node2.docker_ok(&["exec", task, "cat", "/proc/1/environ"]);
    assert!(
        environ
            .split('\0')
            .any(|v| v.starts_with("DATABASE_URL=postgres://")
                && v.contains(&format!("@{pg}:5432/"))),
        "{environ:?}"
    );
    let page = node2.docker_ok(&[
        "exec",
        task,
        "timeout",
        "10",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{pg}/"),
    ]);
    assert!(!page.is_empty());

    // A backup runs where berth's daemon can reach the task, and says why not elsewhere.
    let backup = |db: &str| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["backup", "run", db])
            .arg(manifests.path())
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(["--instance", &prefix])
            .env("DOCKER_HOST", &manager.host)
            .output()
            .unwrap()
    };
    let out = backup(&pg);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = backup(&far);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "Database/{far}: the task of service {far} runs on node node-3, and the Docker \
             daemon berth talks to is node node-1"
        )),
        "{t}"
    );

    // berth run shows where web's tasks run; a worker's daemon stops: Swarm moves its
    // tasks, and the status says so.
    let c = Controller::spawn(
        &manifests.path().display().to_string(),
        state.path(),
        &prefix,
        &[],
        &[("DOCKER_HOST", &manager.host)],
    );
    let tasks_of =
        |name: &str| -> Value { c.api(&format!("/api/v1/resources/App/{name}"))["tasks"].clone() };
    eventually(&c, 60, "the status shows web on three nodes", || {
        let t = tasks_of(&web);
        t["running"] == 3 && t["nodes"].as_object().is_some_and(|n| n.len() >= 2)
    });
    let before = tasks_of(&web);
    eprintln!("web before: {before}");
    let started = std::time::Instant::now();
    cluster.nodes[2].stop();
    eventually(
        &c,
        120,
        "web's tasks are moved off node-3 and the status shows it",
        || {
            let t = tasks_of(&web);
            t["running"] == 3
                && t["nodes"]
                    .as_object()
                    .is_some_and(|n| !n.contains_key("node-3") && !n.is_empty())
        },
    );
    eprintln!(
        "web after node-3 stopped ({:?}): {}",
        started.elapsed(),
        tasks_of(&web)
    );
    // The database pinned to node-3 cannot move: not ready, and the status says why.
    eventually(&c, 30, "the database pinned to node-3 is degraded", || {
        let r = c.api(&format!("/api/v1/resources/Database/{far}"));
        r["conditions"][0]["status"] == false
            && r["conditions"][0]["reason"] == "Degraded"
            && r["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("0/1 tasks running: node node-3 is down"))
    });
    eprintln!(
        "far: {}",
        c.api(&format!("/api/v1/resources/Database/{far}"))["conditions"][0]["message"]
    );
}
