//! `runtime: swarm` against a real single-node swarm: a Docker daemon the test starts
//! in namespaces of its own and makes a swarm manager (the host's daemon is left alone),
//! with the test image copied in. The apps use `endpointMode: dnsrr`: this machine's
//! kernel has no IPVS, which Swarm's virtual IPs and ingress need.

use std::fs;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::TestDaemon;
use crate::docker::{docker, image, test_policy, text};

const SECRET: &str = "swarm-s3cr3t-41c7";
const SECRET_TWO: &str = "swarm-s3cr3t-9e02";

/// One berth instance against a test daemon: its manifests, state dir and names.
struct SwarmScenario {
    daemon: TestDaemon,
    prefix: String,
    manifests: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl SwarmScenario {
    fn new(name: &str) -> SwarmScenario {
        static N: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "sw{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let daemon = TestDaemon::swarm(name);
        daemon.load(image());
        let state = tempfile::tempdir().unwrap();
        fs::create_dir(state.path().join("secrets")).unwrap();
        fs::write(state.path().join("secrets/api-token"), SECRET).unwrap();
        fs::write(state.path().join("policy.yaml"), test_policy(state.path())).unwrap();
        let s = SwarmScenario {
            daemon,
            prefix,
            manifests: tempfile::tempdir().unwrap(),
            state,
        };
        s.write(
            "settings.yaml",
            &format!(
                "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: \
                 {{runtime: swarm, network: {}-net, proxy: {{kind: none}}}}\n",
                s.prefix
            ),
        );
        s
    }

    fn name(&self, app: &str) -> String {
        format!("{}-{app}", self.prefix)
    }

    fn write(&self, file: &str, content: &str) {
        fs::write(self.manifests.path().join(file), content).unwrap();
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg(self.manifests.path())
            .args(["--state-dir", self.state.path().to_str().unwrap()])
            .args(["--instance", &self.prefix, "--ready-timeout", "60"])
            .env("DOCKER_HOST", &self.daemon.host)
            .env_remove("RUST_LOG")
            .output()
            .expect("berth runs")
    }

    fn apply(&self) -> String {
        let out = self.berth(&["apply", "--color", "never"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "apply failed:\n{t}");
        assert!(!t.contains(SECRET) && !t.contains(SECRET_TWO), "{t}");
        t
    }

    fn dry_run(&self) -> (Option<i32>, String) {
        let out = self.berth(&["apply", "--dry-run", "--exit-code", "--color", "never"]);
        (out.status.code(), text(&out))
    }

    fn service(&self, app: &str) -> Value {
        let out = self
            .daemon
            .docker_ok(&["service", "inspect", &self.name(app)]);
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    }

    /// The tasks Swarm wants running, with their state.
    fn running_tasks(&self, app: &str) -> Vec<String> {
        let out = self.daemon.docker_ok(&[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
            &self.name(app),
        ]);
        out.lines().map(str::to_owned).collect()
    }

    fn secrets(&self) -> Vec<String> {
        let out = self
            .daemon
            .docker_ok(&["secret", "ls", "--format", "{{.Name}}"]);
        let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
        names.sort();
        names
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A container on the overlay network that asks `url` every 100 ms and says `ok` or
/// `fail` for each request: the count of requests a rolling update lost.
struct Client<'a> {
    daemon: &'a TestDaemon,
    name: String,
}

impl<'a> Client<'a> {
    fn start(daemon: &'a TestDaemon, name: String, network: &str, url: &str) -> Client<'a> {
        // `timeout`, not wget's own `-T`, which crashes the static busybox of the image.
        let script = "while :; do if timeout 2 wget -q -O /dev/null \"$1\"; then echo ok; \
                      else echo fail; fi; sleep 0.1; done";
        daemon.docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            image(),
            "sh",
            "-c",
            script,
            "sh",
            url,
        ]);
        Client { daemon, name }
    }

    /// Requests answered, and requests lost, so far.
    fn counts(&self) -> (usize, usize) {
        let out = self.daemon.docker(&["logs", &self.name]);
        let log = String::from_utf8_lossy(&out.stdout);
        let ok = log.lines().filter(|l| *l == "ok").count();
        let fail = log.lines().filter(|l| *l == "fail").count();
        (ok, fail)
    }
}

impl Drop for Client<'_> {
    fn drop(&mut self) {
        self.daemon.docker(&["rm", "-f", &self.name]);
    }
}

#[test]
fn apps_run_as_services_roll_over_without_losing_a_request_and_swarm_rolls_back_a_broken_image() {
    let s = SwarmScenario::new("swarm1");
    let web = s.name("web");
    let app = |page: &str, image: &str| {
        format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {web}}}\nspec:\n  image: {image}\n  \
             replicas: 2\n  endpointMode: dnsrr\n  env: {{PAGE: {page}}}\n  secretEnv: {{TOKEN: \
             api-token}}\n  port: 80\n  volumes: [{{name: data, mount: /data}}]\n  health: {{http: /, \
             interval: 1s, timeout: 1s, retries: 2}}\n  resources: {{cpus: 0.5, memory: 64Mi, \
             reservations: {{memory: 8Mi}}}}\n  placement: {{constraints: [node.role==manager], \
             preferences: [{{spread: node.labels.zone}}]}}\n  labels: {{team: web}}\n"
        )
    };
    s.write("web.yaml", &app("one", image()));
    let out = s.apply();
    assert!(
        out.contains(&format!(
            "+ create app {web}: new app ({}) as a Swarm service of 2 tasks",
            image()
        )),
        "{out}"
    );

    // The service as declared.
    let svc = s.service("web");
    let spec = &svc["Spec"];
    let labels = &spec["Labels"];
    assert_eq!(labels["berth.managed"], "true");
    assert_eq!(labels["berth.instance"], s.prefix);
    assert_eq!(labels["berth.kind"], "app");
    assert_eq!(labels["berth.spec-hash"].as_str().unwrap().len(), 64);
    assert_eq!(labels["team"], "web");
    assert!(!spec.to_string().contains(SECRET), "{spec}");
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(spec["EndpointSpec"]["Mode"], "dnsrr");
    let update = &spec["UpdateConfig"];
    assert_eq!(update["Order"], "start-first");
    assert_eq!(update["FailureAction"], "rollback");
    assert_eq!(update["Parallelism"], 1);
    assert!(
        update["Monitor"].as_i64().unwrap() >= 5_000_000_000,
        "{update}"
    );
    assert_eq!(spec["RollbackConfig"]["Order"], "start-first");
    let task = &spec["TaskTemplate"];
    assert_eq!(
        task["Placement"]["Constraints"],
        serde_json::json!(["node.role==manager"])
    );
    assert_eq!(
        task["Placement"]["Preferences"][0]["Spread"]["SpreadDescriptor"],
        "node.labels.zone"
    );
    assert_eq!(task["Resources"]["Limits"]["MemoryBytes"], 64 * 1024 * 1024);
    assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 500_000_000);
    assert_eq!(
        task["Resources"]["Reservations"]["MemoryBytes"],
        8 * 1024 * 1024
    );
    assert_eq!(task["RestartPolicy"]["Condition"], "any");
    let container = &task["ContainerSpec"];
    assert!(
        container["Env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("PAGE=one"))
    );
    assert_eq!(container["Mounts"][0]["Source"], format!("{web}-data"));
    assert_eq!(container["Mounts"][0]["Target"], "/data");
    let secret = container["Secrets"][0]["SecretName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with(&format!("{web}.TOKEN.")), "{secret}");
    assert_eq!(container["Secrets"][0]["File"]["Name"], "TOKEN");
    assert_eq!(container["Healthcheck"]["Test"][0], "CMD");

    // Both tasks run, and the process got the secret in its environment.
    s.wait_until("two tasks run", || {
        let tasks = s.running_tasks("web");
        tasks.len() == 2 && tasks.iter().all(|t| t.starts_with("Running"))
    });
    let ids = s.daemon.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={web}"),
    ]);
    let first = ids.lines().next().unwrap();
    let environ = s
        .daemon
        .docker_ok(&["exec", first, "cat", "/proc/1/environ"]);
    assert!(
        environ.split('\0').any(|v| v == format!("TOKEN={SECRET}")),
        "the task's process has TOKEN: {environ:?}"
    );

    // A second dry run is in sync.
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the host is in sync"), "{out}");
    assert!(
        out.contains(&format!("keep app {web}: 2/2 tasks running on ")),
        "{out}"
    );

    // An env change: a start-first rolling update; no request is lost.
    let net = format!("{}-net", s.prefix);
    let client = Client::start(&s.daemon, s.name("client"), &net, &format!("http://{web}/"));
    s.wait_until("the client gets answers", || client.counts().0 >= 10);
    s.write("web.yaml", &app("two", image()));
    let out = s.apply();
    assert!(
        out.contains(&format!("~ update app {web}: env PAGE changed")),
        "{out}"
    );
    let svc = s.service("web");
    assert_eq!(svc["UpdateStatus"]["State"], "completed", "{svc}");
    let before = client.counts();
    s.wait_until("the client asks again", || {
        client.counts().0 >= before.0 + 10
    });
    let (ok, lost) = client.counts();
    assert_eq!(
        lost, 0,
        "requests lost during the rolling update ({ok} answered)"
    );
    eprintln!("rolling update: {ok} requests answered, {lost} lost");

    // A broken image: Swarm rolls the update back, the old tasks keep serving.
    let broken = format!("berth-test/broken:{}", s.prefix);
    let build = Command::new("sh")
        .args([
            "-c",
            "printf 'FROM %s\\nCMD [\"sh\", \"-c\", \"echo this version is broken >&2; exit 3\"]\\n' \"$1\" | docker build -q -t \"$2\" - >/dev/null",
            "sh",
            image(),
            &broken,
        ])
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    s.daemon.load(&broken);
    docker(&["rmi", &broken]);
    s.write("web.yaml", &app("two", &broken));
    let out = s.berth(&["apply", "--color", "never"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "app {web}: FAILED: Swarm rolled the update of service {web} back (rollback completed"
        )),
        "{t}"
    );
    assert!(t.contains("non-zero exit (3)"), "{t}");
    let svc = s.service("web");
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        image(),
        "the previous spec runs"
    );
    let before = client.counts();
    s.wait_until("the old tasks answer", || {
        client.counts().0 >= before.0 + 10
    });
    let (ok, lost) = client.counts();
    assert_eq!(lost, 0, "the old tasks kept serving ({ok} answered)");
    drop(client);
    s.write("web.yaml", &app("two", image()));
    s.apply();

    // Scaled by hand: scaled back.
    s.daemon
        .docker_ok(&["service", "scale", "--detach", &format!("{web}=4")]);
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "~ update app {web}: replicas 4 → 2 (scaled by hand, drift)"
        )),
        "{out}"
    );
    s.apply();
    assert_eq!(
        s.service("web")["Spec"]["Mode"]["Replicated"]["Replicas"],
        2
    );

    // A new secret value: a new Swarm secret, the old one removed.
    fs::write(s.state.path().join("secrets/api-token"), SECRET_TWO).unwrap();
    let out = s.apply();
    assert!(out.contains("secret TOKEN changed"), "{out}");
    let secrets = s.secrets();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_ne!(secrets[0], secret);
    assert!(secrets[0].starts_with(&format!("{web}.TOKEN.")));

    // Removed from the manifests: the service and its secret go, the volume stays.
    fs::remove_file(s.manifests.path().join("web.yaml")).unwrap();
    let out = s.apply();
    assert!(
        out.contains(&format!("- delete app {web}: no longer declared")),
        "{out}"
    );
    assert!(
        !s.daemon
            .docker(&["service", "inspect", &web])
            .status
            .success()
    );
    assert!(s.secrets().is_empty());
    let volumes = s.daemon.docker_ok(&["volume", "ls", "-q"]);
    assert!(
        volumes.lines().any(|v| v == format!("{web}-data")),
        "{volumes}"
    );
}

