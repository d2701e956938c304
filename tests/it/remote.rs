//! A remote Docker engine through `DOCKER_HOST=tcp://…` with TLS
//! (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`), for both runtimes: a daemon the test
//! starts with `--tlsverify` and certificates made with openssl, reached from its own
//! network namespace, where its TCP listener is.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::daemon::TestDaemon;
use crate::docker::{image, test_policy, text};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as `dockerd
/// --tlsverify` and the Docker CLI's DOCKER_CERT_PATH want them.
fn certificates(dir: &Path) {
    let script = r#"set -e
cd "$1"
mkdir client
openssl genrsa -out ca-key.pem 2048 2>/dev/null
openssl req -x509 -new -key ca-key.pem -days 2 -subj /CN=berth-test-ca -out ca.pem
openssl genrsa -out server-key.pem 2048 2>/dev/null
openssl req -new -key server-key.pem -subj /CN=127.0.0.1 -out server.csr
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile server.ext -out server-cert.pem 2>/dev/null
openssl genrsa -out client/key.pem 2048 2>/dev/null
openssl req -new -key client/key.pem -subj /CN=berth -out client.csr
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile client.ext -out client/cert.pem 2>/dev/null
cp ca.pem client/ca.pem
"#;
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(dir)
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "openssl: {}", text(&out));
}

#[test]
fn a_remote_engine_over_tls_runs_both_runtimes() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let daemon = TestDaemon::start(
        "tls",
        &[
            "--tlsverify",
            "--tlscacert",
            &file("ca.pem"),
            "--tlscert",
            &file("server-cert.pem"),
            "--tlskey",
            &file("server-key.pem"),
            "-H",
            "tcp://127.0.0.1:2376",
        ],
    );
    daemon.docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    daemon.load(image());
    let client = file("client");
    let berth = |manifests: &Path, state: &Path, instance: &str, env: &[(&str, &str)]| -> Output {
        daemon
            .in_netns(env!("CARGO_BIN_EXE_berth"))
            .args(["apply", "--color", "never", "--ready-timeout", "60"])
            .arg(manifests)
            .arg("--state-dir")
            .arg(state)
            .args(["--instance", instance])
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let tls = [
        ("DOCKER_HOST", "tcp://127.0.0.1:2376"),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", client.as_str()),
    ];
    let prefix = format!("tls{}", std::process::id());

    // Containers, with an HTTP health check: the daemon's containers are not reachable
    // from berth's side of a remote engine, so Docker checks it from inside.
    let (manifests, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(state.path().join("policy.yaml"), test_policy(state.path())).unwrap();
    fs::write(
        manifests.path().join("all.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: {{network: \
             {prefix}-net, proxy: {{kind: none}}}}\n---\napiVersion: berth/v1\nkind: App\n\
             metadata: {{name: {prefix}-web}}\nspec:\n  image: {}\n  port: 80\n  health: \
             {{http: /, interval: 1s, timeout: 1s, retries: 3}}\n",
            image()
        ),
    )
    .unwrap();
    let out = berth(manifests.path(), state.path(), &prefix, &tls);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let health = daemon.docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Healthcheck.Test}} {{.State.Health.Status}}",
        &format!("{prefix}-web"),
    ]);
    assert!(
        health.starts_with(r#"["CMD","/bin/sh","-c","wget -q -O /dev/null"#)
            && health.ends_with(" healthy"),
        "{health}"
    );

    // Swarm services, through the same engine.
    let (manifests2, state2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::write(
        state2.path().join("policy.yaml"),
        test_policy(state2.path()),
    )
    .unwrap();
    fs::write(
        manifests2.path().join("all.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec: {{runtime: \
             swarm, network: {prefix}-snet, proxy: {{kind: none}}}}\n---\napiVersion: berth/v1\n\
             kind: App\nmetadata: {{name: {prefix}-svc}}\nspec:\n  image: {}\n  endpointMode: \
             dnsrr\n",
            image()
        ),
    )
    .unwrap();
    let instance2 = format!("{prefix}b");
    let out = berth(manifests2.path(), state2.path(), &instance2, &tls);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let replicas = daemon.docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={prefix}-svc"),
        "--format",
        "{{.Replicas}}",
    ]);
    assert_eq!(replicas, "1/1");

    // Certificates missing: a clear error, before anything is tried.
    let empty = tempfile::tempdir().unwrap();
    let out = berth(
        manifests.path(),
        state.path(),
        &prefix,
        &[
            ("DOCKER_HOST", "tcp://127.0.0.1:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", empty.path().to_str().unwrap()),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "DOCKER_TLS_VERIFY is set, but {}/ca.pem cannot be read",
            empty.path().display()
        )),
        "{t}"
    );
    // Plain TCP to a TLS port: refused, and said so.
    let out = berth(
        manifests.path(),
        state.path(),
        &prefix,
        &[("DOCKER_HOST", "tcp://127.0.0.1:2376")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("cannot reach the Docker daemon"), "{t}");
}
