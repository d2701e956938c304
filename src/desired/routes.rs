//! Desired routes: each Domain resolved against its app and the settings into what a
//! proxy must do — hosts, path, upstream, TLS, redirect, private prefix, headers.
//! Renderers (nginx, Traefik) turn a [`Route`] into a file; they check every value
//! again so that nothing can break out of a directive.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::model::{Proxy, Tls, Upstream as UpstreamMode};
use crate::manifest::{Manifests, syntax};

/// Where the proxy sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Upstream {
    /// `127.0.0.1:<port>`: the app publishes a host port (proxy on the host).
    HostPort {
        /// The host port.
        port: u16,
    },
    /// `<app>:<port>` on the shared network (proxy in a container).
    Container {
        /// The app's network alias.
        host: String,
        /// The app's port.
        port: u16,
    },
}

impl Upstream {
    /// `host:port`.
    pub fn address(&self) -> String {
        match self {
            Upstream::HostPort { port } => format!("127.0.0.1:{port}"),
            Upstream::Container { host, port } => format!("{host}:{port}"),
        }
    }
}

/// How a route serves HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RouteTls {
    /// Plain HTTP only.
    Off,
    /// Certificate and key files on the proxy's host.
    Files {
        /// PEM certificate chain.
        certificate: String,
        /// PEM private key.
        key: String,
    },
    /// A certificate from ACME (Traefik's resolver, or berth's client for nginx).
    Acme,
}

/// One Domain, ready to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The Domain's name.
    pub domain: String,
    /// Host names in ASCII (punycode), the main one first.
    pub hosts: Vec<String>,
    /// The path prefix (`/` for everything).
    pub path: String,
    /// Where traffic goes.
    pub upstream: Upstream,
    /// HTTPS.
    pub tls: RouteTls,
    /// Redirect HTTP to HTTPS.
    pub redirect_https: bool,
    /// For private domains: the token of the `/p/<token>/` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_token: Option<String>,
    /// Extra response headers.
    pub headers: BTreeMap<String, String>,
    /// Largest request body in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
    /// For berth's own ACME client (nginx): the account key's thumbprint. The route's
    /// plain-HTTP server answers every HTTP-01 challenge with `<token>.<thumbprint>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_challenge: Option<String>,
}

impl Route {
    /// The path the app is served under: `/p/<token>/` for private domains.
    pub fn public_path(&self) -> String {
        match &self.private_token {
            Some(token) => format!("/p/{token}/"),
            None => self.path.clone(),
        }
    }

    /// Checks every value a renderer writes: a value that could break out of its
    /// directive is refused here even if validation let it through.
    pub fn check(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("Domain/{}: refusing to render: {m}", self.domain));
        if let Err(m) = syntax::check_name(&self.domain) {
            return fail(m);
        }
        if self.hosts.is_empty() {
            return fail("no host".into());
        }
        for h in &self.hosts {
            match syntax::normalize_host(h) {
                Ok(n) if n == *h => {}
                Ok(_) => return fail(format!("host `{}` is not normalized", syntax::shown(h))),
                Err(m) => return fail(m),
            }
        }
        if let Err(m) = syntax::check_url_path(&self.path) {
            return fail(m);
        }
        if let Some(t) = &self.private_token {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return fail("the private token must be letters, digits and `-`".into());
            }
        }
        if let Some(t) = &self.acme_challenge {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return fail("the ACME thumbprint must be base64url".into());
            }
        }
        if let Upstream::Container { host, .. } = &self.upstream {
            if let Err(m) = syntax::check_name(host) {
                return fail(m);
            }
        }
        if let RouteTls::Files { certificate, key } = &self.tls {
            for p in [certificate, key] {
                if let Err(m) = syntax::check_fs_path(p) {
                    return fail(m);
                }
            }
        }
        for (name, value) in &self.headers {
            if let Err(m) = syntax::check_header_name(name).and(syntax::check_header_value(value)) {
                return fail(m);
            }
        }
        Ok(())
    }
}

/// A proxy file, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyFile {
    /// Its content, header line included.
    pub content: String,
    /// The Domains it serves; the file is named after the first.
    pub domains: Vec<String>,
}

