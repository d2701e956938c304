//! `berth run` following a real Git repository (a local bare repo over `file://`):
//! commits converge through the push webhook, an invalid commit stalls with its
//! file:line, chat listeners get exactly one message per event, and no secret leaks.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::docker::{Scenario, image};
use crate::listener::{Listener, Received};
use crate::run::{Controller, env_of, eventually, running};

/// A bare repository and a work tree that pushes to it.
pub struct Repo {
    pub bare: std::path::PathBuf,
    pub work: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("state.git");
        let work = dir.path().join("work");
        fs::create_dir_all(&work).unwrap();
        git(dir.path(), &["init", "--bare", "-q", "state.git"]);
        git(&work, &["init", "-q"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo {
            bare,
            work,
            _dir: dir,
        }
    }

    /// Writes `files` under `deploy/`, commits and pushes; returns the commit id.
    pub fn commit(&self, message: &str, files: &[(&str, String)]) -> String {
        for (name, text) in files {
            let path = self.work.join("deploy").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(
            &self.work,
            &["push", "-q", "origin", "HEAD:refs/heads/main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// POSTs `body` to the controller's webhook with `headers`; returns the status code
/// and the body.
fn post(c: &Controller, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}/hooks/git", c.port);
    let reply = crate::http::post_json(&url, headers, body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}\nberth run said:\n{}", c.log()));
    (reply.status, reply.body)
}

fn github_push(secret: &str, reference: &str) -> (Vec<u8>, String) {
    let body = format!(r#"{{"ref":"{reference}","deleted":false,"after":"1234"}}"#).into_bytes();
    let sig = berth::source::webhook::github_signature(secret.as_bytes(), &body);
    (body, sig)
}

/// Messages of `event` a listener got: the generic body's `event`, or Discord's
/// `content`, which opens with the event in bold ("**Sync failed** · …").
fn of_event(received: &[Received], event: &str) -> Vec<serde_json::Value> {
    let bold = format!("**{}**", event.to_lowercase());
    received
        .iter()
        .map(Received::json)
        .filter(|j| {
            j["event"] == event
                || j["content"]
                    .as_str()
                    .is_some_and(|c| c.to_lowercase().replace(' ', "").starts_with(&bold))
        })
        .collect()
}

fn write_secret(s: &Scenario, name: &str, value: &str) {
    let dir = s.state_path().join("secrets");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), value).unwrap();
}

#[test]
fn a_git_source_converges_on_push_and_notifies_once_per_event() {
    let s = Scenario::new();
    let web = s.name("web");
    let discord = Listener::start(204);
    let generic = Listener::start(200);
    let discord_url = format!("{}/api/webhooks/42/discord-token-zq9", discord.base);
    write_secret(&s, "discord-url", &discord_url);
    write_secret(
        &s,
        "hook-url",
        &format!("{}/berth/hook-token-x7", generic.base),
    );
    write_secret(&s, "hook-signing", "signing-key-p4");
    write_secret(&s, "git-webhook", "webhook-secret-w8");
    let notifiers = "apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: chat}\n\
         spec: {type: discord, urlSecret: discord-url}\n---\n\
         apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: hook}\n\
         spec: {type: webhook, urlSecret: hook-url, signingSecret: hook-signing}\n"
        .to_owned();
    let app = |page: &str| {
        s.app(
            "web",
            image(),
            &format!("  port: 80\n  env: {{PAGE: {page}}}\n"),
        )
    };

    let repo = Repo::new();
    let first = repo.commit(
        "first",
        &[
            ("notifiers.yaml", notifiers.clone()),
            ("web.yaml", app("one")),
        ],
    );
    // An hour between fetches: only the webhook can bring the next commits in time.
    let source = format!("file://{}#main:deploy", repo.bare.display());
    let c = Controller::start_with(&s, &source, &["--interval", "1h"]);
    eventually(&c, 40, "the first commit runs", || {
        running(&web) && c.api("/api/v1/status")["revisionApplied"] == first.as_str()
    });
    eventually(&c, 10, "both listeners hear of the first deploy", || {
        of_event(&discord.received(), "Deployed").len() == 1
            && of_event(&generic.received(), "Deployed").len() == 1
    });

    // A pushed change and a webhook with a bad signature: refused, nothing fetched.
    let second = repo.commit("second", &[("web.yaml", app("two"))]);
    let (body, _) = github_push("webhook-secret-w8", "refs/heads/main");
    let bad = berth::source::webhook::github_signature(b"guess", &body);
    let (code, text) = post(
        &c,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bad)],
        &body,
    );
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("signature does not match"), "{text}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(env_of(&web).contains("PAGE=one"), "a bad signature fetched");
    assert_eq!(c.api("/api/v1/status")["revisionApplied"], first.as_str());

    // A push to another branch is acknowledged and ignored.
    let (other, sig) = github_push("webhook-secret-w8", "refs/heads/dev");
    let (code, text) = post(
        &c,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &other,
    );
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("berth follows refs/heads/main"), "{text}");

    // The good one fetches at once.
    let (body, sig) = github_push("webhook-secret-w8", "refs/heads/main");
    let (code, text) = post(
        &c,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    eventually(&c, 30, "the second commit converges", || {
        env_of(&web).contains("PAGE=two")
            && c.api("/api/v1/status")["revisionApplied"] == second.as_str()
    });
    eventually(&c, 10, "one more Deployed each", || {
        of_event(&discord.received(), "Deployed").len() == 2
            && of_event(&generic.received(), "Deployed").len() == 2
    });
    let deployed = of_event(&generic.received(), "Deployed");
    assert_eq!(deployed[1]["revision"], second.as_str(), "{}", deployed[1]);
    assert!(
        deployed[1]["details"][0]
            .as_str()
            .unwrap_or_default()
            .contains("env PAGE changed"),
        "{}",
        deployed[1]
    );
    let discord_deployed = of_event(&discord.received(), "Deployed");
    assert!(
        discord_deployed[1].to_string().contains(&second[..7]),
        "{}",
        discord_deployed[1]
    );

    assert!(
        discord
            .received()
            .iter()
            .all(|r| r.path == "/api/webhooks/42/discord-token-zq9"),
        "Discord messages go to the URL of the secret"
    );

    // The generic body is signed with the notifier's key.
    for r in generic.received() {
        let sig = r.header("x-berth-signature-256").unwrap_or_default();
        assert_eq!(
            sig,
            berth::source::webhook::github_signature(b"signing-key-p4", &r.body),
            "{r:?}"
        );
    }

    // An invalid commit: nothing of it applied, Stalled with file:line, one SyncFailed.
    let bad_app = s.app(
        "web",
        image(),
        "  port: 80\n  env: {PAGE: three}\n  imgae: typo\n",
    );
    let third = repo.commit("typo", &[("web.yaml", bad_app)]);
    let (body, sig) = github_push("webhook-secret-w8", "refs/heads/main");
    let hook = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    assert_eq!(post(&c, &hook, &body).0, 202);
    eventually(&c, 20, "the status shows the stall", || {
        let st = c.api("/api/v1/status");
        st["revisionObserved"] == third.as_str()
            && st["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Stalled" && c["status"] == true)
            })
    });
    let status = c.api("/api/v1/status");
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap()
        .clone();
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("web.yaml:8:3: "),
        "{stalled}"
    );
    assert_eq!(status["revisionApplied"], second.as_str());
    assert!(env_of(&web).contains("PAGE=two"));
    // The same bad commit again (another delivery): still one failure message.
    assert_eq!(post(&c, &hook, &body).0, 202);
    eventually(&c, 10, "one SyncFailed each", || {
        of_event(&discord.received(), "SyncFailed").len() == 1
            && of_event(&generic.received(), "SyncFailed").len() == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(of_event(&generic.received(), "SyncFailed").len(), 1);
    assert_eq!(of_event(&discord.received(), "SyncFailed").len(), 1);
    let failed = &of_event(&generic.received(), "SyncFailed")[0];
    assert!(
        failed["details"]
            .to_string()
            .contains("unknown field `imgae`"),
        "{failed}"
    );

    // The next good commit recovers, once.
    let fourth = repo.commit("fix", &[("web.yaml", app("four"))]);
    assert_eq!(post(&c, &hook, &body).0, 202);
    eventually(&c, 30, "the fix converges", || {
        env_of(&web).contains("PAGE=four")
            && c.api("/api/v1/status")["revisionApplied"] == fourth.as_str()
    });
    eventually(&c, 10, "one SyncRecovered each", || {
        of_event(&discord.received(), "SyncRecovered").len() == 1
            && of_event(&generic.received(), "SyncRecovered").len() == 1
    });

    // Status counts the deliveries per notifier.
    eventually(&c, 10, "the status counts deliveries", || {
        let n = c.api("/api/v1/status")["notifiers"].clone();
        n.as_array().is_some_and(|all| {
            all.len() == 2
                && all
                    .iter()
                    .all(|d| d["sent"].as_u64() >= Some(4) && d["failed"] == 0)
        })
    });

    // No secret in any message, the status or the log.
    let mut everything = c.log();
    everything.push_str(&c.api("/api/v1/status").to_string());
    for r in discord.received().iter().chain(generic.received().iter()) {
        everything.push_str(&String::from_utf8_lossy(&r.body));
        for (_, v) in &r.headers {
            everything.push_str(v);
        }
    }
    for secret in [
        "discord-token-zq9",
        "hook-token-x7",
        "signing-key-p4",
        "webhook-secret-w8",
    ] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[test]
fn a_git_source_reads_the_commit_tree_at_a_ref_and_folder() {
    use berth::source::git::{GitSource, GitSpec};
    let repo = Repo::new();
    let state = tempfile::tempdir().unwrap();
    let first = repo.commit(
        "first",
        &[
            ("b.yaml", "kind: B\n".to_owned()),
            ("a/app.yml", "kind: A\n".to_owned()),
            (".hidden/x.yaml", "kind: Hidden\n".to_owned()),
            ("README.md", "not a manifest\n".to_owned()),
        ],
    );
    std::os::unix::fs::symlink("/etc/passwd", repo.work.join("deploy/link.yaml")).unwrap();
    let second = repo.commit("link", &[]);
    git(&repo.work, &["tag", "-a", "v1", "-m", "v1", &first]);
    git(&repo.work, &["push", "-q", "origin", "v1"]);

    // The default branch, over file:// and as a plain path.
    for url in [
        format!("file://{}#:deploy", repo.bare.display()),
        format!("{}#:deploy", repo.bare.display()),
    ] {
        let source = GitSource::new(GitSpec::parse(&url).unwrap(), state.path(), None);
        assert_eq!(source.fetch().unwrap().commit, second, "{url}");
        assert_eq!(source.tracked_ref().as_deref(), Some("refs/heads/main"));
        let revision = source.read(&second).unwrap();
        let paths: Vec<&str> = revision.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/app.yml", "b.yaml"]);
        assert_eq!(revision.files[1].text, "kind: B\n");
        assert_eq!(revision.problems.len(), 1, "{:?}", revision.problems);
        assert_eq!(revision.problems[0].file, "link.yaml");
        assert!(revision.problems[0].message.contains("symlink"));
    }

    // An annotated tag resolves to its commit.
    let tag = format!("file://{}#v1:deploy", repo.bare.display());
    let source = GitSource::new(GitSpec::parse(&tag).unwrap(), state.path(), None);
    assert_eq!(source.fetch().unwrap().commit, first);

    // A ref the remote lacks, and a folder the commit lacks.
    let source = GitSource::new(
        GitSpec::parse(&format!("file://{}#nope", repo.bare.display())).unwrap(),
        state.path(),
        None,
    );
    let e = source.fetch().unwrap_err().to_string();
    assert!(e.contains("has no branch or tag `nope`"), "{e}");
    let source = GitSource::new(
        GitSpec::parse(&format!("file://{}#main:missing", repo.bare.display())).unwrap(),
        state.path(),
        None,
    );
    let commit = source.fetch().unwrap().commit;
    let e = source.read(&commit).unwrap_err().to_string();
    assert!(e.contains("has no folder `missing`"), "{e}");

    // The remote gone: the fetch fails with the URL named, the fetched commit stays
    // readable from the clone.
    let url = format!("file://{}#main:deploy", repo.bare.display());
    let source = GitSource::new(GitSpec::parse(&url).unwrap(), state.path(), None);
    source.fetch().unwrap();
    fs::rename(&repo.bare, repo.bare.with_extension("moved")).unwrap();
    let e = source.fetch().unwrap_err().to_string();
    assert!(e.starts_with("failed to fetch file://"), "{e}");
    assert_eq!(source.read(&second).unwrap().files.len(), 2);
}

/// Serves `root`'s repositories over Git's smart HTTP (git-http-backend as a CGI of
/// busybox httpd), behind basic authentication as `x-access-token:<token>`.
struct HttpGit {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl HttpGit {
    fn start(root: &Path, token: &str) -> HttpGit {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        fs::create_dir_all(www.join("cgi-bin")).unwrap();
        let cgi = www.join("cgi-bin/git");
        fs::write(
            &cgi,
            format!(
                "#!/bin/sh\nexport GIT_PROJECT_ROOT={} GIT_HTTP_EXPORT_ALL=1\n\
                 exec /usr/lib/git-core/git-http-backend\n",
                root.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&cgi, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("httpd.conf");
        fs::write(&conf, format!("/cgi-bin:x-access-token:{token}\n")).unwrap();
        let port = crate::free_port();
        let child = Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}")])
            .arg("-h")
            .arg(&www)
            .arg("-c")
            .arg(&conf)
            .spawn()
            .expect("busybox httpd starts");
        // The guard first: httpd is stopped even if it never answers.
        let server = HttpGit {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "httpd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_http_git_source_needs_its_token_and_never_sends_it_in_clear_text() {
    use berth::source::git::{GitSource, GitSpec};
    use berth::state::secrets::Secret;
    let repo = Repo::new();
    repo.commit("first", &[("app.yaml", "kind: App\n".to_owned())]);
    let server = HttpGit::start(repo.bare.parent().unwrap(), "t0ken-h7");
    let url = format!(
        "http://127.0.0.1:{}/cgi-bin/git/state.git#main:deploy",
        server.port
    );
    let state = tempfile::tempdir().unwrap();

    // Without a token the server's 401 is a clear failure.
    let source = GitSource::new(GitSpec::parse(&url).unwrap(), state.path(), None);
    let e = source.fetch().unwrap_err().to_string();
    assert!(e.starts_with("failed to fetch http://127.0.0.1:"), "{e}");

    // With one, over plain http: refused before anything is sent (tokens go over https).
    let token = Secret::new("git-token", "t0ken-h7");
    let source = GitSource::new(GitSpec::parse(&url).unwrap(), state.path(), Some(token));
    let e = source.fetch().unwrap_err().to_string();
    assert!(
        e.contains("Will not send credentials in clear text over http"),
        "{e}"
    );
    assert!(!e.contains("t0ken-h7"), "{e}");
}

/// nginx terminating TLS in front of `upstream` on loopback, with a certificate for
/// 127.0.0.1 from a CA of the test's own (returned: the CA's file). Dropped, it stops
/// nginx with its workers, also when the test fails.
struct TlsProxy {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    fn start(upstream: u16) -> TlsProxy {
        let dir = crate::nginx_master::prefix_dir();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=berth test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "site.key",
            "-out",
            "site.csr",
        ]);
        fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "site.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "site.pem",
        ]);
        let port = crate::free_port();
        let conf = format!(
            "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/site.pem;\n\
             ssl_certificate_key {d}/site.key;\n    location / {{ proxy_pass http://127.0.0.1:{upstream}; }}\n  }}\n}}\n",
            d = d.display()
        );
        fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .spawn()
            .expect("nginx starts");
        // The guard first: nginx is stopped even if it never answers.
        let ca = d.join("ca.pem");
        let proxy = TlsProxy {
            child,
            port,
            ca,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        proxy
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        // `daemon off`: the child is nginx's master. Killed outright it would leave its
        // workers running; stopped, it takes them with it.
        crate::nginx_master::stop(self.child.id());
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_git_source_authenticates_with_the_token_secret() {
    let s = Scenario::new();
    let web = s.name("web");
    let repo = Repo::new();
    let commit = repo.commit(
        "first",
        &[("web.yaml", s.app("web", image(), "  port: 80\n"))],
    );
    let git = HttpGit::start(repo.bare.parent().unwrap(), "t0ken-h7");
    let tls = TlsProxy::start(git.port);
    write_secret(&s, "git-token", "t0ken-h7");
    let source = format!(
        "https://127.0.0.1:{}/cgi-bin/git/state.git#main:deploy",
        tls.port
    );
    // The test's CA is trusted the way an operator would: SSL_CERT_FILE.
    let ca = tls.ca.display().to_string();
    let c = Controller::start_with_env(&s, &source, &[], &[("SSL_CERT_FILE", &ca)]);
    eventually(&c, 40, "the commit fetched over https runs", || {
        running(&web) && c.api("/api/v1/status")["revisionApplied"] == commit.as_str()
    });
    assert!(!c.log().contains("t0ken-h7"));
    drop(c);

    // The wrong token: the fetch fails, says so, and shows no token.
    let s2 = Scenario::new();
    write_secret(&s2, "git-token", "guessed-9");
    let c = Controller::start_with_env(&s2, &source, &[], &[("SSL_CERT_FILE", &ca)]);
    eventually(&c, 20, "the failed fetch is reported", || {
        c.api("/api/v1/status")["fetch"]["error"].is_string()
    });
    let status = c.api("/api/v1/status");
    let error = status["fetch"]["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("failed to fetch https://127.0.0.1:"),
        "{error}"
    );
    assert!(
        !error.contains("guessed-9") && !c.log().contains("guessed-9"),
        "{error}"
    );
}
