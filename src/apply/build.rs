//! The build step: an app's context, read from the revision, sent as a tar archive to
//! the daemon's build API; its output streamed to the progress display and kept (the
//! last 64 KiB, secrets redacted) in the state dir; a timeout, and cancellation when
//! berth shuts down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{ApplyOptions, OnProgress, Progress};
use crate::desired::Desired;
use crate::drivers::docker::{BuildRequest, DockerApi};
use crate::expand::builds::DesiredBuild;
use crate::source::context::{self, ContextEntry, EntryKind};
use crate::state::builds::{BoundedLog, BuildRecord};
use crate::state::secrets::redact_all;

/// How many lines of a failed build's output its error quotes.
const QUOTED_LINES: usize = 10;

/// Builds `app`'s image as the desired state says; the error says why, with the
/// failing step and its last lines.
pub(super) async fn build(
    desired: &Desired,
    docker: &dyn DockerApi,
    options: &ApplyOptions,
    on_progress: &OnProgress,
    app: &str,
) -> Result<(), String> {
    let build = desired
        .builds
        .get(app)
        .ok_or_else(|| format!("the build of app {app} is not in the desired state"))?
        .clone();
    let tag = build.tag.clone();
    let failed = |why: String| format!("build of image {tag} failed: {why}");
    let reading = build.clone();
    let archive = tokio::task::spawn_blocking(move || context_archive(&reading))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    let mut labels = BTreeMap::from([
        ("berth.managed".to_owned(), "true".to_owned()),
        ("berth.instance".to_owned(), options.instance.clone()),
        ("berth.app".to_owned(), app.to_owned()),
        ("berth.build-hash".to_owned(), build.hash.clone()),
    ]);
    labels.insert("berth.revision".to_owned(), desired.revision.clone());
    let request = BuildRequest {
        tag: tag.clone(),
        dockerfile: build.options.dockerfile.clone(),
        target: build.options.target.clone(),
        args: build.options.args.clone(),
        labels,
        context: archive,
        secrets: build.secrets.clone(),
    };
    let log = Arc::new(Mutex::new(BoundedLog::default()));
    let secrets = desired.secret_values();
    let on_progress = on_progress.clone();
    let sink = log.clone();
    let output = move |chunk: &str| {
        let clean = redact_all(chunk, &secrets);
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(&clean);
        on_progress(Progress::Build {
            app: app.to_owned(),
            output: clean,
        });
    };
    let result = tokio::select! {
        r = docker.build_image(request, &output) => r.map_err(|e| match e {
            crate::drivers::docker::DockerError::Call { message, .. } => message,
            e => e.to_string(),
        }),
        _ = tokio::time::sleep(build.timeout) => Err(format!(
            "it took longer than its timeout of {} and was cancelled",
            humantime::format_duration(build.timeout)
        )),
        _ = cancelled(options.cancel.clone()) => {
            Err("berth is shutting down: the build was cancelled".to_owned())
        }
    };
    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let builds = options
        .state_dir
        .as_deref()
        .map(|dir| crate::state::builds::Builds::new(dir, &options.instance));
    if let Some(builds) = &builds {
        let mut text = log.text();
        if let Err(why) = &result {
            text.push_str(&format!("\nberth: {why}\n"));
        }
        if let Err(e) = builds.write_log(app, &text) {
            tracing::warn!(app, "failed to keep the build log: {e}");
        }
    }
    match result {
        Ok(()) => {
            if let Some(builds) = &builds {
                let record = BuildRecord {
                    tag: tag.clone(),
                    files: build.files(),
                };
                if let Err(e) = builds.record(app, &record) {
                    tracing::warn!(app, "failed to record the build: {e}");
                }
            }
            Ok(())
        }
        Err(why) => {
            let step = log
                .last_step()
                .map(|s| format!(" at `{}`", s.trim()))
                .unwrap_or_default();
            let lines = log.last_lines(QUOTED_LINES).join("\n  ");
            let skip = lines.chars().count().saturating_sub(2000);
            let tail: String = lines.chars().skip(skip).collect();
            Err(format!(
                "build of image {tag} failed{step}: {why}; its last lines (`berth logs \
                 --build {app}` shows more):\n  {tail}"
            ))
        }
    }
}