/// The instance that owns proxy files whose header names none: they were written by
/// a berth from before headers named the instance, and `default` was the instance
/// unless `--instance` said otherwise.
pub const LEGACY_INSTANCE: &str = "default";

/// The first line of every proxy file berth writes: names the domain and the
/// instance that wrote it, and hashes the rest, so a file edited by hand is
/// recognised (and rewritten), a file without it is never touched, and instances
/// sharing a proxy directory never touch each other's files.
pub fn header(comment: &str, domain: &str, instance: &str, body: &str) -> String {
    format!(
        "{comment} berth: Domain/{domain} sha256:{} instance:{instance} (managed by berth: edits are reverted)\n",
        body_hash(body)
    )
}

fn body_hash(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

/// A proxy file: the header line naming the domain, instance and hash, then `body`.
pub fn with_header(comment: &str, domain: &str, instance: &str, body: &str) -> String {
    format!("{}{body}", header(comment, domain, instance, body))
}

/// What a proxy file on disk is, as far as berth is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileState {
    /// Written by berth for this domain and unchanged since.
    Intact,
    /// Written by berth but edited since (drift).
    Edited,
    /// Not written by berth: never touched.
    Foreign,
    /// Written by berth for another instance (named): never touched.
    OtherInstance(String),
    /// Written by a berth whose headers did not name the instance, seen from an
    /// instance other than [`LEGACY_INSTANCE`]: taken over (rewritten with this
    /// instance's header) if this instance declares its domain, never pruned.
    Legacy,
}

/// Reads the header of a proxy file's text, as seen by `instance`.
///
/// A header without an instance is [`LEGACY_INSTANCE`]'s. That instance treats such
/// a file as its own (the next write adds its name). Any other instance may take
/// it over only by declaring its domain — one that never declares it never prunes
/// it — so upgrading berth keeps working for a host that ran a single instance
/// under another name, and an undeclared legacy file is only ever removed by
/// `default`, as before.
pub fn file_state(comment: &str, domain: &str, instance: &str, text: &str) -> FileState {
    let Some((first, body)) = text.split_once('\n') else {
        return FileState::Foreign;
    };
    let prefix = format!("{comment} berth: Domain/{domain} sha256:");
    let Some(rest) = first.strip_prefix(&prefix) else {
        return FileState::Foreign;
    };
    let mut words = rest.split_whitespace();
    let hash_ok = words.next() == Some(&body_hash(body));
    let owner = words.next().and_then(|w| w.strip_prefix("instance:"));
    match owner {
        Some(owner) if owner != instance => FileState::OtherInstance(owner.to_owned()),
        None if instance != LEGACY_INSTANCE => FileState::Legacy,
        _ if hash_ok => FileState::Intact,
        _ => FileState::Edited,
    }
}

/// Which apps the proxy reaches through a host port (proxy on the host).
pub fn host_port_apps(manifests: &Manifests) -> std::collections::BTreeSet<String> {
    let settings = manifests.settings();
    let on_host = match &settings.proxy {
        Proxy::Nginx(n) => n.upstream == UpstreamMode::HostPort,
        Proxy::Traefik(t) => t.upstream == UpstreamMode::HostPort,
        Proxy::None => false,
    };
    if !on_host {
        return Default::default();
    }
    manifests
        .domains
        .values()
        .map(|d| d.spec.app.clone())
        .collect()
}

/// How berth's own ACME client serves the Domains with `tls: {acme: true}` (nginx).
pub struct AcmeRouting<'a> {
    /// The account key's thumbprint (see [`Route::acme_challenge`]).
    pub thumbprint: &'a str,
    /// The certificate file of a Domain, when it holds a certificate valid for the
    /// Domain's hosts; until then the Domain is served over plain HTTP.
    pub certificate: &'a dyn Fn(&str) -> Option<String>,
}

/// What a route depends on besides its Domain.
pub struct RouteInputs<'a> {
    /// The host port of each app in [`host_port_apps`].
    pub host_ports: &'a BTreeMap<String, u16>,
    /// The token of each private domain.
    pub tokens: &'a BTreeMap<String, String>,
    /// The file a secret-backed certificate or key is written to.
    pub secret_file: &'a dyn Fn(&str) -> String,
    /// Berth's ACME client, with nginx; `None` with Traefik, whose resolver orders.
    pub acme: Option<AcmeRouting<'a>>,
}

