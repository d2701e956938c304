//! Loads and validates 2,000 documents from disk (budget: under 1 s on two cores), then
//! 1 MiB files written to be as slow as possible (many keys, deep nesting, long
//! strings; budget: under 1 s each), and plans over 10,000 resources that are all in
//! sync (budget: under 50 ms).
//!
//! `cargo bench --bench load` prints the median and slowest of several runs.

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

const APPS: usize = 800;
const DOMAINS: usize = 600;
const DATABASES: usize = 400;
const NOTIFIERS: usize = 100;
const WORKFLOWS: usize = 99;
const FILES: usize = 200;
const RUNS: usize = 9;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let docs = write_corpus(dir.path());
    // One untimed run warms the schema validators and the file cache.
    let manifests = berth::manifest::load_dir(dir.path()).expect("the corpus is valid");
    assert_eq!(manifests.len(), docs);

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let m = berth::manifest::load_dir(dir.path()).expect("the corpus is valid");
            let elapsed = start.elapsed();
            assert_eq!(m.len(), docs);
            elapsed
        })
        .collect();
    times.sort();
    let median = times[RUNS / 2];
    let max = times[RUNS - 1];
    println!(
        "load+validate {docs} documents in {FILES} files: median {:.1} ms, slowest {:.1} ms \
         ({RUNS} runs; budget 1000 ms)",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    worst_case_files();
    plan_10k();
}

/// A file just under the 1 MiB limit: the App header, then `body` repeated to fill it.
fn fill(head: &str, body: impl Fn(usize) -> String) -> String {
    let limit = berth::manifest::MAX_FILE_BYTES as usize;
    let mut text = head.to_owned();
    for i in 0.. {
        let next = body(i);
        if text.len() + next.len() > limit {
            break;
        }
        text.push_str(&next);
    }
    text
}

/// Loads and validates single 1 MiB files shaped to hit the slow paths: a mapping of
/// as many keys as fit (valid, and as unknown fields), nesting to the depth limit over
/// and over, and one long string.
fn worst_case_files() {
    const HEAD: &str = "apiVersion: berth/v1\nkind: App\nmetadata: {name: blog}\nspec:\n  \
                        image: ghost:5.2\n";
    let deep = |i: usize| format!("  x{i}: {}1{}\n", "[".repeat(62), "]".repeat(62));
    let cases: [(&str, String, bool); 5] = [
        (
            "env keys",
            fill(&format!("{HEAD}  env:\n"), |i| format!("    K{i}: v\n")),
            true,
        ),
        (
            "unknown fields",
            fill(HEAD, |i| format!("  x{i}: v\n")),
            false,
        ),
        ("top-level keys", fill("", |i| format!("k{i:x}:\n")), false),
        ("lists nested 63 deep", fill(HEAD, deep), false),
        (
            "a 1 MiB string",
            fill(&format!("{HEAD}  env:\n    LONG: "), |_| "x".to_owned()),
            true,
        ),
    ];
    for (name, text, valid) in cases {
        let files = [berth::manifest::SourceFile {
            path: "big.yaml".to_owned(),
            text,
        }];
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let result = berth::manifest::load_files(&files);
                let elapsed = start.elapsed();
                assert_eq!(result.is_ok(), valid, "{name}");
                elapsed
            })
            .collect();
        times.sort();
        println!(
            "load+validate a {} KiB file of {} lines, {name}: median {:.1} ms, slowest {:.1} ms \
             ({RUNS} runs; budget 1000 ms)",
            files[0].text.len() / 1024,
            files[0].text.lines().count(),
            times[RUNS / 2].as_secs_f64() * 1e3,
            times[RUNS - 1].as_secs_f64() * 1e3
        );
    }
}

/// Plans 9,999 apps plus their network, every one already running as declared.
fn plan_10k() {
    use berth::observe::{Observed, ObservedContainer};
    use berth::plan::{PlanOptions, plan};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let apps = 9_999;
    for f in 0..100 {
        let docs: Vec<String> = (f * 100..(f * 100 + 100).min(apps))
            .map(|i| {
                format!(
                    "apiVersion: berth/v1\nkind: App\nmetadata: {{name: app-{i}}}\nspec:\n  image: registry.example.com/app:{i}\n  \
                     env: {{MODE: production}}\n  port: 8080\n"
                )
            })
            .collect();
        fs::write(dir.path().join(format!("p{f:03}.yaml")), docs.join("---\n")).expect("write");
    }
    let manifests = berth::manifest::load_dir(dir.path()).expect("valid");
    let store = berth::state::secrets::SecretStore::new(dir.path());
    let desired = berth::desired::build(&manifests, &store, "bench").expect("no secrets");
    let mut observed = Observed::default();
    observed.networks.insert(desired.network.clone());
    observed.containers = desired
        .apps
        .values()
        .map(|a| ObservedContainer {
            id: format!("id-{}", a.name),
            name: a.name.clone(),
            app: a.name.clone(),
            replica: 1,
            hash: a.hash.clone(),
            spec: Some(a.spec.clone()),
            state: "running".into(),
            deletion_policy: Default::default(),
            kind: a.kind.to_owned(),
            host_port: None,
        })
        .collect();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let p = plan(
                &desired,
                &observed,
                PlanOptions {
                    prune: true,
                    now: 0,
                },
            );
            let elapsed = start.elapsed();
            assert!(!p.summary.has_changes());
            assert_eq!(p.summary.unchanged, apps + 1);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "plan over {} resources, all in sync: median {:.1} ms, slowest {:.1} ms ({RUNS} runs; budget 50 ms)",
        apps + 1,
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3
    );
}

