//! `berth init`: scaffold a state repository from the bundled template.

use std::process::ExitCode;

use anyhow::{Context, bail};
use berth::manifest;
use berth::state::atomic;

use crate::cli::InitArgs;

/// The template's files, embedded so that the binary works anywhere.
pub(crate) const TEMPLATE: &[(&str, &str)] = &[
    (
        ".gitignore",
        include_str!("../../state-repo-template/.gitignore"),
    ),
    (
        "README.md",
        include_str!("../../state-repo-template/README.md"),
    ),
    (
        "settings.yaml",
        include_str!("../../state-repo-template/settings.yaml"),
    ),
    (
        "apps/web.yaml",
        include_str!("../../state-repo-template/apps/web.yaml"),
    ),
    (
        "domains/web.yaml",
        include_str!("../../state-repo-template/domains/web.yaml"),
    ),
    (
        "databases/web-db.yaml",
        include_str!("../../state-repo-template/databases/web-db.yaml"),
    ),
    (
        "notifiers/ops.yaml",
        include_str!("../../state-repo-template/notifiers/ops.yaml"),
    ),
    (
        "workflows/smoke-test.yaml",
        include_str!("../../state-repo-template/workflows/smoke-test.yaml"),
    ),
];

pub fn exec(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let mut files: Vec<(String, String)> = TEMPLATE
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    files.extend(
        manifest::schema_files()
            .into_iter()
            .map(|(name, text)| (format!("schemas/{name}"), text)),
    );
    // Refuse before writing anything, so a refused init leaves the directory as it was.
    let existing: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| args.dir.join(p).symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already has {}; berth init never overwrites files: choose a new directory \
             or move them away",
            args.dir.display(),
            existing.join(", ")
        );
    }
    for (rel, text) in &files {
        let path = args.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        atomic::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let shown = args.dir.display();
    println!(
        "created a state repository in {shown} ({} files)",
        files.len()
    );
    println!("next: edit the manifests, then");
    println!("  berth validate {shown}");
    println!("  cd {shown} && git init && git add . && git commit -m 'Initial server state'");
    Ok(ExitCode::SUCCESS)
}
