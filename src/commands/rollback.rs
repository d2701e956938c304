//! `berth rollback APP [--to REVISION] | --release APP`: pin an app to an earlier spec
//! (or release its pin) and converge, under the instance's lock.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::{ApplyOptions, Status};
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::manifest;
use berth::plan::{self, hold::PinChange};
use berth::reconcile::{self, PassOptions, PinnedBy};
use berth::source::RevisionId;
use berth::state::StateDir;

use crate::cli::{Format, RollbackArgs};

pub fn exec(args: &RollbackArgs, color: bool) -> anyhow::Result<ExitCode> {
    let lock = &args.host.lock;
    let policy = super::host_policy(&lock.state_dir, lock.policy.as_deref())?;
    let manifests = match manifest::load_dir_with_policy(&args.path, &policy) {
        Ok(m) => m,
        Err(d) => {
            print!("{d}");
            bail!(
                "{} problem{} in the manifests; nothing was rolled back",
                d.len(),
                if d.len() == 1 { "" } else { "s" }
            );
        }
    };
    let state = StateDir::new(&args.host.lock.state_dir, &args.host.lock.instance);
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(run(args, color, &manifests, state))
}

async fn run(
    args: &RollbackArgs,
    color: bool,
    manifests: &manifest::Manifests,
    state: StateDir,
) -> anyhow::Result<ExitCode> {
    let docker: Arc<dyn DockerApi> = Arc::new(BollardDocker::connect().await?);
    let options = PassOptions {
        instance: args.host.lock.instance.clone(),
        apply: !args.dry_run,
        no_prune: false,
    };
    let revision = manifests.digest.as_str();
    let change = match args.release {
        true => PinChange::Release {
            app: args.app.clone(),
        },
        false => PinChange::Pin {
            app: args.app.clone(),
            to: args.to.clone(),
            by: PinnedBy::Hand,
        },
    };
    if args.dry_run {
        let prepared = reconcile::prepare_rollback(
            manifests,
            revision,
            &state,
            Some(docker.as_ref()),
            &options,
            &change,
        )
        .await?;
        match args.output {
            Format::Text => print!("{}", plan::render_text(&prepared.plan, color)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&prepared.plan)?),
        }
        return Ok(ExitCode::SUCCESS);
    }

    let doing = if args.release { "release" } else { "rollback" };
    let _lock = super::lock(&state, doing, args.host.lock.lock_timeout).await?;
    let apply = ApplyOptions {
        instance: args.host.lock.instance.clone(),
        concurrency: args.host.concurrency,
        ready_timeout: Duration::from_secs(args.host.ready_timeout),
        ..ApplyOptions::default()
    };
    let app = args.app.as_str();
    let done = match args.release {
        true => reconcile::release(manifests, revision, &state, docker, &options, apply, app).await,
        false => {
            let to = args.to.as_deref();
            reconcile::rollback(
                manifests,
                revision,
                &state,
                docker,
                &options,
                apply,
                app,
                to,
                PinnedBy::Hand,
            )
            .await
        }
    }?;
    let report = &done.report;
    let failures = report.failures();
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"held": done.held, "plan": done.plan, "report": report})
            )?
        ),
        Format::Text => {
            print!("{}", plan::render_text(&done.plan, color));
            for o in &report.outcomes {
                let text = match &o.result {
                    Status::Unchanged | Status::Done => continue,
                    Status::Failed(m) => format!("FAILED: {m}"),
                    Status::Skipped(m) => format!("skipped: {m}"),
                    Status::Conflict(m) => format!("conflict: {m}"),
                };
                println!("{} {}: {text}", o.target, o.name);
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            match (&done.held, failures) {
                (Some(held), 0) => println!(
                    "Rolled back app {app} to revision {}: it stays there until a revision \
                     changes its declared spec, or `berth rollback --release {app}`.",
                    RevisionId::read(held).short()
                ),
                (None, 0) => println!("Released app {app}: it runs its declared spec."),
                (_, n) => println!("{n} action{} failed.", if n == 1 { "" } else { "s" }),
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
