//! `berth validate`: load every manifest and list each problem with its position.

use std::process::ExitCode;

use berth::manifest;
use serde_json::json;

use crate::cli::{Format, ValidateArgs};

pub fn exec(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let policy = super::host_policy(&args.state_dir, args.policy.as_deref())?;
    match (
        manifest::load_dir_with_policy(&args.path, &policy),
        args.output,
    ) {
        (Ok(m), Format::Text) => {
            let files = m.files;
            println!(
                "{}: valid: {} in {files} file{}",
                args.path.display(),
                m.summary(),
                if files == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        (Ok(m), Format::Json) => {
            let out = json!({"valid": true, "files": m.files, "resources": m.len(), "errors": []});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        (Err(d), Format::Text) => {
            print!("{d}");
            let n = d.len();
            eprintln!(
                "{n} problem{} found; nothing is valid until all are fixed",
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
        (Err(d), Format::Json) => {
            let out = json!({"valid": false, "errors": d});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::FAILURE)
        }
    }
}