/// Resolves every Domain into a route.
pub fn routes_for(
    manifests: &Manifests,
    inputs: &RouteInputs<'_>,
) -> Result<BTreeMap<String, Route>, String> {
    let mut out = BTreeMap::new();
    for (name, d) in &manifests.domains {
        let app = manifests
            .apps
            .get(&d.spec.app)
            .ok_or_else(|| format!("Domain/{name}: no App named `{}`", d.spec.app))?;
        let port = d
            .spec
            .port
            .or(app.spec.port)
            .ok_or_else(|| format!("Domain/{name}: App `{}` has no port", d.spec.app))?;
        let upstream = match inputs.host_ports.get(&d.spec.app) {
            Some(hp) => Upstream::HostPort { port: *hp },
            None => Upstream::Container {
                host: d.spec.app.clone(),
                port,
            },
        };
        let mut acme_challenge = None;
        let tls = match &d.spec.tls {
            Tls::Off | Tls::Acme { acme: false } => RouteTls::Off,
            Tls::Acme { acme: true } => match &inputs.acme {
                Some(acme) => {
                    acme_challenge = Some(acme.thumbprint.to_owned());
                    match (acme.certificate)(name) {
                        Some(file) => RouteTls::Files {
                            certificate: file.clone(),
                            key: file,
                        },
                        None => RouteTls::Off,
                    }
                }
                None => RouteTls::Acme,
            },
            Tls::Files { certificate, key } => RouteTls::Files {
                certificate: certificate.clone(),
                key: key.clone(),
            },
            Tls::Secrets {
                certificate_secret,
                key_secret,
            } => RouteTls::Files {
                certificate: (inputs.secret_file)(certificate_secret),
                key: (inputs.secret_file)(key_secret),
            },
        };
        let redirect_https = d
            .spec
            .redirect_https
            .unwrap_or(!matches!(tls, RouteTls::Off))
            && !matches!(tls, RouteTls::Off);
        let route =
            Route {
                domain: name.clone(),
                hosts: d.spec.hosts.clone(),
                path: d.spec.path.clone(),
                upstream,
                tls,
                redirect_https,
                private_token: if d.spec.private {
                    Some(
                        inputs.tokens.get(name).cloned().ok_or_else(|| {
                            format!("Domain/{name}: its private token is missing")
                        })?,
                    )
                } else {
                    None
                },
                headers: d.spec.headers.clone(),
                max_body: d.spec.max_body_size.map(|s| s.bytes()),
                acme_challenge,
            };
        route.check()?;
        out.insert(name.clone(), route);
    }
    Ok(out)
}

