//! One module per subcommand: build the options, call the library, print the result.

mod apply;
mod backup;
mod init;
mod logs;
mod rollback;
mod run;
mod schema;
mod status;
mod validate;
mod workflow;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use berth::manifest::Policy;
use berth::state::StateDir;
use berth::state::lock::InstanceLock;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::exec(&args),
        Command::Schema(args) => schema::exec(&args),
        Command::Init(args) => init::exec(&args),
        Command::Apply(args) => apply::exec(&args, cli.color.enabled()),
        Command::Rollback(args) => rollback::exec(&args, cli.color.enabled()),
        Command::Run(args) => run::exec(&args),
        Command::Status(args) => status::exec(&args),
        Command::Backup(command) => backup::exec(&command),
        Command::Workflow(command) => workflow::exec(&command),
        Command::Logs(args) => logs::exec(&args),
    }
}

/// Takes the instance's lock for `doing`, saying once on stderr whom it waits for.
async fn lock(state: &StateDir, doing: &str, timeout: Duration) -> anyhow::Result<InstanceLock> {
    let instance = state.instance().to_owned();
    state
        .lock(doing, timeout, |holder| {
            eprintln!("waiting for the lock on instance {instance}, held by {holder}");
        })
        .await
        .with_context(|| format!("{doing} did not start"))
}

/// The host policy: `--policy FILE`, else `<state-dir>/policy.yaml`, else the defaults.
fn host_policy(state_dir: &Path, explicit: Option<&Path>) -> anyhow::Result<Policy> {
    Ok(Policy::for_host(state_dir, explicit)?)
}
