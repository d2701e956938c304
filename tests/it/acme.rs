//! berth's own ACME client against a real ACME server: Debian's Pebble (with its DNS
//! stand-in pointing every name at 127.0.0.1), validating HTTP-01 through the test's
//! real nginx. A Domain with `tls: {acme: true}` ends up served over HTTPS with a
//! certificate chaining to Pebble's root; renewal, failure and backoff as a user (and
//! their chat) sees them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{Scenario, image, text};
use crate::free_port;
use crate::nginx::{Nginx, domain, with_nginx};

/// Pebble and pebble-challtestsrv, started for one test on ports of their own, with a
/// CA of the test's own for Pebble's HTTPS. Dropped, both are stopped.
struct Pebble {
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
    pebble: Option<Child>,
    dns: Child,
}

impl Pebble {
    /// Validates HTTP-01 challenges on `http_port` (nginx's).
    fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth test CA",
                "-keyout",
            ],
            d,
            &["ca.key", "-out", "ca.pem"],
        );
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ],
            d,
            &["server.key", "-out", "server.csr"],
        );
        fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial", "-in"],
            d,
            &[
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-out",
                "server.pem",
                "-extfile",
                "san.ext",
            ],
        );
        let (api, management, dns_port) = (free_port(), free_port(), free_port());
        fs::write(
            d.join("pebble.json"),
            serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{api}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": d.join("server.pem"),
                "privateKey": d.join("server.key"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }})
            .to_string(),
        )
        .unwrap();
        let log = |name: &str| fs::File::create(d.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv runs (Debian's pebble package)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(d.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once; never refuse a nonce on purpose.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble runs (Debian's pebble package)");
        let p = Pebble {
            dir,
            directory: format!("https://127.0.0.1:{api}/dir"),
            management,
            pebble: Some(pebble),
            dns,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.curl(&[&p.directory]).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble does not answer: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// `curl --cacert <the test CA>` with `args`: the body, or what went wrong.
    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.ca())
            .args(args)
            .output()
            .expect("curl runs");
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(text(&out)),
        }
    }

    /// The root Pebble issues under, as PEM, in a file.
    fn root(&self) -> PathBuf {
        let pem = self
            .curl(&[&format!("https://127.0.0.1:{}/roots/0", self.management)])
            .expect("pebble's management API answers");
        let path = self.dir.path().join("pebble-root.pem");
        fs::write(&path, pem).unwrap();
        path
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

fn openssl(args: &[&str], dir: &Path, files: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .args(files)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// `curl --cacert <root> --resolve <host>:<port>:127.0.0.1 https://<host>:<port><path>`:
/// the page, with the certificate checked against Pebble's root for that name.
fn https(root: &Path, host: &str, port: u16, path: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(text(&out)),
    }
}

/// The serial of the certificate nginx serves for `host`.
fn served_serial(host: &str, port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

fn file_serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The scenario's Settings pointed at nginx, with Pebble as the ACME CA.
fn settings(nginx: &Nginx, s: &Scenario, pebble: &Pebble) -> String {
    format!(
        "{}  acme:\n    directory: {}\n    email: ops@example.com\n    caBundle: {}\n",
        nginx.settings(&format!("{}-net", s.prefix)),
        pebble.directory,
        pebble.ca().display()
    )
}

/// Moves the certificate's renewal time to the past (as if two thirds of its
/// lifetime had gone by).
fn renewal_due(state: &Path, domain: &str) -> Value {
    let path = state.join(format!("certs/{domain}/state.json"));
    let mut record: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    // The moment it was stored: within its lifetime, and past.
    record["renewAt"] = record["lastAttempt"].clone();
    record["nextAttempt"] = Value::Null;
    fs::write(&path, record.to_string()).unwrap();
    record
}

/// A listener standing in for the team's chat, and the Notifier pointed at it.
fn webhook(s: &Scenario) -> crate::listener::Listener {
    let hook = crate::listener::Listener::start(200);
    fs::write(
        s.state_path().join("secrets/hook-url"),
        format!("{}/hook", hook.base),
    )
    .unwrap();
    s.write(
        "notify.yaml",
        "apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: ops}\n\
         spec: {type: webhook, urlSecret: hook-url}\n",
    );
    hook
}

fn record(state: &Path, domain: &str) -> Value {
    let path = state.join(format!("certs/{domain}/state.json"));
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_domain_with_acme_is_served_over_https_renewed_and_backs_off_when_the_ca_is_gone() {
    let (nginx, s) = with_nginx();
    let mut pebble = Pebble::start(nginx.http);
    let web = s.name("web");
    let host = "acme.example.com";
    s.write("settings.yaml", &settings(&nginx, &s, &pebble));
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            &format!("  hosts: [{host}]\n  tls: {{acme: true}}\n"),
        ),
    );

    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2), "{plan}");
    assert!(
        plan.contains(&format!(
            "  + issue certificate for {host} (ACME, HTTP-01)\n"
        )),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("+ generate secret acme-account-{}", s.prefix))
            && plan.contains("served over plain HTTP until its certificate is issued"),
        "{plan}"
    );
    assert!(
        !s.state_path().join("certs").exists(),
        "a dry run writes nothing"
    );

    let started = Instant::now();
    let out = s.apply();
    println!(
        "  first apply with an ACME order: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains(&format!("certificate {web}: done")), "{out}");
    let root = pebble.root();
    let page = https(&root, host, nginx.https, "/").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(page.contains("hello from the berth test image"), "{page}");
    let redirect = nginx.get(host, "/", 301);
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        format!("https://{host}:{}/", nginx.https)
    );
    // The challenge location stays for renewals, over plain HTTP.
    let challenge = nginx.get(host, "/.well-known/acme-challenge/abc-_1", 200);
    assert!(challenge.body.starts_with("abc-_1."), "{challenge:?}");
    let key = s
        .state_path()
        .join(format!("secrets/acme-account-{}", s.prefix));
    let cert = s.state_path().join(format!("certs/{web}/certificate.pem"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o600);
    assert_eq!(mode(&cert.with_file_name("state.json")), 0o600);
    let first_serial = file_serial(&cert);
    assert_eq!(served_serial(host, nginx.https), first_serial);

    // A second pass orders nothing.
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "{plan}");
    assert!(
        plan.contains(&format!("keep certificate {web}: valid until ")),
        "{plan}"
    );

    // Renewal time moved forward: renewed, and nginx serves the new certificate.
    renewal_due(s.state_path(), &web);
    let out = s.apply();
    assert!(
        out.contains(&format!(
            "~ renew certificate for {host} (ACME, HTTP-01): two thirds of its lifetime passed"
        )),
        "{out}"
    );
    let second_serial = file_serial(&cert);
    assert_ne!(second_serial, first_serial);
    assert_eq!(served_serial(host, nginx.https), second_serial);
    assert!(record(s.state_path(), &web)["renewAt"].as_u64().unwrap() > 1);

    // The CA is gone: renewal fails, the certificate in place keeps serving, the
    // failure is told once and the waits grow.
    pebble.stop();
    let hook = webhook(&s);
    renewal_due(s.state_path(), &web);
    let source = s.manifests_path().display().to_string();
    let c = crate::run::Controller::start_with(&s, &source, &[]);
    let failures = |c: &crate::run::Controller| {
        c.api("/api/v1/status")["certificates"][&web]["failures"].as_u64()
    };
    crate::run::eventually(&c, 60, "the failed renewal is in status", || {
        failures(&c) == Some(1)
    });
    let status = c.api("/api/v1/status");
    let shown = &status["certificates"][&web];
    assert!(
        shown["lastError"].as_str().unwrap().contains(&format!(
            "failed to register with the ACME directory {}",
            pebble.directory
        )),
        "{shown}"
    );
    assert_eq!(shown["hosts"], serde_json::json!([host]));
    assert!(
        shown["issuer"]
            .as_str()
            .unwrap()
            .starts_with("Pebble Intermediate CA"),
        "{shown}"
    );
    assert!(
        shown["nextAttempt"].is_string() && shown["notAfter"].is_string(),
        "{shown}"
    );
    let first = record(s.state_path(), &web);
    let wait = |r: &Value| r["nextAttempt"].as_u64().unwrap() - r["lastAttempt"].as_u64().unwrap();
    assert!(
        (285..=316).contains(&wait(&first)),
        "about 5 minutes: {first}"
    );
    let page = https(&root, host, nginx.https, "/").unwrap();
    assert!(page.contains("hello from the berth test image"));
    assert_eq!(
        served_serial(host, nginx.https),
        second_serial,
        "the old one serves"
    );

    // The retry is due: it fails again, waits twice as long, and is not told again.
    let path = s.state_path().join(format!("certs/{web}/state.json"));
    let mut due = first.clone();
    due["nextAttempt"] = 1.into();
    fs::write(&path, due.to_string()).unwrap();
    s.write("touch.yaml", "# a new revision, so that a pass runs now\n");
    crate::run::eventually(&c, 60, "the second failure is in status", || {
        failures(&c) == Some(2)
    });
    let second = record(s.state_path(), &web);
    assert!(
        (570..=631).contains(&wait(&second)),
        "about 10 minutes: {second}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let told: Vec<Value> = hook
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|j| j["event"] == "CertificateRenewalFailed")
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0]["summary"].as_str().unwrap().starts_with(&format!(
            "certificate of Domain {web} could not be issued: "
        )),
        "{told:?}"
    );
    let events = c.api("/api/v1/events");
    assert!(
        events.to_string().contains("CertificateRenewalFailed"),
        "{events}"
    );
    let resource = c.api(&format!("/api/v1/resources/certificate/{web}"));
    assert_eq!(resource["conditions"][0]["status"], false, "{resource}");
    drop(c);

    // A Domain removed from Git is no longer renewed: its certificate goes with it.
    s.remove("domain.yaml");
    let out = s.apply();
    assert!(
        out.contains(&format!(
            "- delete certificate {web}: its Domain is no longer declared"
        )),
        "{out}"
    );
    assert!(!cert.exists() && !s.state_path().join(format!("certs/{web}")).exists());
}

