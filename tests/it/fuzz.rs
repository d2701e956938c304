//! Property tests over hostile input, with a fixed budget so they run in `cargo test`:
//! the YAML loader on arbitrary bytes and on near-valid manifests, the condition and
//! template parsers on arbitrary and deeply nested text, and the proxy renderers on
//! routes built from valid-looking and hostile hosts, paths and headers. None may
//! panic; a rendered proxy file keeps its structure whatever the values.
//!
//! The runs are seeded, so a failure reproduces; each test prints how many inputs ran.

use std::collections::BTreeMap;

use berth::desired::routes::{Route, RouteTls, Upstream};
use berth::drivers::nginx::Nginx;
use berth::drivers::traefik::Traefik;
use berth::manifest::{self, SourceFile};
use berth::workflow::expr::{Expr, placeholders};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

/// Inputs per target: the whole file runs in a few seconds in a debug build.
const CASES: u32 = 10_000;

/// Runs `test` over `cases` inputs drawn from `strategy`; returns how many ran.
fn run<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value)) -> u32
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        // Shrinking a failure is worth it; the budget is for passing runs.
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let ran = std::cell::Cell::new(0);
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    println!("{name}: {} inputs ran", ran.get());
    ran.get()
}

fn load(text: String) {
    let files = [SourceFile {
        path: "fuzz.yaml".to_owned(),
        text,
    }];
    if let Err(problems) = manifest::load_files(&files) {
        for p in problems.iter() {
            let line = p.to_string();
            assert!(p.line >= 1 && p.column >= 1, "{line}");
            assert!(!line.contains(['\n', '\r', '\x1b']), "{line:?}");
        }
    }
}

#[test]
fn the_yaml_loader_survives_arbitrary_bytes() {
    let bytes = prop::collection::vec(any::<u8>(), 0..400);
    let ran = run("load_files(arbitrary bytes)", CASES, bytes, |bytes| {
        load(String::from_utf8_lossy(&bytes).into_owned())
    });
    assert_eq!(ran, CASES);
}

/// Pieces of manifests and of YAML syntax, strung together in any order: most inputs
/// are nearly valid documents, so the schema and semantic checks run too.
fn near_valid_yaml() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "apiVersion: berth/v1\n",
        "kind: App\n",
        "kind: Domain\n",
        "kind: Workflow\n",
        "kind: Database\n",
        "metadata:\n",
        "  name: blog\n",
        "metadata: {name: blog-2}\n",
        "spec:\n",
        "  image: ghost:5.2\n",
        "  image: host:99999/x\n",
        "  port: 2368\n",
        "  replicas: 2\n",
        "  env: {A: 1, B: [x]}\n",
        "  hosts: [blog.example.com]\n",
        "  app: blog\n",
        "  path: /admin\n",
        "  private: true\n",
        "  maxBodySize: 0\n",
        "  resources: {memory: 9000000Ti, cpus: 2048}\n",
        "  volumes: [{name: a, mount: /b}, {name: c, mount: //b}]\n",
        "  health: {cmd: [\"\"]}\n",
        "  backup: {schedule: \"0 0 31 2 *\"}\n",
        "  nodes: [{name: a, action: {deploy: {app: blog}}}]\n",
        "  condition: {if: \"((a.failed)\", then: [a]}\n",
        "---\n",
        "- ",
        "  ",
        "\t",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "&a ",
        "*a\n",
        "<<: *a\n",
        "'",
        "\"",
        "!!str ",
        "!custom ",
        "? ",
        "|\n",
        "# comment\n",
        "\u{feff}",
        "\n",
        "x",
        "é",
        "\x1b[31m",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

#[test]
fn the_yaml_loader_survives_near_valid_manifests() {
    let ran = run(
        "load_files(near-valid YAML)",
        CASES,
        near_valid_yaml(),
        load,
    );
    assert_eq!(ran, CASES);
}

