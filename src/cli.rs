//! The command line: clap types for every subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// GitOps for a Docker host: apps, domains, databases and workflows declared in Git.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every manifest under PATH; exit 1 listing each problem as file:line:col.
    Validate(ValidateArgs),
    /// Write the JSON Schema of each kind (and of any berth document).
    Schema(SchemaArgs),
    /// Create a state repository in DIR from the bundled template.
    Init(InitArgs),
}

/// `berth validate`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// A directory of manifests, or one manifest file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `berth schema`
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Directory to write `<kind>.json` and `berth.json` into; without it the schema of
    /// any berth document is printed.
    #[arg(long, conflicts_with = "reference")]
    pub out: Option<PathBuf>,
    /// Print the manifest reference (Markdown) generated from the schemas instead.
    #[arg(long)]
    pub reference: bool,
}

/// `berth init`
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The directory to create (or an empty one to fill).
    pub dir: PathBuf,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For tools.
    Json,
}
