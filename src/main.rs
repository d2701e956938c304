//! The berth command: parse the command line, set up logging, run one subcommand.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose, cli.color.stderr_enabled());
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, colored only when it is a terminal (or `--color always`): a
/// journal, a file or a pipe gets plain lines.
fn init_tracing(verbose: u8, ansi: bool) {
    let default = match verbose {
        0 => "berth=info",
        1 => "berth=debug",
        _ => "berth=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
