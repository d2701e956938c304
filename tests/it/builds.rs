//! Images built from source against the real daemon: `berth run` on a Git repository
//! builds an app from a folder of the commit (its Dockerfile `FROM` a Debian base made
//! here with debootstrap), builds nothing for an unrelated commit, rebuilds and rolls
//! the app start-first when the context changes, and keeps the old container serving,
//! the app Degraded with the failing step, when a `RUN` fails. Plans show the build;
//! `--dry-run` builds nothing; `secretArgs` is refused.

use std::process::Command;
use std::sync::OnceLock;

use crate::docker::{Scenario, docker, text};
use crate::gitops::Repo;
use crate::root;
use crate::run::{Controller, eventually};

/// The Debian base with busybox (for `httpd`), made once and cached by content.
fn base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/image/debian-base.sh"))
            .arg("busybox")
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "debian-base.sh: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

/// Removes every image berth built for `app` when the test ends, passed or not.
struct BuiltImages(String);

impl BuiltImages {
    fn tags(&self) -> Vec<String> {
        let out = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &format!("berth/{}", self.0),
        ]);
        let mut tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        tags.sort();
        tags
    }
}

impl Drop for BuiltImages {
    fn drop(&mut self) {
        for tag in self.tags() {
            // Untagged parent layers stay: a build beside may be using them.
            docker(&["rmi", "-f", "--no-prune", &tag]);
        }
    }
}

fn dockerfile(extra: &str) -> String {
    format!(
        "FROM {}\nARG GREETING\nCOPY index.html /www/index.html\n\
         RUN echo \"built with $GREETING\" > /www/built.txt\n{extra}\
         CMD [\"busybox\", \"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
        base()
    )
}

/// The body of GET `path` from the app's container, over the scenario's network.
fn page(s: &Scenario, container: &str, path: &str) -> Option<String> {
    let format = format!(
        "{{{{(index .NetworkSettings.Networks \"{}-net\").IPAddress}}}}",
        s.prefix
    );
    let out = docker(&["inspect", "-f", &format, container]);
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || ip.is_empty() {
        return None;
    }
    crate::http::get(&format!("http://{ip}:80{path}"), None)
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
}

