//! A private domain's token is a secret: the plan (text and JSON), the proxy-file
//! diffs, the status API, status.json and the notifications show it redacted; only the
//! proxy file holds it, and nginx answers through it.

use std::fs;

use crate::docker::image;
use crate::listener::Listener;
use crate::nginx::{domain, with_nginx};
use crate::run::{Controller, eventually};

fn assert_hidden(what: &str, text: &str, token: &str) {
    assert!(
        !text.contains(token),
        "{what} shows the private token:\n{text}"
    );
}

#[test]
fn the_private_url_token_is_redacted_everywhere_but_the_proxy_file() {
    let (nginx, s) = with_nginx();
    let web = s.name("web");
    let hook = Listener::start(200);
    fs::write(
        s.state_path().join("secrets/hook-url"),
        format!("{}/berth/hook", hook.base),
    )
    .unwrap();
    s.write(
        "notifiers.yaml",
        "apiVersion: berth/v1\nkind: Notifier\nmetadata: {name: hook}\n\
         spec: {type: webhook, urlSecret: hook-url}\n",
    );
    s.write("web.yaml", &s.app("web", image(), "  port: 80\n"));
    s.write(
        "domain.yaml",
        &domain(
            &web,
            &web,
            "  hosts: [private.example.test]\n  private: true\n",
        ),
    );
    let shown = format!("<secret:private-{web} ");

    // Before the first apply there is no token yet.
    let (_, text) = s.dry_run();
    assert!(
        text.contains(&format!("at /p/<secret:private-{web} generated on apply>/")),
        "{text}"
    );

    let c = Controller::start_with(&s, &s.manifests_path().display().to_string(), &[]);
    let secret = s.state_path().join(format!("secrets/private-{web}"));
    eventually(&c, 60, "the token is generated", || secret.exists());
    let token = fs::read_to_string(&secret).unwrap();
    eventually(&c, 30, "nginx answers under the token", || {
        nginx
            .get("private.example.test", &format!("/p/{token}/"), 200)
            .status
            == 200
    });
    let conf_d = nginx.conf().parent().unwrap().join("conf.d");
    let file = conf_d.join(&nginx.files()[0]);
    let served = fs::read_to_string(&file).unwrap();
    assert!(served.contains(&format!("/p/{token}/")), "{served}");

    // Edited by hand: berth puts it back, and says so without the token.
    fs::write(&file, served.replace("proxy_http_version 1.1;", "")).unwrap();
    // A new revision brings the next pass at once.
    s.write(
        "web.yaml",
        &(s.app("web", image(), "  port: 80\n") + "# touched\n"),
    );
    eventually(&c, 30, "the edited proxy file is repaired", || {
        fs::read_to_string(&file).is_ok_and(|f| f == served)
    });
    eventually(&c, 10, "the Deployed notification arrives", || {
        !hook.received().is_empty()
    });
    let port = c.port;
    for path in ["/api/v1/status", "/api/v1/plan", "/api/v1/events", "/"] {
        let reply = crate::http::get(&format!("http://127.0.0.1:{port}{path}"), None).unwrap();
        assert_hidden(path, &reply.body, &token);
    }
    let events = crate::http::get(&format!("http://127.0.0.1:{port}/api/v1/events"), None)
        .unwrap()
        .body;
    assert!(events.contains(&shown), "{events}");
    for received in hook.received() {
        assert_hidden(
            "a notification",
            &String::from_utf8_lossy(&received.body),
            &token,
        );
    }
    drop(c);
    let status_json =
        fs::read_to_string(s.state_path().join(format!("status-{}.json", s.prefix))).unwrap();
    assert_hidden("status.json", &status_json, &token);

    // The dry run of another hand edit: the reason and the diff show it redacted.
    fs::write(&file, served.replace("proxy_http_version 1.1;", "")).unwrap();
    let (_, text) = s.dry_run();
    assert_hidden("the dry run", &text, &token);
    assert!(
        text.contains(&format!("location /p/{shown}sha256:")),
        "{text}"
    );
    let json = s.berth(&["apply", "--dry-run", "-o", "json"]);
    let json = String::from_utf8_lossy(&json.stdout).into_owned();
    assert_hidden("the JSON dry run", &json, &token);
    assert!(json.contains(&shown), "{json}");
}
