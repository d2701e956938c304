//! `berth logs --build APP`: the log of an app's last image build, as the state
//! directory keeps it.

use std::process::ExitCode;

use anyhow::{Context, bail};
use berth::state::StateDir;

use crate::cli::LogsArgs;

pub fn exec(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    if !args.build {
        bail!("give --build: berth logs shows the log of an app's last image build");
    }
    let state = StateDir::new(&args.state_dir, &args.instance);
    let builds = state.builds();
    let log = builds
        .read_log(&args.app)
        .with_context(|| format!("failed to read {}", builds.log_path(&args.app).display()))?;
    match log {
        Some(text) => {
            // What a build printed may hold terminal escapes: shown, not obeyed.
            for line in text.lines() {
                println!("{}", berth::manifest::syntax::escape_control(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "app {} has no build log in {} (instance {}): it has not been built here",
            args.app,
            args.state_dir.display(),
            args.instance
        ),
    }
}