/// Condition text: tokens of the language in any order, nested up to far past the
/// limit, or arbitrary text.
fn condition() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "a.failed",
        "b.succeeded",
        "c.output.x",
        "d.outcome",
        "(",
        ")",
        "!",
        "&&",
        "||",
        "==",
        "!=",
        "<",
        ">=",
        "'s'",
        "\"t\"",
        "1",
        "-2.5",
        "true",
        "null",
        " ",
        "x.y",
        ".",
        "{{",
        "}}",
    ]);
    let tokens = prop::collection::vec(token, 0..60).prop_map(|t| t.concat());
    // Up to the depth that overflowed the stack before conditions were bounded.
    let depth = prop_oneof![4 => 0usize..200, 1 => 5_000usize..20_000];
    let nested = (depth, any::<bool>()).prop_map(|(depth, bang)| {
        let open = if bang { "!(" } else { "(" };
        format!("{}a.failed{}", open.repeat(depth), ")".repeat(depth))
    });
    prop_oneof![tokens, nested, any::<String>(), "\\PC{0,200}"]
}

#[test]
fn conditions_and_templates_parse_or_fail_without_crashing() {
    let ran = run(
        "Expr::parse + placeholders",
        2 * CASES,
        condition(),
        |text| {
            match Expr::parse(&text) {
                Ok(e) => {
                    let _ = e.refs();
                    let _ = e.eval(&BTreeMap::new());
                }
                Err(m) => assert!(!m.is_empty()),
            }
            let _ = placeholders(&text);
        },
    );
    assert_eq!(ran, 2 * CASES);
}

fn host() -> impl Strategy<Value = String> {
    let valid = "(\\*\\.)?[a-z0-9]([a-z0-9]{0,4}-?[a-z0-9]{1,4})?(\\.[a-z]{1,6}){1,3}";
    let hostile = "[a-z0-9.*;{}\n \"'$#\\\\é-]{1,20}";
    prop_oneof![19 => valid, 1 => hostile]
}

fn path() -> impl Strategy<Value = String> {
    let valid = "/([a-zA-Z0-9_~+@,-]{1,8}/?){0,4}";
    let hostile = "/[a-z/;{}\n \"'$#\\\\.]{0,20}";
    prop_oneof![19 => valid, 1 => hostile]
}

fn header_value() -> impl Strategy<Value = String> {
    // Quotes, `$` and `\\` are refused; `;`, braces and `#` must stay inside the quotes.
    prop_oneof![19 => "[a-zA-Z0-9 ;{}'#,.=/:()<>!?*+-]{0,30}", 1 => any::<String>()]
}

prop_compose! {
    fn route()(
        domain in prop_oneof![19 => "[a-z][a-z0-9-]{0,10}[a-z0-9]", 1 => "[a-z;{\n ]{1,8}"],
        hosts in prop::collection::vec(host(), 1..4),
        path in path(),
        container in any::<bool>(),
        port in 1u16..,
        tls in 0u8..3,
        cert in path(),
        redirect_https in any::<bool>(),
        private_token in prop::option::of(prop_oneof![19 => "[a-zA-Z0-9-]{1,12}", 1 => "[a-z;\n/ ]{1,6}"]),
        headers in prop::collection::btree_map(prop_oneof![19 => "[A-Za-z][A-Za-z0-9-]{0,10}", 1 => "[a-z:\n ]{1,6}"], header_value(), 0..4),
        max_body in prop::option::of(any::<u64>()),
        acme_challenge in prop::option::of(prop_oneof![19 => "[A-Za-z0-9_-]{1,43}", 1 => "[a-z;\"\n ]{1,6}"]),
    ) -> Route {
        Route {
            domain,
            hosts,
            path,
            upstream: if container {
                Upstream::Container { host: "blog".to_owned(), port }
            } else {
                Upstream::HostPort { port }
            },
            tls: match tls {
                0 => RouteTls::Off,
                1 => RouteTls::Acme,
                _ => RouteTls::Files { certificate: cert.clone(), key: format!("{cert}.key") },
            },
            redirect_https,
            private_token,
            headers,
            max_body,
            acme_challenge,
        }
    }
}

