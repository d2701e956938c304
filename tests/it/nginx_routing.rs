//! Routing behind a real nginx on the host, as its users meet it: updates that lose no
//! request (the new container on a host port of its own, nginx switched and asked,
//! then the old one removed), a reload nginx refuses, a live file that breaks under
//! the others, and Domains that share a host.

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::docker::{docker, image, text};
use crate::nginx::{domain, with_nginx};

/// Requests through nginx in a loop, each on a connection of its own, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(port: u16, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, host) = (stop.clone(), host.to_owned());
        let handle = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}/");
            let (mut ok, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                match client.get(&url).header("Host", &host).send() {
                    Ok(r) if r.status() == 200 => match r.text() {
                        Ok(body) if body.contains("hello from the berth test image") => ok += 1,
                        Ok(body) => failures.push(format!("200 with {body:?}")),
                        Err(e) => failures.push(format!("reading the body: {e}")),
                    },
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (ok, failures)
        });
        Load { stop, handle }
    }

    /// Stops the loop: the requests answered, and what went wrong with the others.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

fn names_running(prefix: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={prefix}"),
    ]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

#[test]
fn five_updates_behind_nginx_lose_no_request_and_a_failing_one_leaves_the_old_serving() {
    let (nginx, mut s) = with_nginx();
    let web = s.name("web");
    // Each version its own image tag (of the test image) and page.
    let tags: Vec<String> = (0..=6).map(|v| s.tag(&format!("v{v}"))).collect();
    let app = |v: usize, health: &str| {
        s.app(
            "web",
            &tags[v],
            &format!(
                "  port: 80\n  init: true\n  env: {{PAGE: v{v}}}\n  health: {{http: {health}, interval: 1s}}\n"
            ),
        )
    };
    s.write("web.yaml", &app(0, "/"));
    s.write(
        "domain.yaml",
        &domain(&web, &web, "  hosts: [zero.example.test]\n"),
    );
    s.apply();
    assert_eq!(nginx.get("zero.example.test", "/", 200).status, 200);

    let load = Load::start(nginx.http, "zero.example.test");
    let started = Instant::now();
    let mut ports = Vec::new();
    for v in 1..=5 {
        s.write("web.yaml", &app(v, "/"));
        let out = s.apply();
        assert!(
            out.contains(&format!(
                "~ update app {web}: image {} → {}",
                tags[v - 1],
                tags[v]
            )) && out.contains("start-first: the new container on 127.0.0.1:")
                && out.contains("takes over once the proxy reaches it"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "~ update domain {web}: proxy config changed; switches app {web} from 127.0.0.1:"
            )),
            "{out}"
        );
        let env = nginx.get("zero.example.test", "/cgi-bin/env", 200);
        assert!(env.body.contains(&format!("PAGE=v{v}")), "{env:?}");
        // One container, under its own name, on the port nginx reaches.
        assert_eq!(names_running(&web), [web.as_str()]);
        let port = s.inspect(&web)["Config"]["Labels"]["berth.host-port"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            fs::read_to_string(nginx.dir.path().join(format!("conf.d/berth-{web}.conf")))
                .unwrap()
                .contains(&format!("proxy_pass http://127.0.0.1:{port};")),
        );
        ports.push(port);
    }
    let (ok, failures) = load.stop();
    println!(
        "  {ok} requests through nginx during 5 updates in {:.1}s, {} failed; host ports {ports:?}",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(ok > 50, "the load ran: {ok}");
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ports.windows(2).all(|w| w[0] != w[1]),
        "each new container got a port of its own: {ports:?}"
    );
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(0), "in sync:\n{plan}");

    // A version that never gets ready: nothing switches, the old one answers on.
    let load = Load::start(nginx.http, "zero.example.test");
    s.write("web.yaml", &app(6, "/missing"));
    let out = s.berth(&["apply"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("app {web}: FAILED: "))
            && t.contains(&format!("the old container {web} keeps running (degraded)")),
        "{t}"
    );
    assert!(
        t.contains(&format!("domain {web}: skipped: dependency {web} failed")),
        "{t}"
    );
    let (ok, failures) = load.stop();
    assert!(ok > 0 && failures.is_empty(), "{ok} ok, {failures:?}");
    let env = nginx.get("zero.example.test", "/cgi-bin/env", 200);
    assert!(env.body.contains("PAGE=v5"), "{env:?}");
    assert_eq!(
        names_running(&web),
        [web.as_str()],
        "the failed one is gone"
    );
}