#[test]
fn status_shows_where_tasks_run_and_a_service_whose_task_keeps_failing_as_degraded() {
    use crate::run::{Controller, eventually};
    let s = SwarmScenario::new("swarm2");
    let (web, crash) = (s.name("web"), s.name("crash"));
    s.write(
        "apps.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {web}}}\nspec:\n  image: {img}\n  \
             replicas: 2\n  endpointMode: dnsrr\n---\napiVersion: berth/v1\nkind: App\nmetadata: \
             {{name: {crash}}}\nspec:\n  image: {img}\n  endpointMode: dnsrr\n  command: [sh, -c, \
             \"echo crashing >&2; exit 4\"]\n",
            img = image()
        ),
    );
    let host = s.daemon.docker_ok(&["info", "--format", "{{.Name}}"]);
    let source = s.manifests.path().display().to_string();
    let c = Controller::spawn(
        &source,
        s.state.path(),
        &s.prefix,
        &[],
        &[("DOCKER_HOST", &s.daemon.host)],
    );
    eventually(&c, 90, "the status shows where web's tasks run", || {
        let r = c.api(&format!("/api/v1/resources/App/{web}"));
        r["tasks"]["running"] == 2
            && r["tasks"]["desired"] == 2
            && r["tasks"]["nodes"][&host] == 2
            && r["conditions"][0]["status"] == true
    });
    eventually(
        &c,
        120,
        "the crashing app is degraded with its task's error",
        || {
            let r = c.api(&format!("/api/v1/resources/App/{crash}"));
            let ready = &r["conditions"][0];
            ready["status"] == false
                && ready["reason"] == "Degraded"
                && ready["message"].as_str().is_some_and(|m| {
                    m.contains(&format!(
                        "0/1 tasks running: task {crash}.1 failed: task: non-zero exit (4)"
                    ))
                })
        },
    );
    // `berth status` says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["status", "--url", &format!("http://127.0.0.1:{}", c.port)])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains(&format!("App/{web}"))
            && t.contains(&format!("2/2 tasks running on {host} (2)")),
        "{t}"
    );
    assert!(t.contains("non-zero exit (4)"), "{t}");
}