/// Whether the nginx text keeps the shape berth writes: every directive on its own
/// line ending in `;`, blocks opened at the end of a line and closed alone on one,
/// balanced, and quotes paired, so no value carried in a second directive.
fn assert_nginx_shape(text: &str) {
    let mut depth = 0i32;
    for line in text.lines().skip(1) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        assert_eq!(t.matches('"').count() % 2, 0, "unpaired quote: {line:?}");
        // Outside quotes, `;`, `{` and `}` appear only where berth puts them.
        let bare: String = t.split('"').step_by(2).collect();
        let body = &bare[..bare.len() - 1];
        assert!(!body.contains([';', '{', '}', '#']), "injected: {line:?}");
        match t.chars().last() {
            Some('{') => depth += 1,
            Some('}') if t == "}" => depth -= 1,
            Some(';') => assert!(depth > 0, "directive outside a block: {line:?}"),
            _ => panic!("line does not end a directive or block: {line:?}"),
        }
        assert!(depth >= 0, "block closed twice: {text}");
    }
    assert_eq!(depth, 0, "unbalanced blocks: {text}");
}

#[test]
fn the_proxy_renderers_keep_their_structure_whatever_the_values() {
    let nginx = Nginx {
        instance: "fuzz".to_owned(),
        config_dir: "/etc/nginx/berth".into(),
        main_config: "/etc/nginx/nginx.conf".into(),
        test: vec!["nginx".to_owned(), "-t".to_owned()],
        reload: vec!["nginx".to_owned(), "-s".to_owned(), "reload".to_owned()],
        http_port: 80,
        https_port: 443,
    };
    let traefik = Traefik {
        instance: "fuzz".to_owned(),
        dynamic_dir: "/etc/traefik/dynamic".into(),
        web: "web".to_owned(),
        websecure: "websecure".to_owned(),
        cert_resolver: Some("le".to_owned()),
    };
    let rendered = std::cell::Cell::new(0);
    let ran = run("nginx + traefik renderers", CASES, route(), |route| {
        let accepted = route.check().is_ok();
        match nginx.render(&route) {
            Ok(text) => {
                assert!(accepted);
                assert!(text.starts_with(&format!("# berth: Domain/{} ", route.domain)));
                assert_eq!(text.lines().next().map(|l| l.contains('\r')), Some(false));
                assert_nginx_shape(&text);
                rendered.set(rendered.get() + 1);
            }
            Err(_) => assert!(!accepted),
        }
        match traefik.render(&route) {
            Ok(text) => {
                assert!(accepted);
                // The file parses back to exactly the configuration berth built.
                let (header, body) = text.split_once('\n').unwrap();
                assert!(header.starts_with(&format!("# berth: Domain/{} ", route.domain)));
                let parsed: serde_json::Value = serde_yaml::from_str(body).unwrap();
                assert_eq!(parsed, traefik.config(&route).unwrap());
            }
            Err(_) => assert!(!accepted),
        }
    });
    assert_eq!(ran, CASES);
    println!("  of which {} rendered", rendered.get());
    // Most routes are valid-looking: the renderers were exercised, not only refused.
    assert!(
        rendered.get() > CASES / 2,
        "only {} rendered",
        rendered.get()
    );
}

#[test]
fn the_nginx_shape_check_catches_an_injected_directive() {
    let good = "# header\nserver {\n    listen 80;\n    add_header X \"a; b {c}\" always;\n}\n";
    assert_nginx_shape(good);
    for bad in [
        "# header\nserver {\n    add_header X \"a\"; return 301 x;\n}\n",
        "# header\nserver {\n    server_name a;\n}\n}\n",
        "# header\nserver {\n    add_header X \"a\n    return 301 x;\"\n}\n",
        "# header\nserver {\n    location /a { return 200; }\n}\n",
    ] {
        let caught = std::panic::catch_unwind(|| assert_nginx_shape(bad));
        assert!(caught.is_err(), "not caught: {bad:?}");
    }
}
