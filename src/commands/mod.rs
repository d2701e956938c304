//! One module per subcommand: build the options, call the library, print the result.

mod apply;
mod backup;
mod init;
mod run;
mod schema;
mod status;
mod validate;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::exec(&args),
        Command::Schema(args) => schema::exec(&args),
        Command::Init(args) => init::exec(&args),
        Command::Apply(args) => apply::exec(&args, cli.color.enabled()),
        Command::Run(args) => run::exec(&args),
        Command::Status(args) => status::exec(&args),
        Command::Backup(command) => backup::exec(&command),
    }
}
