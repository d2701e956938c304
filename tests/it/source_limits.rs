//! Limits on what a Git source may make berth read: a blob over the 1 MiB manifest
//! limit is refused by its size, named with its path, before it is read.

use std::fs;
use std::path::Path;
use std::process::Command;

use berth::source::git::{GitSource, GitSpec};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Ops", "-c", "user.email=ops@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_git_blob_over_the_limit_is_refused_by_its_size_before_it_is_read_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(work.join("deploy")).unwrap();
    git(&work, &["init", "-q"]);
    let big = 64 * 1024 * 1024;
    // Not all one byte, so that it does not compress to nothing.
    let mut text = String::with_capacity(big + 64);
    let mut n: u64 = 0x9e37_79b9;
    while text.len() < big {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        text.push_str(&format!("# {n:016x}\n"));
    }
    let size = text.len();
    fs::write(work.join("deploy/huge.yaml"), &text).unwrap();
    drop(text);
    fs::write(
        work.join("deploy/web.yaml"),
        "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec: {image: nginx:1}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "a huge file"]);

    let state = tempfile::tempdir().unwrap();
    let url = format!("file://{}#main:deploy", work.display());
    let source = GitSource::new(GitSpec::parse(&url).unwrap(), state.path(), None);
    let commit = source.fetch().unwrap().commit;
    // Resets the peak to what is resident now, so that the fetch's peak does not count.
    let _ = fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_kib();
    let revision = source.read(&commit).unwrap();
    let grew = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {grew} KiB while reading the revision");

    let paths: Vec<&str> = revision.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["web.yaml"]);
    assert_eq!(revision.problems.len(), 1, "{:?}", revision.problems);
    assert_eq!(revision.problems[0].file, "huge.yaml");
    assert_eq!(
        revision.problems[0].message,
        format!(
            "file is {size} bytes, over the limit of 1048576 bytes (1 MiB); split it into several files"
        )
    );
}
