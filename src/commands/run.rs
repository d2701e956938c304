//! `berth run`: the controller, until SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth::apply::ApplyOptions;
use berth::controller::{Controller, ControllerOptions};
use berth::drivers::docker::{BollardDocker, DockerApi};
use berth::notify::{DeliveryOptions, Notifier};
use berth::source::Source;
use berth::source::dir::DirSource;
use berth::source::git::{GitSource, GitSpec};
use berth::state::StateDir;
use berth::state::secrets::SecretError;
use berth::status::http::GitHook;
use berth::status::{self, StatusStore};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::RunArgs;

pub fn exec(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let lock = &args.host.lock;
    let policy = Arc::new(super::host_policy(&lock.state_dir, lock.policy.as_deref())?);
    let state = StateDir::new(&args.host.lock.state_dir, &args.host.lock.instance);
    let secrets = state.secrets();
    // A secret that is not there is fine (no token, no webhook); one that cannot be
    // read is an error worth stopping for.
    let optional = |name: &str| match secrets.get(name) {
        Ok(s) => Ok(Some(s)),
        Err(SecretError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let source = if GitSpec::is_git(&args.source) {
        let spec = GitSpec::parse(&args.source)?;
        let token = optional(&args.git_token_secret)?;
        Source::Git(Arc::new(GitSource::new(
            spec,
            &args.host.lock.state_dir,
            token,
        )))
    } else {
        let root = Path::new(&args.source);
        if !root.exists() {
            bail!(
                "--source {}: no such directory; give a directory of manifests or a Git URL",
                args.source
            );
        }
        // berth's own writes into the state dir would each start a pass.
        let (canonical_root, canonical_state) = (
            std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            std::fs::canonicalize(&args.host.lock.state_dir)
                .unwrap_or_else(|_| args.host.lock.state_dir.clone()),
        );
        if canonical_root.starts_with(&canonical_state) {
            bail!(
                "--source {} is inside the state directory {}: berth writes there, and each \
                 write would start a pass; keep the manifests elsewhere",
                args.source,
                args.host.lock.state_dir.display()
            );
        }
        Source::Dir(DirSource::new(root))
    };
    let hook_secret = match &source {
        Source::Git(_) => optional(&args.webhook_secret)?,
        Source::Dir(_) => None,
    };
    let token =
        crate::commands::status::bearer_token(args.token.as_deref(), args.token_file.as_deref())?;
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
            instance: args.host.lock.instance.clone(),
            apply: ApplyOptions {
                instance: args.host.lock.instance.clone(),
                concurrency: args.host.concurrency,
                ready_timeout: Duration::from_secs(args.host.ready_timeout),
                cancel: Some(stopped.clone()),
                ..ApplyOptions::default()
            },
            debounce: Duration::from_millis(300),
            fetch_interval: args.interval,
            lock_timeout: args.host.lock.lock_timeout,
            policy: Some(policy),
        };
        let status = StatusStore::open(&state.status_path());
        let notifier = Notifier::start(DeliveryOptions::default());
        let presence_state = state.clone();
        let controller = Controller::new(
            source.clone(),
            state,
            docker,
            options,
            status.clone(),
            notifier,
        );
        let hook = match &source {
            Source::Git(git) => {
                if hook_secret.is_none() {
                    tracing::info!(
                        "the push webhook is off: no secret `{}` in the state directory",
                        args.webhook_secret
                    );
                }
                Some(GitHook {
                    secret: hook_secret,
                    source: git.clone(),
                    fetch_now: controller.fetch_trigger(),
                })
            }
            Source::Dir(_) => None,
        };
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        // `berth workflow run` finds this process here, and asks it.
        let address = listener.local_addr().map_or(args.listen.clone(), |a| a.to_string());
        let _presence = berth::state::presence::announce(&presence_state, &address)
            .context("failed to write the controller's record in the state directory")?;
        let listen = listener
            .local_addr()
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        let workflows = controller.workflows();
        let control: Arc<dyn status::workflows::WorkflowControl> = Arc::new(workflows.clone());
        let workflow_routes =
            status::workflows::routes(workflows.runs(), Some(control), token.clone());
        let access = status::http::Access {
            token,
            hosts: status::http::AllowedHosts::new(listen, &args.allowed_hosts),
        };
        let router = status::http::app_with(
            status.clone(),
            access,
            hook,
            Some((workflows.runs(), workflow_routes)),
        );
        tokio::spawn(status::server::serve(
            listener,
            router,
            status::server::Limits::default(),
            stopped.clone(),
        ));
        tracing::info!(source = %source.describe(), instance = %args.host.lock.instance, listen = %args.listen, "berth run");
        controller
            .run(stopped)
        .await
        .context("failed to watch the source")?;
        Ok(ExitCode::SUCCESS)
    })
}