/// Writes a realistic mix of every kind; returns the number of documents.
fn write_corpus(dir: &std::path::Path) -> usize {
    let mut docs: Vec<String> = Vec::new();
    docs.push(
        "apiVersion: berth/v1\nkind: Settings\nmetadata: {name: host}\nspec:\n  servers:\n    \
         main-pg: {engine: postgres, host: 127.0.0.1, adminUser: postgres, adminPasswordSecret: pg-admin}\n"
            .to_owned(),
    );
    for i in 0..DATABASES {
        docs.push(format!(
            "apiVersion: berth/v1\nkind: Database\nmetadata: {{name: db-{i}}}\nspec:\n  engine: postgres\n  \
             mode: {}\n{}  backup: {{schedule: \"0 3 * * *\", keep: 7}}\n",
            if i % 2 == 0 { "managed" } else { "shared" },
            if i % 2 == 0 { "" } else { "  server: main-pg\n" },
        ));
    }
    for i in 0..APPS {
        let mut d = format!(
            "apiVersion: berth/v1\nkind: App\nmetadata:\n  name: app-{i}\n  labels: {{team: t{}}}\nspec:\n  \
             image: registry.example.com/team/app-{i}:1.{i}\n  port: 8080\n  env:\n    MODE: production\n    \
             WORKERS: 4\n  secretEnv: {{TOKEN: token-{i}}}\n  volumes: [{{name: data, mount: /data}}]\n  \
             health: {{http: /healthz, interval: 10s}}\n  resources: {{cpus: 0.5, memory: 256Mi}}\n",
            i % 7
        );
        let mut needs = Vec::new();
        if i < DATABASES {
            let _ = writeln!(d, "  databases: [db-{i}]");
            needs.push(format!("db-{i}"));
        }
        if i % 10 != 0 {
            needs.push(format!("app-{}", i - 1));
        }
        if !needs.is_empty() {
            let _ = writeln!(d, "  dependsOn: [{}]", needs.join(", "));
        }
        docs.push(d);
    }
    for i in 0..DOMAINS {
        docs.push(format!(
            "apiVersion: berth/v1\nkind: Domain\nmetadata: {{name: site-{i}}}\nspec:\n  hosts: [site-{i}.example.com, \
             www.site-{i}.example.com]\n  app: app-{i}\n  tls: {{acme: true}}\n  headers: {{X-Frame-Options: DENY}}\n"
        ));
    }
    for i in 0..NOTIFIERS {
        docs.push(format!(
            "apiVersion: berth/v1\nkind: Notifier\nmetadata: {{name: chat-{i}}}\nspec: {{type: slack, urlSecret: slack-{i}}}\n"
        ));
    }
    for i in 0..WORKFLOWS {
        docs.push(format!(
            "apiVersion: berth/v1\nkind: Workflow\nmetadata: {{name: wf-{i}}}\nspec:\n  triggers: [{{on: appDeployed, app: app-{i}}}]\n  \
             nodes:\n    - {{name: check, action: {{http: {{url: \"https://site-{i}.example.com/\"}}}}}}\n    \
             - name: verdict\n      needs: [check]\n      condition: {{if: check.failed, then: [undo, tell]}}\n    \
             - {{name: undo, rollback: {{app: app-{i}}}}}\n    \
             - {{name: tell, needs: [undo], notify: {{notifier: chat-{}, message: \"{{{{workflow}}}} rolled back\"}}}}\n",
            i % NOTIFIERS
        ));
    }
    let total = docs.len();
    for (f, chunk) in docs.chunks(total.div_ceil(FILES)).enumerate() {
        fs::write(dir.join(format!("m{f:03}.yaml")), chunk.join("---\n"))
            .expect("write a manifest");
    }
    total
}
