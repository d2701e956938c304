//! `berth apply [--dry-run]`: load, observe, plan, and (unless a dry run) converge.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::{self, ApplyOptions, Progress, Status};
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::drivers::proxy::ProxyDriver;
use berth::observe::{self, Observed};
use berth::plan::{self, PlanOptions};
use berth::statedir::StateDir;
use berth::{desired, manifest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::cli::{ApplyArgs, Format};

pub fn exec(args: &ApplyArgs, color: bool) -> anyhow::Result<ExitCode> {
    let manifests = match manifest::load_dir(&args.path) {
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
    let state = StateDir::new(&args.state_dir);
    let (desired, missing) =
        desired::build_lenient(&manifests, &state.secrets(), &manifests.digest);
    if !missing.is_empty() {
        let lines: Vec<String> = missing.iter().map(ToString::to_string).collect();
        if !(args.dry_run || args.offline) {
            bail!("{}\nnothing was applied", lines.join("\n"));
        }
        for line in lines {
            eprintln!("warning: {line}; the plan cannot show changes of its value");
        }
    }
    // Say plainly what this version does not converge yet, rather than skip it quietly.
    let unapplied: Vec<String> = [
        ("Database", manifests.databases.len()),
        ("Notifier", manifests.notifiers.len()),
        ("Workflow", manifests.workflows.len()),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {k}"))
    .collect();
    if !unapplied.is_empty() {
        eprintln!(
            "note: {} validated but not converged by apply in this version",
            unapplied.join(", ")
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(run(args, color, &manifests, desired, state))
}

async fn run(
    args: &ApplyArgs,
    color: bool,
    manifests: &manifest::Manifests,
    mut desired: desired::Desired,
    state: StateDir,
) -> anyhow::Result<ExitCode> {
    let settings = manifests.settings();
    let prune = settings.prune;
    let proxy = ProxyDriver::from_settings(&settings);
    let (docker, observed): (Option<Arc<dyn DockerApi>>, Observed) = if args.offline {
        (None, Observed::default())
    } else {
        let docker: Arc<dyn DockerApi> = Arc::new(BollardDocker::connect().await?);
        let mut observed = observe::observe(docker.as_ref(), &args.instance).await?;
        observed.applied_apps = state.applied().apps;
        (Some(docker), observed)
    };
    let mut observed = observed;
    if !args.offline {
        observed.proxy_files = proxy
            .observe()
            .context("failed to read the proxy's config directory")?;
    }
    let writes = !(args.dry_run || args.offline);
    let tokens = private_tokens(manifests, &state, writes)?;
    let tls_dir = state.path().join("tls");
    let secret_file = |name: &str| {
        tls_dir
            .join(format!("{name}.pem"))
            .to_string_lossy()
            .into_owned()
    };
    if writes {
        write_tls_secrets(manifests, &state, &tls_dir)?;
    }
    let listening = if args.offline {
        Default::default()
    } else {
        berth::ports::listening()
    };
    desired
        .add_routes(
            manifests,
            &observed,
            &listening,
            &tokens,
            &secret_file,
            &proxy,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = plan::plan(
        &desired,
        &observed,
        PlanOptions {
            prune: prune && !args.no_prune,
        },
    );
    let Some(docker) = docker.filter(|_| !args.dry_run) else {
        match args.output {
            Format::Text => print!("{}", plan::render_text(&plan, color)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
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
        print!("{}", plan::render_text(&plan, color));
    }
    let options = ApplyOptions {
        instance: args.instance.clone(),
        concurrency: args.concurrency,
        ready_timeout: Duration::from_secs(args.ready_timeout),
        proxy: proxy.clone(),
    };
    let printer = Printer::new(args.output == Format::Text);
    let on_progress: apply::OnProgress = Arc::new(move |p| printer.show(p));
    let report = apply::apply(&plan, &desired, docker, &options, on_progress).await;

    let mut applied = state.applied();
    applied.apps.retain(|a| desired.apps.contains_key(a));
    applied.apps.extend(report.converged_apps());
    if let Err(e) = state.save_applied(&applied) {
        tracing::warn!(
            "failed to record the applied apps in {}: {e}",
            state.path().display()
        );
    }

    let failures = report.failures();
    if args.output == Format::Text {
        for (domain, token) in &tokens {
            if let Some(route) = desired.routes.get(domain) {
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

    fn show(&self, p: Progress) {
        if !self.enabled {
            return;
        }
        match p {
            Progress::Started { target, name } => self.line(format!("{target} {name}: applying")),
            Progress::Waiting { container } => {
                self.line(format!("container {container}: waiting until ready"));
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

/// The tokens of private domains: generated once into the secret store when applying;
/// a dry run shows a placeholder for a token that does not exist yet.
fn private_tokens(
    manifests: &manifest::Manifests,
    state: &StateDir,
    generate: bool,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let store = state.secrets();
    let mut tokens = std::collections::BTreeMap::new();
    for (name, d) in &manifests.domains {
        if !d.spec.private {
            continue;
        }
        let secret = private_token_secret(name);
        let token = if generate {
            store.get_or_generate(&secret)?.expose().to_owned()
        } else {
            match store.get(&secret) {
                Ok(s) => s.expose().to_owned(),
                Err(_) => "token-generated-on-apply".to_owned(),
            }
        };
        tokens.insert(name.clone(), token);
    }
    Ok(tokens)
}

/// The secret holding a private domain's token.
fn private_token_secret(domain: &str) -> String {
    let name = format!("private-{domain}");
    if name.len() <= 63 {
        name
    } else {
        format!("private-{}", &berth::secrets::short_hash(domain))
    }
}

/// Writes certificates and keys kept as secrets to files the proxy can read (0600).
fn write_tls_secrets(
    manifests: &manifest::Manifests,
    state: &StateDir,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use berth::manifest::model::Tls;
    let store = state.secrets();
    for d in manifests.domains.values() {
        if let Tls::Secrets {
            certificate_secret,
            key_secret,
        } = &d.spec.tls
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            for name in [certificate_secret, key_secret] {
                let secret = store.get(name)?;
                let path = dir.join(format!("{name}.pem"));
                berth::fsutil::write_atomic_mode(&path, secret.expose().as_bytes(), Some(0o600))
                    .with_context(|| format!("failed to write {}", path.display()))?;
            }
        }
    }
    Ok(())
}