#[test]
fn a_reload_nginx_refuses_fails_its_domains_with_nginxs_words_and_is_retried() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(&web, &web, "  hosts: [reload.example.test]\n"),
    );
    s.apply();
    let live = nginx.dir.path().join(format!("conf.d/berth-{web}.conf"));
    let before = fs::read_to_string(&live).unwrap();

    // nginx's check passes (it binds nothing); its master cannot bind the new port.
    let blocker = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let settings = nginx.settings(&format!("{}-net", s.prefix));
    s.write(
        "settings.yaml",
        &settings.replace(
            &format!("listen: {{http: {}", nginx.http),
            &format!("listen: {{http: {taken}"),
        ),
    );
    let out = s.berth(&["apply"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "domain {web}: FAILED: nginx reload failed: bind() to 0.0.0.0:{taken} failed (98: Address already in use)"
        )),
        "{t}"
    );
    assert!(t.contains("retried next pass (degraded)"), "{t}");
    assert_eq!(
        fs::read_to_string(&live).unwrap(),
        before,
        "the live file is back as nginx runs it"
    );
    assert_eq!(nginx.get("reload.example.test", "/", 200).status, 200);
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2), "still to do:\n{plan}");

    drop(blocker);
    s.apply();
    let reply = crate::http::get(
        &format!("http://127.0.0.1:{taken}/"),
        Some("reload.example.test"),
    );
    assert_eq!(reply.map(|r| r.status).ok(), Some(200));
}

/// A self-signed certificate and key for `host`, in `dir`.
fn certificate(dir: &std::path::Path, host: &str) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{host}.pem")),
        dir.join(format!("{host}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={host}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", text(&out));
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn a_live_file_whose_certificate_disappears_degrades_only_its_own_domain() {
    let (nginx, s) = with_nginx();
    let certs = tempfile::tempdir().unwrap();
    let (a, b) = (s.name("aa"), s.name("bb"));
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    let web = s.name("web");
    let tls = |host: &str| {
        let (cert, key) = certificate(certs.path(), host);
        format!("  hosts: [{host}]\n  tls: {{certificate: {cert}, key: {key}}}\n")
    };
    let (a_cert, _) = certificate(certs.path(), "a.example.test");
    s.write("a.yaml", &domain(&a, &web, &tls("a.example.test")));
    s.write("b.yaml", &domain(&b, &web, &tls("b.example.test")));
    s.apply();
    assert_eq!(nginx.get("b.example.test", "/", 301).status, 301);

    // Someone removes a's certificate: nginx would refuse any configuration with a's
    // file, so b's next change could never load.
    fs::remove_file(&a_cert).unwrap();
    s.write(
        "b.yaml",
        &domain(
            &b,
            &web,
            &tls("b.example.test")
                .replace("[b.example.test]", "[b.example.test, new.example.test]"),
        ),
    );
    let out = s.berth(&["apply"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "domain {a}: FAILED: nginx rejected the config: cannot load certificate \"{a_cert}\""
        )) && t.contains("its live file was taken out so that the others could load (degraded)"),
        "{t}"
    );
    assert!(t.contains(&format!("domain {b}: done")), "{t}");
    assert_eq!(
        nginx.get("new.example.test", "/", 301).status,
        301,
        "b's new route is live"
    );
    assert_eq!(nginx.files(), [format!("berth-{b}.conf")]);
}

#[test]
fn two_domains_split_one_host_by_path() {
    let (nginx, s) = with_nginx();
    let (front, back) = (s.name("front"), s.name("back"));
    s.write(
        "front.yaml",
        &s.app("front", image(), "  port: 80\n  env: {PAGE: front}\n"),
    );
    s.write(
        "back.yaml",
        &s.app("back", image(), "  port: 80\n  env: {PAGE: back}\n"),
    );
    // `back` sorts first: the file of the host is named after it.
    s.write(
        "site.yaml",
        &domain(
            &front,
            &front,
            "  hosts: [shared.example.test, www.shared.example.test]\n",
        ),
    );
    s.write(
        "api.yaml",
        &domain(
            &back,
            &back,
            "  hosts: [shared.example.test]\n  path: /cgi-bin\n",
        ),
    );
    let out = s.apply();
    assert!(
        out.contains(&format!(
            "+ create domain {front}: new route shared.example.test, www.shared.example.test at / → 127.0.0.1:"
        )) && out.contains(&format!("(in berth-{back}.conf, shared with Domain {back}")),
        "{out}"
    );
    assert_eq!(nginx.files(), [format!("berth-{back}.conf")]);
    let env = nginx.get("shared.example.test", "/cgi-bin/env", 200);
    assert!(env.body.contains("PAGE=back"), "{env:?}");
    let env = nginx.get("www.shared.example.test", "/cgi-bin/env", 200);
    assert!(
        env.body.contains("PAGE=front"),
        "only front serves www: {env:?}"
    );
    assert!(docker(&["stop", "-t", "0", &back]).status.success());
    assert_eq!(
        nginx.get("shared.example.test", "/", 200).status,
        200,
        "front answers `/`"
    );
    let (code, plan) = s.dry_run();
    assert_eq!(code, Some(2), "{plan}");
    s.apply();

    // Without back, its file goes and front's takes the host again.
    s.remove("api.yaml");
    s.remove("back.yaml");
    s.apply();
    assert_eq!(nginx.files(), [format!("berth-{front}.conf")]);
    let env = nginx.get("shared.example.test", "/cgi-bin/env", 200);
    assert!(env.body.contains("PAGE=front"), "{env:?}");
}