/// Resolves once `cancel` turns true; never without one.
async fn cancelled(cancel: Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(mut rx) = cancel else {
        return std::future::pending().await;
    };
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The context as a tar archive, each file read as it was listed.
fn context_archive(build: &DesiredBuild) -> Result<Vec<u8>, context::ContextError> {
    let mut out = Vec::new();
    for entry in &build.entries {
        let data = context::read(&build.tree, &build.options.context, entry)?;
        append(&mut out, entry, &data);
    }
    // Two empty blocks end an archive.
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

/// Appends one entry: a PAX header first when the path or link does not fit ustar's.
fn append(out: &mut Vec<u8>, entry: &ContextEntry, data: &[u8]) {
    let link = match entry.kind {
        EntryKind::Symlink => Some(String::from_utf8_lossy(data).into_owned()),
        EntryKind::File { .. } => None,
    };
    let long_path = entry.path.len() > 100;
    let long_link = link.as_ref().is_some_and(|l| l.len() > 100);
    if long_path || long_link {
        let mut records = Vec::new();
        if long_path {
            records.extend(pax_record("path", &entry.path));
        }
        if let Some(l) = link.as_ref().filter(|_| long_link) {
            records.extend(pax_record("linkpath", l));
        }
        out.extend_from_slice(&header(
            "././@PaxHeader",
            b'x',
            records.len() as u64,
            "",
            0o644,
        ));
        pad(out, &records);
    }
    match entry.kind {
        EntryKind::Symlink => {
            let target = link.unwrap_or_default();
            out.extend_from_slice(&header(&entry.path, b'2', 0, &target, 0o777));
        }
        EntryKind::File { executable } => {
            let mode = if executable { 0o755 } else { 0o644 };
            out.extend_from_slice(&header(&entry.path, b'0', data.len() as u64, "", mode));
            pad(out, data);
        }
    }
}

fn pad(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let rest = data.len() % 512;
    if rest != 0 {
        out.extend(std::iter::repeat_n(0u8, 512 - rest));
    }
}

/// `"<len> key=value\n"`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() > len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A ustar header; a name or link too long is cut (the PAX record before it has it).
fn header(path: &str, kind: u8, size: u64, link: &str, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, value: &[u8]| {
        let n = value.len().min(len);
        h[at..at + n].copy_from_slice(&value[..n]);
    };
    put(&mut h, 0, 100, path.as_bytes());
    put(&mut h, 100, 8, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, 12, b"00000000000\0");
    h[156] = kind;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 8, b"ustar\x0000");
    // The checksum is taken with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_one_tar_can_list_with_long_names_links_and_modes() {
        let long = format!("{}/file.txt", "deep".repeat(30));
        let entries = [
            (
                ContextEntry {
                    path: "run.sh".into(),
                    kind: EntryKind::File { executable: true },
                    size: 3,
                    digest: String::new(),
                },
                b"hi\n".to_vec(),
            ),
            (
                ContextEntry {
                    path: long.clone(),
                    kind: EntryKind::File { executable: false },
                    size: 1,
                    digest: String::new(),
                },
                b"x".to_vec(),
            ),
            (
                ContextEntry {
                    path: "link".into(),
                    kind: EntryKind::Symlink,
                    size: 6,
                    digest: String::new(),
                },
                b"run.sh".to_vec(),
            ),
        ];
        let mut out = Vec::new();
        for (e, data) in &entries {
            append(&mut out, e, data);
        }
        out.extend_from_slice(&[0u8; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.tar");
        std::fs::write(&file, &out).unwrap();
        let listing = std::process::Command::new("tar")
            .args(["-tvf", file.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            listing.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("-rwxr-xr-x") && lines[0].ends_with(" run.sh"),
            "{text}"
        );
        assert!(lines[1].ends_with(&long), "{text}");
        assert!(
            lines[2].starts_with('l') && lines[2].ends_with("link -> run.sh"),
            "{text}"
        );
    }
}