#[test]
fn a_certificate_close_to_expiry_and_not_renewed_is_told_expiring_once() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    let host = "expiring.example.com";
    // No CA answers here: renewals fail, and the certificate in place runs out.
    s.write(
        "settings.yaml",
        &format!(
            "{}  acme: {{directory: \"https://127.0.0.1:1/dir\"}}\n",
            nginx.settings(&format!("{}-net", s.prefix))
        ),
    );
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            &format!("  hosts: [{host}]\n  tls: {{acme: true}}\n"),
        ),
    );
    // A certificate of berth's that expires tomorrow, its renewal overdue and waiting
    // for its retry.
    let dir = s.state_path().join(format!("certs/{web}"));
    fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = |secs: u64| time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test Issuer");
    // A 90-day certificate issued 89 days ago.
    params.not_before = at(now - 89 * 86_400);
    params.not_after = at(now + 86_400);
    let pem = params.self_signed(&key).unwrap().pem() + &key.serialize_pem();
    fs::write(dir.join("certificate.pem"), pem).unwrap();
    fs::write(
        dir.join("state.json"),
        serde_json::json!({
            "instance": s.prefix, "renewAt": 1, "failures": 3, "lastAttempt": now,
            "nextAttempt": now + 3600, "lastError": "connection refused"
        })
        .to_string(),
    )
    .unwrap();
    let hook = webhook(&s);
    let source = s.manifests_path().display().to_string();
    let c = crate::run::Controller::start_with(&s, &source, &[]);
    let expiring = |c: &crate::run::Controller| {
        c.api("/api/v1/status")["certificates"][&web]["expiring"] == true
    };
    crate::run::eventually(&c, 60, "the certificate is shown expiring", || expiring(&c));
    // Served meanwhile, over HTTPS, with the certificate in place.
    let page = crate::http::get_https_on_loopback(host, nginx.https, "/").unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    s.write("touch.yaml", "# a new revision, so that a pass runs now\n");
    let passes = |c: &crate::run::Controller| {
        c.api("/api/v1/status")["passes"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>())
    };
    crate::run::eventually(&c, 60, "a second pass ran", || passes(&c) >= 2);
    std::thread::sleep(Duration::from_secs(2));
    let told: Vec<Value> = hook
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|j| j["event"] == "CertificateExpiring")
        .collect();
    assert_eq!(told.len(), 1, "once: {told:?}\n{}", c.log());
    assert!(
        told[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("certificate of Domain {web} expires ")),
        "{told:?}"
    );
    let shown = &c.api("/api/v1/status")["certificates"][&web];
    assert_eq!(shown["issuer"], "Test Issuer", "{shown}");
    assert_eq!(shown["failures"], 3, "{shown}");
    assert_eq!(shown["lastError"], "connection refused", "{shown}");
}
