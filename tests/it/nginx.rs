//! Domains through a real nginx (Debian's), started here on loopback ports with its
//! own prefix, in front of apps on the real Docker daemon.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::docker::{Scenario, docker, image, text};
use crate::http::{self, Reply};
use crate::nginx_master;

/// An nginx of the test's own: prefix, config directory, two loopback ports. Dropped,
/// it stops nginx with its workers, also when the test fails.
pub(crate) struct Nginx {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: u16,
    pub(crate) https: u16,
    /// The master's pid, once nginx has written it.
    master: Option<u32>,
}

use crate::free_port;

impl Nginx {
    pub(crate) fn start() -> Nginx {
        let dir = nginx_master::prefix_dir();
        let http = free_port();
        let p = dir.path().display();
        fs::create_dir(dir.path().join("conf.d")).unwrap();
        fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nworker_processes 1;\nuser root;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  \
                 server {{ listen {http} default_server; return 404; }}\n  include {p}/conf.d/*.conf;\n}}\n"
            ),
        )
        .unwrap();
        let mut n = Nginx {
            dir,
            http,
            https: free_port(),
            master: None,
        };
        let out = Command::new("nginx")
            .args(n.args())
            .output()
            .expect("nginx runs (Debian's nginx package)");
        assert!(out.status.success(), "nginx: {}", text(&out));
        n.master = nginx_master::master_from(&n.pid_file());
        assert!(n.master.is_some(), "nginx wrote no pid file");
        n
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }

    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.dir.path().display().to_string(),
            "-c".into(),
            self.conf().display().to_string(),
        ]
    }

    /// The Settings document that points berth at this nginx.
    pub(crate) fn settings(&self, network: &str) -> String {
        let p = self.dir.path().display();
        // A range of the test's own, so that parallel tests never pick the same port.
        static SLOT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let slot = SLOT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Below Linux's ephemeral ports (32768 and up), which any outgoing connection
        // on the host may hold: 11 runs side by side, 100 ranges of 20 each.
        let from = 10000 + (std::process::id() % 11) as u16 * 2000 + (slot % 100) * 20;
        format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec:\n  network: {network}\n  \
             hostPorts: {{from: {from}, to: {}}}\n  proxy:\n    kind: nginx\n    configDir: {p}/conf.d\n    \
             mainConfig: {p}/nginx.conf\n    test: [nginx, -t, -p, {p}]\n    \
             reload: [nginx, -p, {p}, -c, {p}/nginx.conf, -s, reload]\n    listen: {{http: {}, https: {}}}\n",
            from + 19,
            self.http,
            self.https
        )
    }

    pub(crate) fn get(&self, host: &str, path: &str, want: u16) -> Reply {
        get(self.http, host, path, want)
    }

    pub(crate) fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join("conf.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(master) = self
            .master
            .or_else(|| nginx_master::master_from(&self.pid_file()))
        {
            nginx_master::stop(master);
        }
    }
}

/// GET `path` with a Host header until the status is `want` (nginx reloads in the
/// background) or five seconds pass; returns the last answer (status 0 and the error
/// as the body when nginx could not be reached).
fn get(port: u16, host: &str, path: &str, want: u16) -> Reply {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut last = None;
    for _ in 0..25 {
        let reply = http::get(&url, Some(host)).unwrap_or_else(|e| Reply {
            status: 0,
            headers: Default::default(),
            body: format!("GET {url} (Host: {host}): {e}"),
        });
        if reply.status == want {
            return reply;
        }
        last = Some(reply);
        std::thread::sleep(Duration::from_millis(200));
    }
    last.expect("at least one try")
}

/// A scenario whose Settings point berth at a fresh nginx of its own.
pub(crate) fn with_nginx() -> (Nginx, Scenario) {
    let nginx = Nginx::start();
    let s = Scenario::new();
    s.write(
        "settings.yaml",
        &nginx.settings(&format!("{}-net", s.prefix)),
    );
    (nginx, s)
}

pub(crate) fn domain(name: &str, app: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Domain\nmetadata: {{name: {name}}}\nspec:\n  app: {app}\n{extra}"
    )
}

#[test]
fn a_domain_routes_its_hosts_to_the_app_through_nginx() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: routed}\n"),
    );
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            "  hosts: [web.example.test, www.web.example.test]\n",
        ),
    );
    let out = s.apply();
    assert!(
        out.contains(&format!(
            "+ create domain {web}: new route web.example.test, www.web.example.test at / → 127.0.0.1:"
        )),
        "{out}"
    );

    let Reply { status, body, .. } = nginx.get("web.example.test", "/", 200);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from the berth test image"), "{body}");
    assert_eq!(
        nginx
            .get("www.web.example.test", "/cgi-bin/env", 200)
            .status,
        200
    );
    assert_eq!(nginx.get("other.example.test", "/", 404).status, 404);
    assert_eq!(nginx.files(), [format!("berth-{web}.conf")]);
    let container = s.inspect(&web);
    let port = container["Config"]["Labels"]["berth.host-port"]
        .as_str()
        .unwrap()
        .to_owned();
    let Reply { status, .. } = nginx.get("web.example.test", "/", 200);
    assert_eq!(status, 200);
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "in sync after apply:\n{plan}");

    // New hosts and a path change the routing.
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            "  hosts: [new.example.test]\n  path: /cgi-bin\n",
        ),
    );
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2));
    assert!(
        plan.contains(&format!("~ update domain {web}: proxy config changed")),
        "{plan}"
    );
    assert!(
        plan.contains("-    server_name web.example.test www.web.example.test;\n")
            && plan.contains("+    server_name new.example.test;\n")
            && plan.contains("+    location /cgi-bin {\n"),
        "{plan}"
    );
    s.apply();
    assert_eq!(nginx.get("web.example.test", "/", 404).status, 404);
    assert_eq!(
        nginx.get("new.example.test", "/", 404).status,
        404,
        "only /cgi-bin is routed"
    );
    assert!(
        nginx
            .get("new.example.test", "/cgi-bin/env", 200)
            .body
            .contains("PAGE=routed")
    );
    assert_eq!(
        s.inspect(&web)["Config"]["Labels"]["berth.host-port"],
        port.as_str(),
        "the host port is stable"
    );

    // A file edited by hand is drift.
    let file = nginx.dir.path().join(format!("conf.d/berth-{web}.conf"));
    let edited = fs::read_to_string(&file)
        .unwrap()
        .replace("proxy_http_version 1.1;", "proxy_http_version 1.0;");
    fs::write(&file, edited).unwrap();
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2));
    assert!(
        plan.contains(&format!(
            "~ update domain {web}: proxy file edited by hand (drift)"
        )),
        "{plan}"
    );
    s.apply();

    // Removing the domain removes its file.
    s.remove("domain.yaml");
    s.apply();
    assert!(nginx.files().is_empty(), "{:?}", nginx.files());
    assert_eq!(
        nginx.get("new.example.test", "/cgi-bin/env", 404).status,
        404
    );
}

#[test]
fn a_private_domain_answers_only_under_its_token() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            "  hosts: [private.example.test]\n  private: true\n",
        ),
    );
    let out = s.apply();
    let secret = s.state_path().join(format!("secrets/private-{web}"));
    let token = fs::read_to_string(&secret).unwrap();
    assert_eq!(token.len(), 32);
    assert!(
        out.contains(&format!(
            "Domain/{web}: private URL http://private.example.test/p/{token}/"
        )),
        "{out}"
    );
    let Reply { status, body, .. } =
        nginx.get("private.example.test", &format!("/p/{token}/"), 200);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from the berth test image"));
    assert_eq!(nginx.get("private.example.test", "/", 404).status, 404);
    assert_eq!(
        nginx
            .get("private.example.test", "/p/wrongtoken/", 404)
            .status,
        404
    );
    // The token is generated once.
    s.apply();
    assert_eq!(fs::read_to_string(&secret).unwrap(), token);
}

#[test]
fn a_config_nginx_rejects_never_goes_live_and_others_still_converge() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    let api = s.name("api");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write("api.yaml", &s.app("api", image(), "  port: 80\n"));
    s.write(
        "good.yaml",
        &domain(&api, &api, "  hosts: [good.example.test]\n"),
    );
    s.write(
        "bad.yaml",
        &domain(&web, &web, "  hosts: [bad.example.test]\n  tls: {certificate: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n"),
    );
    let out = s.berth(&["apply"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "domain {web}: FAILED: nginx rejected the config: "
        )),
        "{t}"
    );
    assert!(
        t.contains("/nonexistent/cert.pem"),
        "nginx's own message: {t}"
    );
    assert!(t.contains("the live config is unchanged (degraded)"), "{t}");
    assert_eq!(nginx.files(), [format!("berth-{api}.conf")]);
    assert_eq!(nginx.get("good.example.test", "/", 200).status, 200);
    // nginx itself is still running the good config.
    assert_eq!(nginx.get("bad.example.test", "/", 404).status, 404);
}

#[test]
fn a_foreign_file_with_berths_name_is_a_conflict() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    let foreign = nginx.dir.path().join(format!("conf.d/berth-{web}.conf"));
    fs::write(&foreign, "# mine\n").unwrap();
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(&web, &web, "  hosts: [mine.example.test]\n"),
    );
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(1), "{plan}");
    assert!(
        plan.contains(&format!(
            "! conflict domain {web}: its proxy file exists and was not written by berth"
        )),
        "{plan}"
    );
    let out = s.berth(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(&foreign).unwrap(),
        "# mine\n",
        "never touched"
    );
    let _ = docker(&["ps"]);
}

/// nginx inside Docker on the apps' network, reaching them by container name.
struct NginxContainer {
    name: String,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Drop for NginxContainer {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.name]);
    }
}

/// The folder of an nginx run in a container: `nginx.conf` listening on 8080 and
/// including `conf.d/*.conf`, both under the folder (mounted at the same path).
pub(crate) fn nginx_in_docker_dir() -> tempfile::TempDir {
    let dir = nginx_master::prefix_dir();
    let p = dir.path().display().to_string();
    fs::create_dir(dir.path().join("conf.d")).unwrap();
    fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nuser root;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  \
             server {{ listen 8080 default_server; return 404; }}\n  include {p}/conf.d/*.conf;\n}}\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn a_proxy_in_docker_reaches_apps_by_container_name() {
    let mut s = Scenario::new();
    let network = format!("{}-net", s.prefix);
    // The proxy's network exists before berth: apps join it, berth leaves it alone.
    assert!(docker(&["network", "create", &network]).status.success());
    // Only this test runs nginx in Docker: its image goes with the test.
    let nginx_image = format!("berth-test/nginx:{}", s.prefix);
    s.remove_with(&nginx_image);
    let out = Command::new("bash")
        .arg(crate::root().join("tests/image/build-nginx.sh"))
        .arg(&nginx_image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let dir = nginx_in_docker_dir();
    let p = dir.path().display().to_string();
    let proxy = NginxContainer {
        name: format!("{}-proxy", s.prefix),
        http: free_port(),
        _dir: dir,
    };
    let out = docker(&[
        "run",
        "-d",
        "--name",
        &proxy.name,
        "--network",
        &network,
        "-v",
        &format!("{p}:{p}"),
        "-p",
        &format!("127.0.0.1:{}:8080", proxy.http),
        &nginx_image,
        "-c",
        &format!("{p}/nginx.conf"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let exec = |args: &str| format!("[docker, exec, {}, /usr/sbin/nginx, {args}]", proxy.name);
    s.write(
        "settings.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Settings\nmetadata: {{name: host}}\nspec:\n  network: {network}\n  proxy:\n    \
             kind: nginx\n    upstream: network\n    configDir: {p}/conf.d\n    mainConfig: {p}/nginx.conf\n    \
             test: {}\n    reload: {}\n    listen: {{http: 8080, https: 8443}}\n",
            exec("-t"),
            exec(&format!("-c, {p}/nginx.conf, -s, reload"))
        ),
    );
    let web = s.name("web");
    s.write(
        "web.yaml",
        &s.app("web", image(), "  port: 80\n  env: {PAGE: by-name}\n"),
    );
    s.write(
        "domain.yaml",
        &domain(&web, &web, "  hosts: [named.example.test]\n"),
    );
    let out = s.apply();
    assert!(
        out.contains(&format!("new route named.example.test at / → {web}:80")),
        "{out}"
    );
    assert!(
        s.inspect(&web)["HostConfig"]["PortBindings"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "no host port"
    );
    let Reply { status, body, .. } = get(proxy.http, "named.example.test", "/cgi-bin/env", 200);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PAGE=by-name"), "{body}");
}

#[test]
fn tls_from_files_and_from_secrets_with_a_redirect_to_https() {
    let (nginx, s) = with_nginx();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tls.example.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", text(&out));
    fs::copy(&cert, s.state_path().join("secrets/site-cert")).unwrap();
    fs::copy(&key, s.state_path().join("secrets/site-key")).unwrap();
    let web = s.name("web");
    let api = s.name("api");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "files.yaml",
        &domain(
            &web,
            &web,
            &format!(
                "  hosts: [tls.example.test]\n  tls: {{certificate: {}, key: {}}}\n",
                cert.display(),
                key.display()
            ),
        ),
    );
    s.write(
        "secrets.yaml",
        &domain(&api, &web, "  hosts: [secret-tls.example.test]\n  tls: {certificateSecret: site-cert, keySecret: site-key}\n  redirectHttps: false\n"),
    );
    s.apply();
    let redirect = nginx.get("tls.example.test", "/", 301);
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        format!("https://tls.example.test:{}/", nginx.https),
        "{redirect:?}"
    );
    let https = |host: &str| {
        http::get_https_on_loopback(host, nginx.https, "/")
            .unwrap_or_else(|e| panic!("https://{host}:{}/: {e}", nginx.https))
    };
    let page = https("tls.example.test");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("hello from the berth test image"),
        "{page:?}"
    );
    // From secrets: written 0600 under the state directory, no redirect asked for.
    let written = s.state_path().join("tls/site-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(nginx.get("secret-tls.example.test", "/", 200).status, 200);
    let page = https("secret-tls.example.test");
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("hello from the berth test image"),
        "{page:?}"
    );
}

/// Every byte of a folder: each file's path, mode and content.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let path = e.path();
            let shown = path.strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                todo.push(path);
                out.push((shown, meta.permissions().mode(), Vec::new()));
            } else {
                out.push((shown, meta.permissions().mode(), fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_dry_run_names_every_write_and_a_refused_apply_writes_nothing() {
    let (_nginx, s) = with_nginx();
    let key = s.state_path().join("secrets/site-key");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=t.example.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(s.state_path().join("secrets/site-cert"))
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", text(&out));
    let (web, private, tls) = (s.name("web"), s.name("private"), s.name("tls"));
    s.write(
        "web.yaml",
        &s.app(
            "web",
            image(),
            "  port: 80\n  secretEnv: {MAIL_PASSWORD: mail-password}\n",
        ),
    );
    s.write(
        "private.yaml",
        &domain(
            &private,
            &web,
            "  hosts: [p.example.test]\n  private: true\n",
        ),
    );
    s.write(
        "tls.yaml",
        &domain(
            &tls,
            &web,
            "  hosts: [t.example.test]\n  tls: {certificateSecret: site-cert, keySecret: site-key}\n  redirectHttps: false\n",
        ),
    );
    let state = s.state_path().display().to_string();
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(2), "{out}");
    for line in [
        format!(
            "+ generate secret private-{private}: generated once into the secret store (mode 0600)"
        ),
        format!(
            "+ write file {state}/tls/site-cert.pem: TLS file from secret site-cert (mode 0600)"
        ),
        format!("+ write file {state}/tls/site-key.pem: TLS file from secret site-key (mode 0600)"),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    assert!(out.contains(" 3 writes into the state dir."), "{out}");

    // The app's secret is missing: the apply is refused, and the state dir is exactly
    // as it was — no token generated, no TLS file written. (The instance's lock file
    // is the lock every apply takes, not state: it is left out.)
    let lock = format!("{}.lock", s.prefix);
    let snapshot = |dir| {
        let mut files = snapshot(dir);
        files.retain(|(path, _, _)| *path != lock);
        files
    };
    let before = snapshot(s.state_path());
    let out = s.berth(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nothing was applied"), "{}", text(&out));
    assert_eq!(
        snapshot(s.state_path()),
        before,
        "a refused apply wrote nothing"
    );

    // With the secret the same plan applies, and a second pass has nothing to write.
    fs::write(s.state_path().join("secrets/mail-password"), "pw-1234").unwrap();
    let out = s.apply();
    assert!(
        out.contains(&format!("+ generate secret private-{private}")),
        "{out}"
    );
    assert!(
        s.state_path()
            .join(format!("secrets/private-{private}"))
            .exists()
    );
    // The store drops the trailing newline an editor adds, as for every secret.
    assert_eq!(
        fs::read_to_string(s.state_path().join("tls/site-key.pem")).unwrap(),
        fs::read_to_string(&key).unwrap().trim_end()
    );
    let (code, out) = s.dry_run();
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("write"), "{out}");
}