/// The routes grouped by shared hosts: Domains that serve a common host (directly or
/// through another Domain) are one group, since nginx serves a host from one server
/// block. Each group is sorted by Domain name; groups by their first Domain's name.
pub fn sites(routes: &BTreeMap<String, Route>) -> Vec<Vec<&Route>> {
    let names: Vec<&String> = routes.keys().collect();
    let mut group: Vec<usize> = (0..names.len()).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    let mut first_with: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        for host in &routes[*name].hosts {
            match first_with.get(host.as_str()) {
                Some(&j) => {
                    let (a, b) = (root(&mut group, i), root(&mut group, j));
                    // The smaller index (the Domain sorting first) names the group.
                    group[a.max(b)] = a.min(b);
                }
                None => {
                    first_with.insert(host, i);
                }
            }
        }
    }
    let mut out: BTreeMap<usize, Vec<&Route>> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let r = root(&mut group, i);
        out.entry(r).or_default().push(&routes[*name]);
    }
    out.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn route() -> Route {
        Route {
            domain: "blog".into(),
            hosts: vec!["blog.example.com".into(), "www.blog.example.com".into()],
            path: "/".into(),
            upstream: Upstream::HostPort { port: 8001 },
            tls: RouteTls::Off,
            redirect_https: false,
            private_token: None,
            headers: BTreeMap::new(),
            max_body: None,
            acme_challenge: None,
        }
    }

    #[test]
    fn domains_sharing_a_host_are_one_site_named_after_the_first() {
        let mut routes = BTreeMap::new();
        let mut add = |name: &str, hosts: &[&str]| {
            let mut r = route();
            r.domain = name.to_owned();
            r.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
            routes.insert(name.to_owned(), r);
        };
        add("shop", &["shop.test"]);
        add("zeta", &["b.test", "c.test"]);
        add("api", &["a.test"]);
        add("web", &["a.test", "b.test"]);
        let groups: Vec<Vec<&str>> = sites(&routes)
            .into_iter()
            .map(|g| g.iter().map(|r| r.domain.as_str()).collect())
            .collect();
        assert_eq!(groups, [vec!["api", "web", "zeta"], vec!["shop"]]);
    }

    #[test]
    fn headers_recognise_intact_edited_and_foreign_files() {
        let body = "server {}\n";
        let text = format!("{}{body}", header("#", "blog", "web", body));
        assert_eq!(file_state("#", "blog", "web", &text), FileState::Intact);
        assert_eq!(
            file_state("#", "blog", "web", &text.replace("{}", "{ }")),
            FileState::Edited
        );
        assert_eq!(file_state("#", "blog", "web", body), FileState::Foreign);
        assert_eq!(file_state("#", "shop", "web", &text), FileState::Foreign);
    }

    #[test]
    fn headers_name_the_instance_that_owns_the_file() {
        let body = "server {}\n";
        let text = format!("{}{body}", header("#", "blog", "web", body));
        assert!(text.starts_with("# berth: Domain/blog sha256:"), "{text}");
        assert!(
            text.lines().next().unwrap().contains(" instance:web "),
            "{text}"
        );
        assert_eq!(
            file_state("#", "blog", "shop", &text),
            FileState::OtherInstance("web".into())
        );
        // Edited or not, another instance's file is that instance's business.
        assert_eq!(
            file_state("#", "blog", "shop", &text.replace("{}", "{ }")),
            FileState::OtherInstance("web".into())
        );
    }

    #[test]
    fn headers_without_an_instance_are_the_default_instances() {
        let body = "server {}\n";
        // What berth wrote before headers named the instance.
        let legacy = format!(
            "# berth: Domain/blog sha256:{} (managed by berth: edits are reverted)\n{body}",
            body_hash(body)
        );
        assert_eq!(
            file_state("#", "blog", LEGACY_INSTANCE, &legacy),
            FileState::Intact
        );
        assert_eq!(
            file_state("#", "blog", LEGACY_INSTANCE, &legacy.replace("{}", "{ }")),
            FileState::Edited
        );
        assert_eq!(file_state("#", "blog", "web", &legacy), FileState::Legacy);
    }

    #[test]
    fn hostile_values_are_refused_by_the_renderer_check() {
        type Mutation = Box<dyn Fn(&mut Route)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("`;`", Box::new(|r| r.hosts[0] = "a.com;".into())),
            ("`}`", Box::new(|r| r.hosts[0] = "a.com}".into())),
            ("a newline", Box::new(|r| r.hosts[0] = "a.com\nb".into())),
            ("a space", Box::new(|r| r.path = "/a b".into())),
            ("`;`", Box::new(|r| r.path = "/a;b".into())),
            (
                "`$`",
                Box::new(|r| {
                    r.headers.insert("X-A".into(), "$host".into());
                }),
            ),
            (
                "not normalized",
                Box::new(|r| r.hosts[0] = "Blog.example.com".into()),
            ),
            (
                "letters, digits",
                Box::new(|r| r.private_token = Some("a/b".into())),
            ),
            (
                "`;`",
                Box::new(|r| {
                    r.tls = RouteTls::Files {
                        certificate: "/a;b".into(),
                        key: "/k".into(),
                    }
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut r = route();
            mutate(&mut r);
            let err = r.check().unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(
                err.starts_with("Domain/blog: refusing to render: "),
                "{err}"
            );
        }
        assert!(route().check().is_ok());
    }
}
