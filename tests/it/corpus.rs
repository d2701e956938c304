//! The bad-manifest corpus: every case under tests/bad/ fails with exactly the
//! diagnostics in its expected.txt, and hostile file-system layouts are refused.

use std::fs;
use std::os::unix::fs::symlink;

use berth::manifest::{self, MAX_DOCUMENTS, MAX_FILE_BYTES};

use crate::root;

const APP: &str =
    "apiVersion: berth/v1\nkind: App\nmetadata:\n  name: blog\nspec:\n  image: ghost:5.2\n";

#[test]
fn every_bad_case_fails_with_its_expected_messages() {
    let dir = root().join("tests/bad");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expected = fs::read_to_string(case.join("expected.txt")).unwrap();
        assert!(
            !expected.trim().is_empty(),
            "{} expects no error",
            case.display()
        );
        let got = match manifest::load_dir(case) {
            Ok(_) => "(valid)\n".to_owned(),
            Err(d) => d.to_string(),
        };
        if got != expected {
            failures.push(format!(
                "{}:\n  expected:\n{expected}  got:\n{got}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_oversize_file_is_refused_and_the_others_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("# padding\n");
    while big.len() as u64 <= MAX_FILE_BYTES {
        big.push_str("# ................................................................\n");
    }
    fs::write(dir.path().join("big.yaml"), &big).unwrap();
    fs::write(
        dir.path().join("bad.yaml"),
        APP.replace("ghost:5.2", "Ghost"),
    )
    .unwrap();
    let err = manifest::load_dir(dir.path()).unwrap_err().to_string();
    let size = big.len();
    assert_eq!(
        err,
        format!(
            "bad.yaml:6:10: App/blog: image `Ghost` is not a valid image reference: repository \
             names are lowercase letters, digits and `._-`, separated by `/`\n\
             big.yaml:1:1: file is {size} bytes, over the limit of 1048576 bytes (1 MiB); split \
             it into several files\n"
        )
    );
}

#[test]
fn a_symlink_out_of_the_root_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.yaml"), APP).unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("app.yaml"),
    )
    .unwrap();
    let err = manifest::load_dir(dir.path()).unwrap_err().to_string();
    let target = fs::canonicalize(outside.path().join("secret.yaml")).unwrap();
    assert_eq!(
        err,
        format!(
            "app.yaml:1:1: symlink points outside the source root (to {}); copy the file into \
             the repository instead\n",
            target.display()
        )
    );
}

#[test]
fn a_symlink_inside_the_root_is_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("shared")).unwrap();
    fs::write(dir.path().join("shared/app.txt"), APP).unwrap();
    symlink(
        dir.path().join("shared/app.txt"),
        dir.path().join("app.yaml"),
    )
    .unwrap();
    let m = manifest::load_dir(dir.path()).unwrap();
    assert_eq!(m.apps["blog"].spec.image, "ghost:5.2");
}

#[test]
fn a_symlinked_directory_is_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("app.yaml"), APP).unwrap();
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path(), dir.path().join("apps")).unwrap();
    let err = manifest::load_dir(dir.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        "apps:1:1: symlinked directories are not followed; move the manifests into the source root\n"
    );
}

#[test]
fn more_than_the_document_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let doc = "---\nx: 1\n";
    let per_file = 5_000;
    for f in 0..3 {
        fs::write(dir.path().join(format!("{f}.yaml")), doc.repeat(per_file)).unwrap();
    }
    let err = manifest::load_dir(dir.path()).unwrap_err();
    let last = err.iter().last().unwrap();
    assert_eq!(last.file, "2.yaml");
    assert_eq!(
        last.message,
        format!(
            "more than {MAX_DOCUMENTS} documents in this revision; berth reads at most {MAX_DOCUMENTS}"
        )
    );
}

#[test]
fn hidden_folders_and_other_files_are_skipped_and_order_is_sorted() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join(".git/broken.yaml"), "{{{").unwrap();
    fs::write(dir.path().join("notes.txt"), "{{{").unwrap();
    fs::create_dir_all(dir.path().join("b")).unwrap();
    fs::write(dir.path().join("b/app.yml"), APP).unwrap();
    fs::write(dir.path().join("a.yaml"), APP.replace("blog", "alpha")).unwrap();
    let m = manifest::load_dir(dir.path()).unwrap();
    assert_eq!(m.files, 2);
    assert_eq!(m.apps["alpha"].origin.file, "a.yaml");
    assert_eq!(m.apps["blog"].origin.file, "b/app.yml");
}

#[test]
fn a_bomb_fails_fast_without_eating_memory() {
    // Nine levels of nine aliases would expand to 387 million strings.
    let text = fs::read_to_string(root().join("tests/bad/yaml-bomb/bomb.yaml")).unwrap();
    let (_, err) = manifest::yaml::parse_documents(&text);
    let err = err.unwrap();
    assert_eq!((err.mark.line, err.mark.col), (6, 8));
    assert!(err.message.contains("alias bomb"), "{}", err.message);
}

