//! `berth workflow list|runs|run`: the workflows declared, their recorded runs, and a
//! run by hand — in the `berth run` serving the instance when there is one (a control
//! call with the status token), otherwise in this process under the same engine.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::ApplyOptions;
use berth::controller::workflows::run_recorded;
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::manifest::model::{Action, Trigger, WorkflowSpec};
use berth::manifest::{self, Manifests};
use berth::notify::{DeliveryOptions, Notifier, Target};
use berth::source::RevisionId;
use berth::state::StateDir;
use berth::state::presence::{self, Presence};
use berth::workflow::actions::Host;
use berth::workflow::engine::{RunContext, waves};
use berth::workflow::runs::{RunRecord, RunState, Runs};
use tokio::sync::watch;

use crate::cli::{Format, LockedState, WorkflowCommand, WorkflowRunArgs};

pub fn exec(command: &WorkflowCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkflowCommand::List { path, lock, output } => {
            let manifests = load(path, lock)?;
            let state = StateDir::new(&lock.state_dir, &lock.instance);
            let runs = Runs::read(&state);
            list(&manifests, &runs, *output)
        }
        WorkflowCommand::Runs {
            name,
            number,
            lock,
            output,
        } => {
            let state = StateDir::new(&lock.state_dir, &lock.instance);
            let runs = Runs::read(&state);
            let list = runs.list(name);
            let list: Vec<RunRecord> = match number {
                Some(n) => list.into_iter().filter(|r| r.number == *n).collect(),
                None => list,
            };
            if list.is_empty() {
                match number {
                    Some(n) => bail!(
                        "workflow `{name}` has no run {n} in {}",
                        state.path().display()
                    ),
                    None if *output == Format::Text => {
                        println!(
                            "workflow {name} has not run on instance {}",
                            state.instance()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                    None => {}
                }
            }
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                Format::Text => {
                    for run in &list {
                        print_run(run, number.is_some());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Run(args) => run(args),
    }
}

fn load(path: &Path, lock: &LockedState) -> anyhow::Result<Manifests> {
    let policy = super::host_policy(&lock.state_dir, lock.policy.as_deref())?;
    manifest::load_dir_with_policy(path, &policy).map_err(|d| {
        anyhow::anyhow!(
            "{d}{} problem{} in the manifests under {}",
            d.len(),
            if d.len() == 1 { "" } else { "s" },
            path.display()
        )
    })
}

fn spec<'a>(manifests: &'a Manifests, name: &str, path: &Path) -> anyhow::Result<&'a WorkflowSpec> {
    match manifests.workflows.get(name) {
        Some(w) => Ok(&w.spec),
        None => {
            let declared: Vec<&str> = manifests.workflows.keys().map(String::as_str).collect();
            bail!(
                "no Workflow `{name}` under {}; declared: {}",
                path.display(),
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            )
        }
    }
}

fn list(manifests: &Manifests, runs: &Runs, output: Format) -> anyhow::Result<ExitCode> {
    let latest = runs.latest();
    if output == Format::Json {
        let items: Vec<_> = manifests
            .workflows
            .iter()
            .map(|(name, w)| {
                serde_json::json!({
                    "name": name,
                    "triggers": w.spec.triggers.iter().map(trigger_text).collect::<Vec<_>>(),
                    "nodes": w.spec.nodes.len(),
                    "lastRun": latest.get(name),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if manifests.workflows.is_empty() {
        println!("no workflows declared");
    }
    for (name, w) in &manifests.workflows {
        let triggers: Vec<String> = w.spec.triggers.iter().map(trigger_text).collect();
        let last = latest
            .get(name)
            .map(|r| format!("run {} {} ({})", r.number, r.state.as_str(), r.started))
            .unwrap_or_else(|| "never run".into());
        println!(
            "{name:<24} {:>2} nodes  on {:<40} {last}",
            w.spec.nodes.len(),
            triggers.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::RevisionApplied => "revisionApplied".into(),
        Trigger::AppDeployed { app } => format!("appDeployed {app}"),
        Trigger::AppFailed { app } => format!("appFailed {app}"),
        Trigger::Schedule { cron } => format!("schedule {}", cron.as_str()),
        Trigger::Manual => "manual".into(),
    }
}

fn run(args: &WorkflowRunArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(&args.host.lock.state_dir, &args.host.lock.instance);
    if !args.dry_run {
        if let Some(controller) = presence::find(&state) {
            return remote(args, &state, &controller);
        }
    }
    let manifests = load(&args.path, &args.host.lock)?;
    let spec = spec(&manifests, &args.name, &args.path)?.clone();
    if args.dry_run {
        print!("{}", dry_run(&manifests, &args.name, &spec));
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let record = runtime.block_on(in_process(args, state, manifests, spec))?;
    show(&record, args.output)?;
    Ok(exit(&record))
}

async fn in_process(
    args: &WorkflowRunArgs,
    state: StateDir,
    manifests: Manifests,
    spec: WorkflowSpec,
) -> anyhow::Result<RunRecord> {
    let docker: Arc<dyn DockerApi> = Arc::new(BollardDocker::connect().await?);
    let notifier = Notifier::start(DeliveryOptions::default());
    let secrets = state.secrets();
    let mut targets = Vec::new();
    for (name, n) in &manifests.notifiers {
        match Target::from_spec(name, &n.spec, &secrets) {
            Ok(t) => targets.push(t),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    notifier.set_targets(targets);
    let revision = RevisionId::content(manifests.digest.clone());
    let apply = ApplyOptions {
        instance: args.host.lock.instance.clone(),
        concurrency: args.host.concurrency,
        ready_timeout: Duration::from_secs(args.host.ready_timeout),
        ..ApplyOptions::default()
    };
    let manifests = Arc::new(manifests);
    let host = Arc::new(Host::new(
        &args.host.lock.instance,
        state.clone(),
        docker,
        manifests,
        revision.clone(),
        apply,
        args.host.lock.lock_timeout,
        notifier.clone(),
        &args.name,
    ));
    let runs = Runs::open(&state);
    let nodes: Vec<String> = spec.nodes.iter().map(|n| n.name.clone()).collect();
    let number = runs.begin(&args.name, "manual", revision.as_str(), &nodes);
    let (cancel, cancelled) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping the run");
            let _ = cancel.send(true);
        }
    });
    let context = RunContext {
        workflow: args.name.clone(),
        revision: revision.short().to_owned(),
        trigger: "manual".into(),
    };
    run_recorded(&spec, context, host, &runs, number, cancelled).await;
    notifier.flush(Duration::from_secs(10)).await;
    runs.get(&args.name, number)
        .context("the run was not recorded")
}

/// Starts the run in the controller; with `--wait`, follows it to its end.
fn remote(
    args: &WorkflowRunArgs,
    state: &StateDir,
    controller: &Presence,
) -> anyhow::Result<ExitCode> {
    let base = format!("http://{}", controller.listen);
    let token = super::status::bearer_token(args.token.as_deref(), args.token_file.as_deref())?;
    let Some(token) = &token else {
        bail!(
            "berth run (pid {}) serves instance {} at {base}: starting a workflow there needs \
             its status token; set BERTH_TOKEN or pass --token-file",
            controller.pid,
            state.instance()
        );
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{base}/api/v1/workflows/{}/runs", args.name);
    let response = client
        .post(&url)
        .bearer_auth(token)
        .send()
        .with_context(|| format!("failed to reach berth run at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .bytes()
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if !status.is_success() {
        bail!(
            "berth run at {base} refused the run ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    let number = body["number"]
        .as_u64()
        .context("berth run answered without a run number")?;
    if !args.wait {
        match args.output {
            Format::Json => println!("{body}"),
            Format::Text => println!(
                "started run {number} of workflow {} in berth run (pid {}); follow it with \
                 `berth workflow runs {} --number {number}`",
                args.name, controller.pid, args.name
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let record = loop {
        let bytes = client
            .get(format!("{url}/{number}"))
            .bearer_auth(token)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .with_context(|| format!("failed to follow run {number} at {base}"))?;
        let run: RunRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("berth run at {base} answered an unreadable run"))?;
        if run.state != RunState::Running {
            break run;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    show(&record, args.output)?;
    Ok(exit(&record))
}

fn show(record: &RunRecord, output: Format) -> anyhow::Result<()> {
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(record)?),
        Format::Text => print_run(record, true),
    }
    Ok(())
}

fn exit(record: &RunRecord) -> ExitCode {
    match record.state {
        RunState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// A run as a person reads it: a line for the run, one per node, and with `logs` the
/// end of each node's log.
fn print_run(run: &RunRecord, logs: bool) {
    let short: String = run.revision.chars().take(12).collect();
    println!(
        "workflow {} run {} ({}, revision {short}, started {}): {}{}",
        run.workflow,
        run.number,
        run.trigger,
        run.started,
        run.state.as_str(),
        run.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    for node in &run.nodes {
        let mark = match node.state.as_str() {
            "succeeded" => "✓",
            "skipped" | "pending" => "-",
            "running" => "…",
            _ => "✗",
        };
        let took = if node.attempts > 0 {
            format!("{:.1}s", node.took_ms as f64 / 1000.0)
        } else {
            String::new()
        };
        let attempts = if node.attempts > 1 {
            format!(" ({} attempts)", node.attempts)
        } else {
            String::new()
        };
        println!(
            "  {mark} {:<20} {:<10} {took:>7}{attempts}  {}",
            node.name,
            node.state,
            node.message.as_deref().unwrap_or("")
        );
        if logs && !node.log.is_empty() {
            let lines: Vec<&str> = node.log.lines().collect();
            for line in &lines[lines.len().saturating_sub(20)..] {
                println!("      | {}", manifest::syntax::shown(line));
            }
        }
    }
}

/// The order the nodes would start in, each node resolved against the manifests.
fn dry_run(manifests: &Manifests, name: &str, spec: &WorkflowSpec) -> String {
    let mut out = format!(
        "workflow {name}: {} nodes, timeout {}; nothing is done (--dry-run)\n",
        spec.nodes.len(),
        spec.timeout
    );
    for (i, wave) in waves(spec).iter().enumerate() {
        out.push_str(&format!("step {}:\n", i + 1));
        for node_name in wave {
            let Some(node) = spec.nodes.iter().find(|n| &n.name == node_name) else {
                continue;
            };
            out.push_str(&format!("  {node_name}: {}", describe(manifests, node)));
            let mut notes = Vec::new();
            if !node.needs.is_empty() {
                notes.push(format!("after {}", node.needs.join(", ")));
            }
            if node.when == berth::manifest::model::When::Always {
                notes.push("runs whatever its needs' outcome".to_owned());
            }
            if node.retries > 0 {
                notes.push(format!(
                    "{} retries from {}",
                    node.retries, node.retry_delay
                ));
            }
            notes.push(format!("timeout {}", node.timeout));
            out.push_str(&format!(" [{}]\n", notes.join("; ")));
        }
    }
    out
}

fn describe(manifests: &Manifests, node: &berth::manifest::model::Node) -> String {
    let app = |a: &str| match manifests.apps.get(a) {
        Some(r) => format!(
            "app {a} (image {}, container {})",
            r.spec.image,
            berth::desired::container_name(a, 1)
        ),
        None => format!("app {a} (not declared)"),
    };
    if let Some(action) = &node.action {
        return match action {
            Action::Deploy { app: a } => format!("deploy {}", app(a)),
            Action::Restart { app: a } => format!("restart {}", app(a)),
            Action::Exec { app: a, command } => format!(
                "exec `{}` in {}",
                manifest::syntax::shown(&command.join(" ")),
                app(a)
            ),
            Action::Backup { database } => match manifests.databases.get(database) {
                Some(d) => format!(
                    "back up database {database} ({:?}, {})",
                    d.spec.engine,
                    match &d.spec.server {
                        Some(s) => format!("on server {s}"),
                        None => "managed container".to_owned(),
                    }
                )
                .to_lowercase(),
                None => format!("back up database {database}"),
            },
            Action::Http {
                url,
                method,
                expect_status,
                ..
            } => format!(
                "{method} {} (expects {})",
                manifest::syntax::shown(url),
                expect_status.map_or("a 2xx status".to_owned(), |s| s.to_string())
            ),
        };
    }
    if let Some(c) = &node.condition {
        return format!(
            "if `{}` then [{}] else [{}]",
            c.expr,
            c.then.join(", "),
            c.otherwise.join(", ")
        );
    }
    if let Some(n) = &node.notify {
        return format!(
            "notify {} with \"{}\"",
            n.notifier,
            manifest::syntax::shown(&n.message)
        );
    }
    if let Some(r) = &node.rollback {
        return format!("roll back {} to its previous spec", app(&r.app));
    }
    "nothing".into()
}