fn container_id(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_git_source_builds_its_app_once_per_context_and_a_failed_build_keeps_the_old_one() {
    let s = Scenario::new();
    let app = s.name("hello");
    let images = BuiltImages(app.clone());
    let repo = Repo::new();
    let manifest = format!(
        "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  \
         build: {{context: apps/hello, args: {{GREETING: hi}}}}\n  port: 80\n  \
         health: {{http: /, interval: 1s}}\n"
    );
    let settings = format!(
        "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: {{network: {}-net}}\n",
        s.prefix
    );
    repo.commit(
        "first",
        &[
            ("settings.yaml", settings),
            ("hello.yaml", manifest),
            ("apps/hello/Dockerfile", dockerfile("")),
            ("apps/hello/index.html", "one".to_owned()),
            ("apps/hello/.dockerignore", "notes.txt\n".to_owned()),
            ("apps/hello/notes.txt", "not sent".to_owned()),
            ("README.md", "a readme".to_owned()),
        ],
    );
    let source = format!("file://{}#main:deploy", repo.bare.display());
    let c = Controller::start_with(&s, &source, &["--interval", "1s"]);

    // The first pass builds and runs it.
    eventually(&c, 240, "the built app serves its page", || {
        page(&s, &app, "/").as_deref() == Some("one")
    });
    assert_eq!(
        page(&s, &app, "/built.txt").as_deref(),
        Some("built with hi\n")
    );
    let first = images.tags();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(s.inspect(&app)["Config"]["Image"], first[0].as_str());
    let log = c.log();
    assert!(
        log.contains(&format!("build: Step 1/10 : FROM {}", base())),
        "the build's output is in the log:\n{log}"
    );
    let id = container_id(&app);

    // An unrelated commit: applied, nothing built, the container untouched.
    let unrelated = repo.commit("docs", &[("README.md", "more words".to_owned())]);
    eventually(&c, 60, "the unrelated commit is applied", || {
        c.api("/api/v1/status")["revisionApplied"] == unrelated.as_str()
    });
    assert_eq!(images.tags(), first);
    assert_eq!(container_id(&app), id);

    // A change inside the context: rebuilt, and rolled start-first.
    repo.commit("new page", &[("apps/hello/index.html", "two".to_owned())]);
    eventually(&c, 180, "the rebuilt app serves the new page", || {
        page(&s, &app, "/").as_deref() == Some("two")
    });
    let second = images.tags();
    assert_eq!(second.len(), 2, "{second:?}");
    assert_ne!(container_id(&app), id);

    // A failing RUN: the app is Degraded with the failing step; the old one serves.
    let serving = container_id(&app);
    let failing = repo.commit(
        "break the build",
        &[(
            "apps/hello/Dockerfile",
            dockerfile("RUN echo about to fail && false\n"),
        )],
    );
    let resource = format!("/api/v1/resources/App/{app}");
    eventually(&c, 180, "the failed build degrades the app", || {
        let r = c.api(&resource);
        r["conditions"][0]["status"] == false && r["conditions"][0]["reason"] == "ApplyFailed"
    });
    let r = c.api(&resource);
    let message = r["conditions"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at `Step 5/11 : RUN echo about to fail && false`"),
        "{message}"
    );
    assert!(message.contains("returned a non-zero code: 1"), "{message}");
    assert!(message.contains("about to fail"), "{message}");
    assert_eq!(
        c.api("/api/v1/status")["revisionObserved"],
        failing.as_str()
    );
    assert_eq!(container_id(&app), serving);
    assert_eq!(page(&s, &app, "/").as_deref(), Some("two"));
    // The whole log is kept in the state directory, and `berth logs --build` shows it.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["logs", "--build", &app, "--state-dir"])
        .arg(s.state_path())
        .args(["--instance", &s.prefix])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(shown.contains("Step 1/11 : FROM"), "{shown}");
    assert!(shown.contains("about to fail"), "{shown}");

    // Logs written to a file carry no terminal escapes.
    assert!(!c.log().contains('\x1b'), "{:?}", c.log());
}

const SECRET: &str = "s3cr3t-value-4f9a2b";

#[test]
fn a_build_secret_reaches_its_step_and_nothing_else() {
    let s = Scenario::new();
    let app = s.name("site");
    let images = BuiltImages(app.clone());
    let dir = s.manifests_path().join("apps/site");
    std::fs::create_dir_all(&dir).unwrap();
    // The step proves it read the secret (its hash goes into the image), and prints it:
    // berth's log must show it redacted. The run's prefix keeps the step out of the
    // build cache of an earlier run (a cached step prints nothing).
    std::fs::write(
        dir.join("Dockerfile"),
        dockerfile(&format!(
            "RUN --mount=type=secret,id=TOKEN sha256sum /run/secrets/TOKEN | cut -c1-64 \
             > /www/token.sha && echo \"{} token is $(cat /run/secrets/TOKEN)\"\n",
            s.prefix
        )),
    )
    .unwrap();
    std::fs::write(dir.join("index.html"), "site").unwrap();
    s.write(
        "site.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  \
             build: {{context: apps/site, target: ''}}\n"
        ),
    );
    let out = crate::berth(s.manifests_path(), &["validate", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "site.yaml:5:39: App/{app}: target `` must be letters, digits, `-`, `_` or `.`"
        )),
        "{}",
        text(&out)
    );
    s.write(
        "site.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: App\nmetadata: {{name: {app}}}\nspec:\n  build:\n    \
             context: apps/site\n    args: {{GREETING: hello}}\n    \
             secretArgs: {{TOKEN: api-token}}\n  port: 80\n"
        ),
    );

    // The plan shows the build and its options, never the value; a dry run builds nothing.
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2), "{plan}");
    assert!(
        plan.contains(&format!(
            "+ build image for app {app} (context apps/site, 2 files)"
        )),
        "{plan}"
    );
    assert!(plan.contains(&format!("+ create app {app}")), "{plan}");
    let json = text(&s.berth(&["apply", "--dry-run", "-o", "json"]));
    assert!(json.contains("\"step\": \"build\""), "{json}");
    for shown in [&plan, &json] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    assert!(images.tags().is_empty(), "a dry run builds nothing");

    // berth run builds it through BuildKit, the secret mounted for its step only.
    let c = Controller::start_with(&s, &s.manifests_path().display().to_string(), &[]);
    eventually(&c, 240, "the app built with its secret serves", || {
        page(&s, &app, "/").as_deref() == Some("site")
    });
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(SECRET.as_bytes()))
    };
    assert_eq!(
        page(&s, &app, "/token.sha").as_deref(),
        Some(format!("{sha}\n").as_str())
    );
    let tags = images.tags();
    assert_eq!(tags.len(), 1, "{tags:?}");
    let history = text(&docker(&["history", "--no-trunc", &tags[0]]));
    assert!(
        history.contains("GREETING"),
        "plain build args are in the history: {history}"
    );
    let inspect = text(&docker(&["image", "inspect", &tags[0]]));
    let log = c.log();
    assert!(log.contains("token is <secret:api-token sha256:"), "{log}");
    let kept = String::from_utf8_lossy(
        &Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["logs", "--build", &app, "--state-dir"])
            .arg(s.state_path())
            .args(["--instance", &s.prefix])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        kept.contains("token is <secret:api-token sha256:"),
        "{kept}"
    );
    let status = c.api("/api/v1/status").to_string();
    let resources = c.api("/api/v1/resources").to_string();
    let served_plan = c.api("/api/v1/plan").to_string();
    let on_disk = std::fs::read_to_string(s.state_path().join(format!("status-{}.json", s.prefix)))
        .unwrap_or_default();
    for (what, shown) in [
        ("docker history", &history),
        ("docker image inspect", &inspect),
        ("berth run's log", &log),
        ("the build log", &kept),
        ("status", &status),
        ("resources", &resources),
        ("the plan", &served_plan),
        ("the status file", &on_disk),
    ] {
        assert!(!shown.contains(SECRET), "{what} shows the secret: {shown}");
    }
    let cmdline = text(&docker(&[
        "inspect",
        "-f",
        "{{.Config.Cmd}} {{.Config.Env}}",
        &app,
    ]));
    assert!(!cmdline.contains(SECRET), "{cmdline}");

    // A failing step of a BuildKit build is named too, and the old container serves.
    std::fs::write(
        dir.join("Dockerfile"),
        dockerfile(&format!(
            "RUN --mount=type=secret,id=TOKEN echo \"{} failing with $(cat /run/secrets/TOKEN)\" \
             && false\n",
            s.prefix
        )),
    )
    .unwrap();
    let resource = format!("/api/v1/resources/App/{app}");
    eventually(&c, 120, "the failed build degrades the app", || {
        c.api(&resource)["conditions"][0]["reason"] == "ApplyFailed"
    });
    let message = c.api(&resource)["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("failed at `[4/4] RUN --mount=type=secret,id=TOKEN echo"),
        "{message}"
    );
    assert!(
        message.contains("failing with <secret:api-token sha256:"),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");
    assert_eq!(page(&s, &app, "/").as_deref(), Some("site"));
}
