//! The command line: clap types for every subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// GitOps for a Docker host: apps, domains, databases and workflows declared in Git.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    /// When to color output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,
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
    /// Converge the Docker host to the manifests under PATH (--dry-run: only show the plan).
    Apply(ApplyArgs),
    /// Put APP back to the spec it ran before its last deployment, and hold it there
    /// until a revision changes its declared spec (--release: end the hold now).
    Rollback(RollbackArgs),
    /// Keep the host converged to a source of manifests, continuously.
    Run(RunArgs),
    /// Show what a running `berth run` reports: resources, revisions, last pass, events.
    Status(StatusArgs),
    /// Dump, list and restore database backups.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Run workflows by hand and read their runs.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Show the log of an app's last image build (--build).
    Logs(LogsArgs),
}

/// `berth logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The app.
    pub app: String,
    /// The log of the app's last image build (its last 64 KiB, secrets redacted).
    #[arg(long)]
    pub build: bool,
    /// Where berth's records live.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = berth::state::DEFAULT)]
    pub state_dir: PathBuf,
    /// The berth instance.
    #[arg(long, env = "BERTH_INSTANCE", default_value = "default", value_parser = instance_name)]
    pub instance: String,
}

/// `berth workflow`
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List the workflows declared under PATH: triggers, nodes and last run.
    List {
        /// The manifests: a directory or one file.
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        lock: LockedState,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// The runs of NAME kept in the state dir (the last 20), newest first.
    Runs {
        /// The Workflow.
        name: String,
        /// Only this run, with every node's log.
        #[arg(long)]
        number: Option<u64>,
        #[command(flatten)]
        lock: LockedState,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Run NAME now: in the `berth run` serving this instance when one runs (through its
    /// status server, with the status token), otherwise in this process.
    Run(WorkflowRunArgs),
}

/// `berth workflow run`
#[derive(Debug, clap::Args)]
pub struct WorkflowRunArgs {
    /// The Workflow.
    pub name: String,
    /// The manifests declaring it: a directory or one file (a running `berth run` uses
    /// the revision it applied).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Print the order the nodes would run in, each resolved, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// When the run goes to `berth run`: wait for it to end and print it.
    #[arg(long)]
    pub wait: bool,
    /// The status token of the `berth run` serving this instance. Every user of the
    /// host sees an argument in `ps`: prefer --token-file or `BERTH_TOKEN`
    /// (`BERTH_STATUS_TOKEN`, its older name, is read too).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the status token (a trailing newline is ignored).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Where berth keeps its state and how it drives the host.
    #[command(flatten)]
    pub host: HostArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// The state dir and instance a command that changes the host locks.
#[derive(Debug, Args)]
pub struct LockedState {
    /// Where secrets, backups and berth's records live.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = berth::state::DEFAULT)]
    pub state_dir: PathBuf,
    /// The name of this berth among several sharing a Docker host, a state directory
    /// or a proxy directory: it owns only the objects and files that carry its name.
    #[arg(long, env = "BERTH_INSTANCE", default_value = "default", value_parser = instance_name)]
    pub instance: String,
    /// How long to wait while another berth changes this instance (it holds
    /// `<state-dir>/<instance>.lock`) before failing; `0s` fails at once.
    #[arg(long, default_value = berth::state::lock::DEFAULT_TIMEOUT, value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// The host policy: what the manifests may ask of this host (bind mounts, proxy
    /// commands, TLS files, workflow targets…). Default: `<state-dir>/policy.yaml`, or
    /// the built-in defaults when there is none.
    #[arg(long, env = "BERTH_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// `berth backup`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Dump DB now into `<state-dir>/backups/DB/` (or into --to, a file or a folder).
    Run {
        /// The Database resource.
        db: String,
        /// The manifests declaring it: a directory or one file.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Write the dump here instead (not rotated).
        #[arg(long)]
        to: Option<PathBuf>,
        #[command(flatten)]
        lock: LockedState,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// List the backups of DB (or of every database), oldest first.
    List {
        /// The Database resource.
        db: Option<String>,
        /// Where backups live.
        #[arg(long, env = "BERTH_STATE_DIR", default_value = berth::state::DEFAULT)]
        state_dir: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Restore FILE into DB, replacing what it holds.
    Restore {
        /// The Database resource.
        db: String,
        /// The dump, as listed by `berth backup list`.
        file: PathBuf,
        /// The manifests declaring it: a directory or one file.
        #[arg(default_value = ".")]
        path: PathBuf,
        #[command(flatten)]
        lock: LockedState,
    },
}

/// `berth status`
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The status server of `berth run`.
    #[arg(long, default_value = "http://127.0.0.1:9470")]
    pub url: String,
    /// The bearer token the server requires, if any. Every user of the host sees an
    /// argument in `ps`: prefer --token-file or `BERTH_TOKEN` (`BERTH_STATUS_TOKEN`, its
    /// older name, is read too).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token (a trailing newline is ignored).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// Options of the commands that change the host (`apply`, `run`).
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// The state dir, the instance and its lock.
    #[command(flatten)]
    pub lock: LockedState,
    /// Apps converged at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds a new container may take to become ready (plus its start period).
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
}

/// `berth run`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where the manifests are: a directory (watched for changes) or a Git repository,
    /// `<url>[#ref][:subdir]` (`https://…`, `file://…`, `ssh://…` or a bare repository's
    /// path; `#main` picks a branch, tag or commit, `:deploy` a folder in it).
    #[arg(long, env = "BERTH_SOURCE")]
    pub source: String,
    /// How often a Git source is fetched (the push webhook fetches at once).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// The secret (in `<state-dir>/secrets/`) used as the HTTPS password of a Git
    /// source, e.g. a deploy token. Used when it exists.
    #[arg(long, default_value = "git-token")]
    pub git_token_secret: String,
    /// The secret (in `<state-dir>/secrets/`) forges sign push webhooks with.
    #[arg(long, default_value = "git-webhook")]
    pub webhook_secret: String,
    /// Where berth keeps its state and how it drives the host.
    #[command(flatten)]
    pub host: HostArgs,
    /// Address of the read-only status server.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:9470")]
    pub listen: String,
    /// A bearer token the status server requires (all but /healthz). Every user of the
    /// host sees an argument in `ps`: prefer --token-file or `BERTH_TOKEN`
    /// (`BERTH_STATUS_TOKEN`, its older name, is read too).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the status server's bearer token (a trailing newline is ignored).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Another name the status server answers to (its `Host` header), e.g. the name a
    /// reverse proxy forwards; `NAME:PORT` pins the port. `localhost`, 127.0.0.1, [::1]
    /// and the listen address with its port always are. Repeatable.
    #[arg(long = "allowed-host", value_name = "NAME", value_parser = berth::status::http::allowed_host_name)]
    pub allowed_hosts: Vec<String>,
}

/// `berth apply`
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A directory of manifests, or one manifest file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// With --dry-run: exit 0 when in sync, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub exit_code: bool,
    /// Plan against an empty host without contacting Docker (implies --dry-run).
    #[arg(long)]
    pub offline: bool,
    /// Keep managed objects that are no longer declared.
    #[arg(long)]
    pub no_prune: bool,
    /// Where berth keeps its state and how it drives the host.
    #[command(flatten)]
    pub host: HostArgs,
}

/// `berth rollback`
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The app.
    pub app: String,
    /// A directory of manifests, or one manifest file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The revision (or a prefix of it) whose spec to go back to, instead of the
    /// previous one.
    #[arg(long, value_name = "REVISION", conflicts_with = "release")]
    pub to: Option<String>,
    /// Remove the app's pin: its declared spec is deployed again.
    #[arg(long)]
    pub release: bool,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Where berth keeps its state and how it drives the host.
    #[command(flatten)]
    pub host: HostArgs,
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
    /// The state dir whose `policy.yaml` the manifests are checked against.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = berth::state::DEFAULT)]
    pub state_dir: PathBuf,
    /// The host policy to check the manifests against, instead of
    /// `<state-dir>/policy.yaml` (or the built-in defaults when there is none).
    #[arg(long, env = "BERTH_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
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

/// An instance name: it becomes part of file names and of proxy files' headers.
fn instance_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("use 1 to 63 letters, digits, `-`, `_` and `.`, not starting with `.`".to_owned())
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For tools.
    Json,
}

/// Color choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Color when writing to a terminal (and NO_COLOR is not set).
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

impl Color {
    /// Whether to color standard output.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }

    /// Whether to color what goes to standard error (the logs).
    pub fn stderr_enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}
