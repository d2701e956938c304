//! `berth run`: the controller, until SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::ApplyOptions;
use berth::controller::{Controller, ControllerOptions};
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::source::dir::DirSource;
use berth::statedir::StateDir;
use berth::status::{self, StatusStore};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::RunArgs;

pub fn exec(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let root = Path::new(&args.source);
    if args.source.contains("://") || args.source.ends_with(".git") {
        bail!(
            "--source {}: only directory sources are supported by this version; clone the \
             repository and point --source at the clone",
            args.source
        );
    }
    if !root.exists() {
        bail!("--source {}: no such directory", args.source);
    }
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async {
        let docker: Arc<dyn DockerApi> = Arc::new(BollardDocker::connect().await?);
        let (stop, stopped) = watch::channel(false);
        let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down after the current pass");
            let _ = stop.send(true);
        });
        let options = ControllerOptions {
            instance: args.host.instance.clone(),
            apply: ApplyOptions {
                instance: args.host.instance.clone(),
                concurrency: args.host.concurrency,
                ready_timeout: Duration::from_secs(args.host.ready_timeout),
                ..ApplyOptions::default()
            },
            debounce: Duration::from_millis(300),
        };
        let status = StatusStore::open(&args.host.state_dir);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        let server = axum::serve(listener, status::http::app(status.clone(), args.token.clone()));
        let mut server_stop = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.changed().await;
            };
            if let Err(e) = server.with_graceful_shutdown(shutdown).await {
                tracing::error!("status server failed: {e}");
            }
        });
        tracing::info!(source = %root.display(), instance = %args.host.instance, listen = %args.listen, "berth run");
        Controller::new(
            DirSource::new(root),
            StateDir::new(&args.host.state_dir),
            docker,
            options,
            status,
        )
        .run(stopped)
        .await
        .context("failed to watch the source")?;
        Ok(ExitCode::SUCCESS)
    })
}
