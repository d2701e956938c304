//! The state directory on a disk that fills up: a pass writes only the files that
//! changed (a second pass rewrites no TLS file), and a write that fails for want of
//! space says so, naming the file.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::docker::{Scenario, image, text};
use crate::nginx::{domain, with_nginx};

/// A 64 KiB tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a small tmpfs (the tests run as root): {}",
            text(&out)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        let mut filler = fs::File::create(self.path().join("filler")).unwrap();
        let block = [0u8; 4096];
        while std::io::Write::write_all(&mut filler, &block).is_ok() {}
        let _ = std::io::Write::write_all(&mut filler, &[0u8]);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

#[test]
fn a_full_disk_is_named_as_the_write_that_failed_not_as_a_failed_read() {
    let disk = SmallDisk::mount();
    let state = disk.path().join("state");
    fs::create_dir_all(state.join("secrets")).unwrap();
    fs::write(state.join("secrets/api-token"), "hunter2-hunter2\n").unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let instance = format!("fd{}", std::process::id());
    fs::write(
        manifests.path().join("web.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {instance}-web}}\nspec:\n  \
             image: {}\n  secretEnv: {{TOKEN: api-token}}\n---\n\
             apiVersion: berth/v1\nkind: Database\nmetadata: {{name: {instance}-db}}\n\
             spec: {{engine: postgres, mode: managed}}\n",
            image()
        ),
    )
    .unwrap();
    disk.fill();
    let berth = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .arg(manifests.path())
            .arg("--state-dir")
            .arg(&state)
            .args(["--instance", &instance, "--color", "never"])
            .env_remove("RUST_LOG")
            .output()
            .expect("berth runs");
        (out.status.code(), text(&out))
    };

    let (_, dry) = berth(&["apply", "--dry-run", "--offline"]);
    assert!(
        dry.contains(&format!(
            "failed to read or create the key of secret hashes {}: No space left on device",
            state.join("secret-hash-key").display()
        )),
        "{dry}"
    );
    assert!(!dry.contains("failed to read secret"), "{dry}");

    let (code, out) = berth(&["apply"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("failed to read secret"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    // Space again: the pass goes through.
    fs::remove_file(disk.path().join("filler")).unwrap();
    let (_, dry) = berth(&["apply", "--dry-run", "--offline"]);
    assert!(!dry.contains("No space left"), "{dry}");
    assert!(state.join("secret-hash-key").exists());
}

#[test]
fn a_second_pass_rewrites_no_tls_file() {
    let (_nginx, s): (_, Scenario) = with_nginx();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=tls.example.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", text(&out));
    fs::copy(&cert, s.state_path().join("secrets/site-cert")).unwrap();
    fs::copy(&key, s.state_path().join("secrets/site-key")).unwrap();
    let web = s.name("web");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            "  hosts: [tls.example.test]\n  tls: {certificateSecret: site-cert, keySecret: site-key}\n  \
             redirectHttps: false\n",
        ),
    );
    s.apply();
    let files = ["tls/site-cert.pem", "tls/site-key.pem"].map(|f| s.state_path().join(f));
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "in sync: {plan}");
    assert!(!plan.contains("TLS file"), "{plan}");
    let out = s.apply();
    let after: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    assert_eq!(
        before, after,
        "a second pass wrote a TLS file again:\n{out}"
    );
}