#[test]
fn valid_manifests_are_normalized() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("all.yaml"),
        format!(
            "{APP}  port: 80\n  env: {{PORT: 80, DEBUG: false, NAME: x}}\n---\n\
             apiVersion: berth/v1\nkind: Domain\nmetadata: {{name: blog}}\n\
             spec: {{hosts: [Bücher.Example], app: blog}}\n"
        ),
    )
    .unwrap();
    let m = manifest::load_dir(dir.path()).unwrap();
    assert_eq!(m.domains["blog"].spec.hosts, ["xn--bcher-kva.example"]);
    let env = &m.apps["blog"].spec.env;
    assert_eq!(env["PORT"].0, "80");
    assert_eq!(env["DEBUG"].0, "false");
    assert_eq!(m.apps["blog"].spec.replicas, 1);
    assert_eq!(m.settings().network, "berth");
    assert!(m.settings().prune);
}

/// Loads `dir` on another thread, failing the test (instead of hanging it) if the load
/// does not finish within ten seconds.
fn load_within_seconds(dir: &std::path::Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(match manifest::load_dir(&dir) {
            Ok(_) => "(valid)\n".to_owned(),
            Err(d) => d.to_string(),
        });
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("loading the manifests blocked for 10 s")
}

#[test]
fn a_fifo_named_yaml_is_refused_without_hanging() {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("app.yaml"), APP).unwrap();
    mknodat(
        CWD,
        dir.path().join("pipe.yaml"),
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock.yml")).unwrap();
    symlink(
        dir.path().join("pipe.yaml"),
        dir.path().join("to-pipe.yaml"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("shared")).unwrap();
    symlink(dir.path().join("shared"), dir.path().join("to-dir.yaml")).unwrap();
    let what = "not a regular file; berth reads only regular files: replace it with the \
                manifest itself or rename it so its name does not end in .yaml or .yml";
    assert_eq!(
        load_within_seconds(dir.path()),
        format!(
            "pipe.yaml:1:1: is a FIFO (named pipe), {what}\n\
             sock.yml:1:1: is a socket, {what}\n\
             to-dir.yaml:1:1: is a directory, {what}\n\
             to-pipe.yaml:1:1: is a FIFO (named pipe), {what}\n"
        )
    );
    // Named as the source itself, the FIFO is refused too.
    let err = load_within_seconds(&dir.path().join("pipe.yaml"));
    assert_eq!(
        err,
        format!("pipe.yaml:1:1: is a FIFO (named pipe), {what}\n")
    );
}

#[test]
fn quadratic_yaml_maps_a_1_mib_file_of_keys_loads_in_linear_time() {
    // 160,000 keys took 254 s of CPU when each key was compared with every earlier one,
    // and 40,000 unknown fields took 7 s when each was located from the top again.
    let mut keys = String::from(APP);
    keys.push_str("  env:\n");
    let mut unknown = String::from(APP);
    let mut i = 0;
    while keys.len() < MAX_FILE_BYTES as usize - 32 {
        keys.push_str(&format!("    K{i}: v\n"));
        unknown.push_str(&format!("  x{i}: v\n"));
        i += 1;
    }
    let start = std::time::Instant::now();
    let files = |text: &str| {
        [manifest::SourceFile {
            path: "big.yaml".to_owned(),
            text: text.to_owned(),
        }]
    };
    let m = manifest::load_files(&files(&keys)).unwrap();
    assert_eq!(m.apps["blog"].spec.env.len(), i);
    let err = manifest::load_files(&files(&unknown)).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.len(), 101);
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines[0],
        "big.yaml:1:1: App/blog: more than 100 problems in this document; the rest are not \
         shown, fix these first"
    );
    assert!(lines[1].starts_with("big.yaml:7:3: App/blog: unknown field `x0`; expected one of"));
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
}

#[test]
fn file_names_printed_raw_a_newline_and_escapes_in_a_name_stay_on_one_escaped_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("a\n\x1b[31mevil.yaml"),
        APP.replace("ghost:5.2", "Ghost\x1b]0;owned\x07"),
    )
    .unwrap();
    let err = load_within_seconds(dir.path());
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert_eq!(
        err,
        "a\\n\\u{1b}[31mevil.yaml:6:10: App/blog: image `Ghost\\u{1b}]0;owned\\u{7}` is not \
         a valid image reference: it contains U+001B\n"
    );
}

#[test]
fn a_utf8_bom_at_the_start_of_a_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("app.yaml"), format!("\u{feff}{APP}")).unwrap();
    let m = manifest::load_dir(dir.path()).unwrap();
    assert_eq!(m.apps["blog"].spec.image, "ghost:5.2");
    assert_eq!(m.apps["blog"].origin.line, 1);
}
