//! The command line as a user runs it: exit codes, text and JSON output, init.

use std::fs;

use serde_json::Value;

use crate::{berth, root, stdout};

#[test]
fn validate_lists_every_problem_and_exits_1() {
    let out = berth(&root(), &["validate", "tests/bad/several-errors-one-file"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        fs::read_to_string(root().join("tests/bad/several-errors-one-file/expected.txt")).unwrap()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "4 problems found; nothing is valid until all are fixed\n"
    );
}

#[test]
fn validate_json_gives_positions_and_resources() {
    let out = berth(
        &root(),
        &["validate", "tests/bad/dangling-domain-app", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(e["file"], "domain.yaml");
    assert_eq!(e["line"], 7);
    assert_eq!(e["column"], 8);
    assert_eq!(e["kind"], "Domain");
    assert_eq!(e["name"], "blog");
    assert_eq!(e["message"], "no App named `blgo`; did you mean `blog`?");
}

#[test]
fn validate_passes_on_every_example_and_the_template() {
    let mut dirs: Vec<_> = fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3);
    dirs.push(root().join("state-repo-template"));
    for dir in dirs {
        let out = berth(&root(), &["validate", dir.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            dir.display(),
            stdout(&out)
        );
        assert!(stdout(&out).contains(": valid: "), "{}", stdout(&out));
    }
}

#[test]
fn validate_json_when_valid() {
    let out = berth(&root(), &["validate", "examples/wordpress", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["resources"], 4);
    assert_eq!(v["files"], 2);
}

#[test]
fn validate_a_missing_path_says_so() {
    let out = berth(&root(), &["validate", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("no/such/dir:1:1: cannot read the manifests: No such file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = berth(&root(), &["validate", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_scaffolds_a_valid_repository_with_schemas_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let out = berth(tmp.path(), &["init", "server"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every file of the template is there, byte for byte.
    let template = root().join("state-repo-template");
    let mut stack = vec![template.clone()];
    let mut count = 0;
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&template).unwrap();
                assert_eq!(
                    fs::read(&p).unwrap(),
                    fs::read(dir.join(rel)).unwrap(),
                    "{}",
                    rel.display()
                );
                count += 1;
            }
        }
    }
    assert!(count >= 8);

    // The editor schemas each file points at exist.
    for entry in [
        "settings.yaml",
        "apps/web.yaml",
        "workflows/smoke-test.yaml",
    ] {
        let text = fs::read_to_string(dir.join(entry)).unwrap();
        let line = text.lines().find(|l| l.contains("$schema=")).unwrap();
        let schema = line.split("$schema=").nth(1).unwrap();
        let path = dir.join(entry).parent().unwrap().join(schema);
        assert!(path.is_file(), "{} points at {}", entry, path.display());
    }
    let out = berth(tmp.path(), &["validate", "server"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // A second init refuses and changes nothing.
    fs::write(dir.join("apps/web.yaml"), "mine").unwrap();
    let out = berth(tmp.path(), &["init", "server"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berth init never overwrites files"), "{err}");
    assert!(err.contains("apps/web.yaml"), "{err}");
    assert_eq!(
        fs::read_to_string(dir.join("apps/web.yaml")).unwrap(),
        "mine"
    );
}