/// A stand-in for the postgres image (no registry), copied into `daemons`: its
/// pg_dump says what berth ran, and whether the password reached its environment.
/// Returns the version (the image's tag).
pub(crate) fn postgres_standin(prefix: &str, daemons: &[&TestDaemon]) -> String {
    let version = format!("16-berthtest-{prefix}");
    let tag = format!("postgres:{version}");
    let ctx = tempfile::tempdir().unwrap();
    let scripts = [
        ("pg_isready", "#!/bin/sh\nexit 0\n"),
        (
            "pg_dump",
            "#!/bin/sh\necho \"PGDMP stand-in dump: $* password:${POSTGRES_PASSWORD:+set}\"\n",
        ),
    ];
    let mut dockerfile = format!("FROM {}\n", image());
    for (name, body) in scripts {
        fs::write(ctx.path().join(name), body).unwrap();
        dockerfile.push_str(&format!("COPY {name} /usr/local/bin/{name}\n"));
    }
    dockerfile.push_str(
        "RUN [\"/bin/chmod\", \"755\", \"/usr/local/bin/pg_isready\", \"/usr/local/bin/pg_dump\"]\n",
    );
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let built = docker(&["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()]);
    assert!(built.status.success(), "{}", text(&built));
    for d in daemons {
        d.load(&tag);
    }
    docker(&["rmi", &tag]);
    version
}

#[test]
fn a_managed_database_is_a_pinned_service_linked_over_the_overlay_network_and_dumped_in_its_task() {
    let s = SwarmScenario::new("swarm3");
    let (pg, web) = (s.name("pg"), s.name("web"));
    let node = s.daemon.docker_ok(&["node", "ls", "-q"]);
    s.daemon
        .docker_ok(&["node", "update", "--label-add", "berth-db=main", &node]);
    let version = postgres_standin(&s.prefix, &[&s.daemon]);
    s.write(
        "data.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Database\nmetadata: {{name: {pg}}}\nspec:\n  engine: \
             postgres\n  version: {version}\n  placement: {{constraints: \
             [node.labels.berth-db==main]}}\n---\napiVersion: berth/v1\nkind: App\nmetadata: \
             {{name: {web}}}\nspec:\n  image: {img}\n  endpointMode: dnsrr\n  databases: [{pg}]\n",
            img = image()
        ),
    );
    let out = s.apply();
    assert!(
        out.contains(&format!("+ create network {}-net-db: new internal attachable overlay network for managed databases", s.prefix)),
        "{out}"
    );
    let db = s.service("pg");
    assert_eq!(
        db["Spec"]["TaskTemplate"]["Placement"]["Constraints"],
        serde_json::json!(["node.labels.berth-db==main"])
    );
    assert_eq!(db["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    assert_eq!(db["Spec"]["Labels"]["berth.kind"], "database");
    let net: Value = serde_json::from_str(&s.daemon.docker_ok(&[
        "network",
        "inspect",
        &format!("{}-net-db", s.prefix),
    ]))
    .unwrap();
    assert_eq!(net[0]["Driver"], "overlay");
    assert_eq!(net[0]["Internal"], true);
    assert_eq!(net[0]["Attachable"], true);

    // The app has the link in its process's environment, and reaches the database by
    // name over the internal overlay network.
    let user = pg.replace('-', "_");
    let password =
        fs::read_to_string(s.state.path().join(format!("secrets/db-{pg}-password"))).unwrap();
    let task = s.daemon.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={web}"),
    ]);
    let environ = s
        .daemon
        .docker_ok(&["exec", &task, "cat", "/proc/1/environ"]);
    let env: Vec<&str> = environ.split('\0').collect();
    assert!(env.contains(&format!("DB_HOST={pg}").as_str()), "{env:?}");
    assert!(
        env.contains(
            &format!("DATABASE_URL=postgres://{user}:{password}@{pg}:5432/{user}").as_str()
        ),
        "{env:?}"
    );
    let page = s.daemon.docker_ok(&[
        "exec",
        &task,
        "timeout",
        "5",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{pg}/"),
    ]);
    assert!(!page.is_empty());

    // A backup runs in the database's task, on this node, with its secrets loaded.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["backup", "run", &pg])
        .arg(s.manifests.path())
        .args(["--state-dir", s.state.path().to_str().unwrap()])
        .args(["--instance", &s.prefix])
        .env("DOCKER_HOST", &s.daemon.host)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = s.state.path().join("backups").join(&pg);
    let dump = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    assert_eq!(
        fs::read_to_string(dump).unwrap(),
        format!("PGDMP stand-in dump: -Fc -U {user} {user} password:set\n")
    );
}

/// A proxy in the swarm (nginx here; Traefik reaches apps the same way) joins the
/// overlay network and reaches each app by its service name; the same Domain manifests
/// as on one host.
#[test]
fn a_proxy_on_the_overlay_network_reaches_apps_by_service_name() {
    let s = SwarmScenario::new("swarm4");
    let network = format!("{}-net", s.prefix);
    // The proxy's network exists before berth: apps join it, berth leaves it alone.
    s.daemon.docker_ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        &network,
    ]);
    let nginx_image = format!("berth-test/nginx:{}", s.prefix);
    let out = Command::new("bash")
        .arg(crate::root().join("tests/image/build-nginx.sh"))
        .arg(&nginx_image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    s.daemon.load(&nginx_image);
    docker(&["rmi", &nginx_image]);
    let dir = crate::nginx::nginx_in_docker_dir();
    let p = dir.path().display().to_string();
    let proxy = format!("{}-proxy", s.prefix);
    s.daemon.docker_ok(&[
        "run",
        "-d",
        "--name",
        &proxy,
        "--network",
        &network,
        "-v",
        &format!("{p}:{p}"),
        &nginx_image,
        "-c",
        &format!("{p}/nginx.conf"),
    ]);
    let exec = |args: &str| format!("[docker, exec, {proxy}, /usr/sbin/nginx, {args}]");
    s.write(
        "settings.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec:\n  runtime: swarm\n  \
             network: {network}\n  proxy:\n    kind: nginx\n    upstream: network\n    configDir: \
             {p}/conf.d\n    mainConfig: {p}/nginx.conf\n    test: {}\n    reload: {}\n    listen: \
             {{http: 8080, https: 8443}}\n",
            exec("-t"),
            exec(&format!("-c, {p}/nginx.conf, -s, reload"))
        ),
    );
    let web = s.name("web");
    s.write(
        "web.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {web}}}\nspec:\n  image: {}\n  \
             port: 80\n  replicas: 2\n  endpointMode: dnsrr\n  env: {{PAGE: by-service}}\n---\n\
             apiVersion: berth/v1\nkind: Domain\nmetadata: {{name: {web}}}\nspec:\n  app: {web}\n  \
             hosts: [named.example.test]\n",
            image()
        ),
    );
    let out = s.apply();
    assert!(
        out.contains(&format!("new route named.example.test at / → {web}:80")),
        "{out}"
    );
    assert!(
        !out.contains("create network"),
        "the proxy's network is joined as it is: {out}"
    );
    let svc = s.service("web");
    assert!(
        svc["Spec"]["EndpointSpec"]["Ports"].is_null(),
        "no port published: {svc}"
    );
    // Asked from the overlay network, as a client of the proxy would.
    let page = s.daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        &network,
        image(),
        "timeout",
        "10",
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Host: named.example.test",
        &format!("http://{proxy}:8080/cgi-bin/env"),
    ]);
    assert!(page.contains("PAGE=by-service"), "{page}");
    s.daemon.docker(&["rm", "-f", &proxy]);
}
