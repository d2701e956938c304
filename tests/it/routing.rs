//! Routing output: every Traefik file berth writes validates against Traefik's
//! published file-provider schema; nginx output for the examples is well formed.

use std::collections::BTreeMap;
use std::fs;

use berth::desired::routes::{self, Route, RouteTls, Upstream};
use berth::drivers::traefik::Traefik;
use berth::manifest;
use serde_json::Value;

use crate::root;

fn traefik_validator() -> jsonschema::Validator {
    let path = root().join("tests/data/traefik/traefik-v3-file-provider.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn traefik() -> Traefik {
    Traefik {
        instance: "default".into(),
        dynamic_dir: "/etc/traefik/dynamic".into(),
        web: "web".into(),
        websecure: "websecure".into(),
        cert_resolver: Some("letsencrypt".into()),
    }
}

fn base() -> Route {
    Route {
        domain: "blog".into(),
        hosts: vec!["blog.example.com".into()],
        path: "/".into(),
        upstream: Upstream::Container {
            host: "blog".into(),
            port: 2368,
        },
        tls: RouteTls::Off,
        redirect_https: false,
        private_token: None,
        headers: BTreeMap::new(),
        max_body: None,
        acme_challenge: None,
    }
}

fn assert_valid(validator: &jsonschema::Validator, what: &str, config: &Value) {
    // What Traefik reads is the YAML file: validate what the file parses back to.
    let yaml = serde_yaml::to_string(config).unwrap();
    let back: Value = serde_yaml::from_str(&yaml).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&back)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{yaml}");
}

#[test]
fn every_traefik_case_validates_against_traefiks_schema() {
    let validator = traefik_validator();
    type Mutation = Box<dyn Fn(&mut Route)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("plain", Box::new(|_| {})),
        (
            "aliases",
            Box::new(|r| r.hosts.push("www.blog.example.com".into())),
        ),
        ("path", Box::new(|r| r.path = "/api".into())),
        (
            "host port",
            Box::new(|r| r.upstream = Upstream::HostPort { port: 8001 }),
        ),
        (
            "acme + redirect",
            Box::new(|r| {
                r.tls = RouteTls::Acme;
                r.redirect_https = true;
            }),
        ),
        (
            "files, no redirect",
            Box::new(|r| {
                r.tls = RouteTls::Files {
                    certificate: "/certs/a.pem".into(),
                    key: "/certs/a.key".into(),
                };
            }),
        ),
        (
            "private",
            Box::new(|r| r.private_token = Some("0123abcd".into())),
        ),
        (
            "headers + body",
            Box::new(|r| {
                r.headers.insert("X-Frame-Options".into(), "DENY".into());
                r.headers.insert(
                    "Strict-Transport-Security".into(),
                    "max-age=63072000; includeSubDomains".into(),
                );
                r.max_body = Some(64 << 20);
            }),
        ),
        (
            "everything",
            Box::new(|r| {
                r.hosts.push("xn--bcher-kva.example".into());
                r.path = "/shop".into();
                r.tls = RouteTls::Files {
                    certificate: "/certs/a.pem".into(),
                    key: "/certs/a.key".into(),
                };
                r.redirect_https = true;
                r.private_token = Some("ff00".into());
                r.headers.insert("X-A".into(), "b".into());
                r.max_body = Some(1024);
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut r = base();
        mutate(&mut r);
        let config = traefik().config(&r).unwrap();
        assert_valid(&validator, what, &config);
    }
}

#[test]
fn traefik_routes_say_what_a_user_expects() {
    let mut r = base();
    r.hosts.push("www.blog.example.com".into());
    r.tls = RouteTls::Acme;
    r.redirect_https = true;
    let c = traefik().config(&r).unwrap();
    let secure = &c["http"]["routers"]["berth-blog"];
    assert_eq!(
        secure["rule"],
        "(Host(`blog.example.com`) || Host(`www.blog.example.com`))"
    );
    assert_eq!(secure["entryPoints"], serde_json::json!(["websecure"]));
    assert_eq!(secure["tls"]["certResolver"], "letsencrypt");
    let http = &c["http"]["routers"]["berth-blog-http"];
    assert_eq!(
        http["middlewares"],
        serde_json::json!(["berth-blog-redirect"])
    );
    assert_eq!(
        c["http"]["middlewares"]["berth-blog-redirect"]["redirectScheme"]["scheme"],
        "https"
    );
    assert_eq!(
        c["http"]["services"]["berth-blog"]["loadBalancer"]["servers"][0]["url"],
        "http://blog:2368"
    );

    let mut p = base();
    p.private_token = Some("abc".into());
    let c = traefik().config(&p).unwrap();
    assert_eq!(
        c["http"]["routers"]["berth-blog-http"]["rule"],
        "Host(`blog.example.com`) && PathPrefix(`/p/abc/`)"
    );
    assert_eq!(
        c["http"]["middlewares"]["berth-blog-private"]["stripPrefix"]["prefixes"][0],
        "/p/abc"
    );

    let text = traefik().render(&p).unwrap();
    assert!(text.starts_with("# berth: Domain/blog sha256:"), "{text}");
    assert_eq!(
        routes::file_state("#", "blog", "default", &text),
        routes::FileState::Intact
    );
}

#[test]
fn the_examples_render_valid_traefik_files() {
    let validator = traefik_validator();
    for example in [
        "examples/wordpress",
        "examples/python-postgres",
        "examples/static-site",
        "state-repo-template",
    ] {
        let m = manifest::load_dir(&root().join(example)).unwrap();
        let ports: BTreeMap<String, u16> =
            routes::host_port_apps(&m).into_iter().zip(8000..).collect();
        let tokens: BTreeMap<String, String> = m
            .domains
            .keys()
            .map(|d| (d.clone(), "0123456789abcdef".to_owned()))
            .collect();
        let routes = routes::routes_for(
            &m,
            &routes::RouteInputs {
                host_ports: &ports,
                tokens: &tokens,
                secret_file: &|s| format!("/var/lib/berth/tls/{s}.pem"),
                acme: None,
            },
        )
        .unwrap();
        assert!(!routes.is_empty(), "{example} has domains");
        for (name, r) in routes {
            let config = traefik().config(&r).unwrap();
            assert_valid(&validator, &format!("{example}: {name}"), &config);
        }
    }
}
