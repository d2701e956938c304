//! `berth schema`: write the JSON Schemas generated from the manifest model.

use std::process::ExitCode;

use anyhow::Context;
use berth::manifest;
use berth::state::atomic;

use crate::cli::SchemaArgs;

pub fn exec(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    if args.reference {
        print!("{}", manifest::reference_markdown());
        return Ok(ExitCode::SUCCESS);
    }
    let files = manifest::schema_files();
    let Some(dir) = &args.out else {
        let (_, any) = files
            .iter()
            .find(|(name, _)| *name == manifest::schema_file_name(None))
            .context("the any-document schema is generated")?;
        print!("{any}");
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(&name);
        atomic::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
