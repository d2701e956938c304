//! The host policy: every case under tests/policy/ validates its `manifests/` against
//! its `policy.yaml` (the defaults of `/var/lib/berth` when there is none) with exactly
//! the output of its expected.txt; symlinks are judged by what they resolve to; and
//! `berth apply` refuses a repository that mounts the Docker socket.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth::manifest::{self, Policy};

use crate::{berth, root, stdout};

const STATE: &str = "/var/lib/berth";

fn policy_of(case: &Path) -> Result<Policy, String> {
    match fs::read_to_string(case.join("policy.yaml")) {
        Ok(text) => {
            Policy::parse(&text, "policy.yaml", Path::new(STATE)).map_err(|e| format!("{e}\n"))
        }
        Err(_) => Ok(Policy::defaults(Path::new(STATE))),
    }
}

#[test]
fn every_policy_case_gives_its_expected_output() {
    let dir = root().join("tests/policy");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expected = fs::read_to_string(case.join("expected.txt")).unwrap();
        let got = match policy_of(case) {
            Err(e) => e,
            Ok(policy) => match manifest::load_dir_with_policy(&case.join("manifests"), &policy) {
                Ok(_) => "(valid)\n".to_owned(),
                Err(d) => d.to_string(),
            },
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
fn the_same_cases_load_without_a_policy() {
    // Tools that do not act on a host (schema, fuzzing, planner fixtures) load without
    // one; only the policy refuses these.
    for case in ["docker-socket", "proxy-reload-command", "tls-file-outside"] {
        let dir = root().join("tests/policy").join(case).join("manifests");
        assert!(manifest::load_dir(&dir).is_ok(), "{case}");
    }
}

#[test]
fn a_symlinked_host_path_is_judged_by_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("srv");
    fs::create_dir(&allowed).unwrap();
    symlink("/etc", allowed.join("etc-link")).unwrap();
    let allowed = fs::canonicalize(&allowed).unwrap();
    let policy = Policy::parse(
        &format!("hostPaths: [{}]\n", allowed.display()),
        "policy.yaml",
        Path::new(STATE),
    )
    .unwrap();
    let path = format!("{}/etc-link/cron.d", allowed.display());
    assert_eq!(
        policy.check_host_path(&path).unwrap_err(),
        format!(
            "host path {path} (it resolves to /etc/cron.d) is outside the host policy \
             (hostPaths: {}; policy.yaml:1)",
            allowed.display()
        )
    );
    assert!(
        policy
            .check_host_path(&format!("{}/site", allowed.display()))
            .is_ok()
    );
}

#[test]
fn apply_refuses_a_repository_mounting_the_docker_socket_unless_the_policy_allows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = root().join("tests/policy/docker-socket-allowed/manifests");
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let state = state.to_str().unwrap();
    let args = [
        "apply",
        manifests.to_str().unwrap(),
        "--offline",
        "--color",
        "never",
        "--state-dir",
        state,
    ];
    let out = berth(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "app.yaml:9:17: App/web: host path /var/run/docker.sock is the Docker socket, \
             which gives the app root on the host; refused by the host policy \
             (dockerSocket: false; default; set it in {state}/policy.yaml)\n"
        )
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 problem in the manifests; nothing was applied"),
        "{err}"
    );

    // The same repository on a host whose policy allows the socket plans.
    let policy = root().join("tests/policy/docker-socket-allowed/policy.yaml");
    let mut allowed = args.to_vec();
    allowed.extend(["--policy", policy.to_str().unwrap()]);
    let out = berth(tmp.path(), &allowed);
    let text = stdout(&out);
    assert!(
        text.contains("+ create app web: new app (nginx:1.27-alpine)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the state dir's own policy.yaml is read when no --policy is given.
    fs::copy(&policy, format!("{state}/policy.yaml")).unwrap();
    let out = berth(tmp.path(), &args);
    assert!(
        stdout(&out).contains("+ create app web"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_invalid_policy_file_stops_apply_naming_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.yaml");
    fs::write(&policy, "hostPaths: [/srv]\ndockersocket: true\n").unwrap();
    let manifests = root().join("examples/wordpress");
    let out = berth(
        tmp.path(),
        &[
            "apply",
            manifests.to_str().unwrap(),
            "--offline",
            "--state-dir",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "failed to load the host policy: {}:2:1: unknown rule `dockersocket`",
            policy.display()
        )),
        "{err}"
    );
}

#[test]
fn the_host_policy_bounds_what_the_settings_allow_a_workflow_http_action() {
    let s = crate::docker::Scenario::new();
    let listener = crate::listener::Listener::start(200);
    // The Settings allow private targets; the host allows only one private network.
    s.write(
        "settings.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\n\
             spec: {{network: {}-net, workflows: {{allowPrivateTargets: true}}}}\n",
            s.prefix
        ),
    );
    let policy = s.state_path().join("policy.yaml");
    fs::write(&policy, "httpTargets: [public, 10.0.0.0/8]\n").unwrap();
    s.write(
        "check.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Workflow\nmetadata: {{name: poke}}\nspec:\n  \
             triggers: [{{on: manual}}]\n  nodes:\n    \
             - {{name: daemon, action: {{http: {{url: \"{}/x\"}}}}}}\n",
            listener.base
        ),
    );
    let out = s.berth(&["workflow", "run", "poke", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::docker::text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "daemon")
        .unwrap();
    assert_eq!(
        node["message"].as_str().unwrap(),
        format!(
            "refused to send a request to {}/x: 127.0.0.1 is outside the host policy \
             (httpTargets: public, 10.0.0.0/8; {}:1)",
            listener.base,
            policy.display()
        )
    );
    assert!(listener.received().is_empty(), "the request was sent");

    // The same run on a host that allows loopback reaches the listener.
    fs::write(&policy, "httpTargets: [public, 127.0.0.0/8]\n").unwrap();
    let out = s.berth(&["workflow", "run", "poke", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::docker::text(&out));
    assert_eq!(listener.received().len(), 1);
}
