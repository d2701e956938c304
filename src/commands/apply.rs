//! `berth apply [--dry-run]`: load, observe, plan, and (unless a dry run) converge.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::{self, ApplyOptions, Progress, Status};
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::manifest;
use berth::plan;
use berth::reconcile::{self, PassOptions};
use berth::state::StateDir;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::{ApplyArgs, Format};

pub fn exec(args: &ApplyArgs, color: bool) -> anyhow::Result<ExitCode> {
    let lock = &args.host.lock;
    let policy = super::host_policy(&lock.state_dir, lock.policy.as_deref())?;
    let manifests = match manifest::load_dir_with_policy(&args.path, &policy) {
        Ok(m) => m,
        Err(d) => {
            print!("{d}");
            bail!(
                "{} problem{} in the manifests; nothing was applied",
                d.len(),
                if d.len() == 1 { "" } else { "s" }
            );
        }
    };
    if args.exit_code && !args.dry_run && !args.offline {
        bail!("--exit-code goes with --dry-run");
    }
    let state = StateDir::new(&args.host.lock.state_dir, &args.host.lock.instance);
    // Workflows are not part of a convergence: say where they run.
    if !manifests.workflows.is_empty() && !args.dry_run {
        eprintln!(
            "note: apply does not start workflows; `berth run` runs them on their triggers, \
             `berth workflow run NAME` by hand"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(run(args, color, &manifests, state))
}

async fn run(
    args: &ApplyArgs,
    color: bool,
    manifests: &manifest::Manifests,
    state: StateDir,
) -> anyhow::Result<ExitCode> {
    let docker: Option<Arc<dyn DockerApi>> = if args.offline {
        None
    } else {
        Some(Arc::new(BollardDocker::connect().await?))
    };
    let options = PassOptions {
        instance: args.host.lock.instance.clone(),
        apply: !(args.dry_run || args.offline),
        no_prune: args.no_prune,
    };
    // One writer per instance: planned and applied under the lock, so the plan is made
    // from what the previous writer left. A dry run changes nothing and takes none.
    let _lock = match options.apply {
        true => Some(super::lock(&state, "apply", args.host.lock.lock_timeout).await?),
        false => None,
    };
    let prepared = reconcile::prepare(
        manifests,
        &manifests.digest,
        &state,
        docker.as_deref(),
        &options,
    )
    .await?;
    for missing in &prepared.missing_secrets {
        eprintln!("warning: {missing}; the plan cannot show changes of its value");
    }
    let plan = &prepared.plan;
    let Some(docker) = docker.filter(|_| options.apply) else {
        match args.output {
            Format::Text => print!("{}", plan::render_text(plan, color)),
            Format::Json => println!("{}", serde_json::to_string_pretty(plan)?),
        }
        let code = match (args.exit_code, plan.summary) {
            (false, _) => 0,
            (true, s) if s.conflicts > 0 => 1,
            (true, s) if s.has_changes() => 2,
            (true, _) => 0,
        };
        return Ok(ExitCode::from(code));
    };

    if args.output == Format::Text {
        print!("{}", plan::render_text(plan, color));
    }
    let apply_options = ApplyOptions {
        instance: args.host.lock.instance.clone(),
        concurrency: args.host.concurrency,
        ready_timeout: Duration::from_secs(args.host.ready_timeout),
        ..ApplyOptions::default()
    };
    let printer = Printer::new(args.output == Format::Text);
    let on_progress: apply::OnProgress = Arc::new(move |p| printer.show(p));
    let report = reconcile::execute(&prepared, &state, docker, apply_options, on_progress).await;

    let failures = report.failures();
    if args.output == Format::Text {
        for (domain, token) in &prepared.tokens {
            if let Some(route) = prepared.desired.routes.get(domain) {
                println!(
                    "Domain/{domain}: private URL http://{}/p/{token}/",
                    route.hosts[0]
                );
            }
        }
    }
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "report": report}))?
        ),
        Format::Text => {
            let done = report
                .outcomes
                .iter()
                .filter(|o| o.result == Status::Done)
                .count();
            println!("Applied: {done} changed, {failures} failed.");
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows apply's progress: bars for image pulls on a terminal, plain lines otherwise.
struct Printer {
    enabled: bool,
    terminal: bool,
    bars: MultiProgress,
    pulls: Mutex<std::collections::BTreeMap<String, ProgressBar>>,
}

impl Printer {
    fn new(enabled: bool) -> Printer {
        Printer {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            bars: MultiProgress::new(),
            pulls: Mutex::new(Default::default()),
        }
    }

    fn line(&self, text: String) {
        if self.terminal {
            let _ = self.bars.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// A build's output: on a terminal a spinner showing its last line, otherwise each
    /// line as it comes, prefixed with the app.
    fn build(&self, app: String, output: &str) {
        let lines = output
            .lines()
            .map(|l| berth::manifest::syntax::escape_control(l.trim_end()).into_owned())
            .filter(|l| !l.trim().is_empty());
        if !self.terminal {
            for line in lines {
                eprintln!("build {app} | {line}");
            }
            return;
        }
        let mut bars = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(app.clone()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} build {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(app);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        for line in lines {
            if line.starts_with("Step ") {
                bar.println(format!("build {}: {line}", bar.prefix()));
            }
            bar.set_message(line);
        }
    }

    fn show(&self, p: Progress) {
        if !self.enabled {
            return;
        }
        match p {
            Progress::Started { target, name } => self.line(format!("{target} {name}: applying")),
            Progress::Waiting { container } => {
                self.line(format!("container {container}: waiting until ready"));
            }
            Progress::WaitingForTasks { service } => {
                self.line(format!("service {service}: waiting until its tasks run"));
            }
            Progress::Pull {
                app,
                image,
                progress,
            } => {
                let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
                let bar = pulls.entry(app).or_insert_with(|| {
                    if self.terminal {
                        let bar = self.bars.add(ProgressBar::new(progress.total.max(1)));
                        bar.set_style(
                            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        bar.set_message(format!("pulling {image}"));
                        bar
                    } else {
                        eprintln!("pulling {image}");
                        ProgressBar::hidden()
                    }
                });
                if progress.total > 0 {
                    bar.set_length(progress.total);
                    bar.set_position(progress.current);
                }
            }
            Progress::Build { app, output } => self.build(app, &output),
            Progress::Finished(o) => {
                if let Some(bar) = self
                    .pulls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&o.name)
                {
                    bar.finish_and_clear();
                }
                let text = match &o.result {
                    Status::Unchanged => return,
                    Status::Done => "done".to_owned(),
                    Status::Failed(m) => format!("FAILED: {m}"),
                    Status::Skipped(m) => format!("skipped: {m}"),
                    Status::Conflict(m) => format!("conflict: {m}"),
                };
                self.line(format!("{} {}: {text}", o.target, o.name));
            }
        }
    }
}
