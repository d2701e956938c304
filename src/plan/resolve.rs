//! Resolve: everything a pass must know before it can plan, computed from the desired
//! and the observed state without writing anything — the private domains' tokens, the
//! host ports of apps the proxy reaches on the host, each Domain's route and rendered
//! proxy file, the TLS files to write from secrets, and the secrets generated for this
//! pass. What must be written becomes a step of the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::desired::routes;
use crate::desired::secrets::PassSecrets;
use crate::desired::{Desired, DesiredFile, MissingSecret, PortBinding, PortProtocol};
use crate::drivers::proxy::{ProxyDriver, ProxyError};
use crate::manifest::Manifests;
use crate::manifest::model::Tls;
use crate::observe::Observed;
use crate::state::secrets::SecretError;

/// Why a pass could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No host port could be allocated.
    #[error("failed to allocate host ports: {0}")]
    HostPorts(String),
    /// A Domain could not be turned into a route.
    #[error("failed to resolve the routes: {0}")]
    Route(String),
    /// A route could not be rendered into a proxy file.
    #[error("failed to render the proxy file of Domain/{domain}: {source}")]
    Render {
        /// The Domain.
        domain: String,
        /// Why.
        source: ProxyError,
    },
    /// A generated secret could not be had.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// What resolving adds beyond the desired state itself.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Each private domain's token (a placeholder in a dry run before the first apply).
    pub tokens: BTreeMap<String, String>,
    /// Secrets the Domains name that the store lacks (TLS certificates and keys).
    pub missing: Vec<MissingSecret>,
}

/// Shown where a private domain's token will be, in a dry run before it exists.
const TOKEN_PLACEHOLDER: &str = "token-generated-on-apply";

/// Completes `desired` for this host: host ports (which change the specs of the apps
/// they are published by), routes, proxy files, TLS files, and the secrets generated
/// for the pass. `tls_dir` is where secret-backed certificates are written.
pub fn resolve(
    desired: &mut Desired,
    manifests: &Manifests,
    observed: &Observed,
    secrets: &PassSecrets,
    proxy: &ProxyDriver,
    tls_dir: &Path,
) -> Result<Resolution, ResolveError> {
    let mut resolution = Resolution::default();
    for (name, d) in &manifests.domains {
        if !d.spec.private {
            continue;
        }
        let token = secrets
            .generated(&private_token_secret(name))?
            .map_or_else(|| TOKEN_PLACEHOLDER.to_owned(), |s| s.expose().to_owned());
        resolution.tokens.insert(name.clone(), token);
    }
    tls_files(
        desired,
        manifests,
        secrets,
        tls_dir,
        &mut resolution.missing,
    );
    let ports = host_ports(desired, manifests, observed)?;
    let secret_file = |name: &str| {
        tls_dir
            .join(format!("{name}.pem"))
            .to_string_lossy()
            .into_owned()
    };
    desired.routes = routes::routes_for(manifests, &ports, &resolution.tokens, &secret_file)
        .map_err(ResolveError::Route)?;
    for (domain, route) in &desired.routes {
        let file = proxy.render(route).map_err(|source| ResolveError::Render {
            domain: domain.clone(),
            source,
        })?;
        desired.proxy_files.insert(domain.clone(), file);
    }
    desired.new_secrets = secrets.new_secrets();
    Ok(resolution)
}

/// Allocates host ports to the apps the proxy reaches on the host and publishes them
/// on 127.0.0.1, which changes those apps' specs (and hashes).
fn host_ports(
    desired: &mut Desired,
    manifests: &Manifests,
    observed: &Observed,
) -> Result<BTreeMap<String, u16>, ResolveError> {
    let apps: BTreeSet<String> = routes::host_port_apps(manifests)
        .into_iter()
        .filter(|a| desired.apps.contains_key(a))
        .collect();
    // Ports held by the apps' own containers are theirs, not in use by others.
    let own: BTreeSet<u16> = apps
        .iter()
        .filter_map(|a| observed.host_ports.get(a).copied())
        .collect();
    let used = observed
        .published_ports
        .iter()
        .chain(&observed.listening_ports)
        .copied()
        .filter(|p| !own.contains(p))
        .collect();
    let current: BTreeMap<String, u16> = observed
        .host_ports
        .iter()
        .filter(|(a, _)| apps.contains(*a))
        .map(|(a, p)| (a.clone(), *p))
        .collect();
    let ports = super::ports::allocate(&apps, &current, &used, manifests.settings().host_ports)
        .map_err(ResolveError::HostPorts)?;
    for (name, host_port) in &ports {
        let Some(app) = desired.apps.get_mut(name) else {
            continue;
        };
        let target = manifests
            .domains
            .values()
            .find(|d| d.spec.app == *name)
            .and_then(|d| d.spec.port)
            .or(app.spec.port)
            .unwrap_or(80);
        app.spec.ports.push(PortBinding {
            host_ip: "127.0.0.1".to_owned(),
            host: *host_port,
            container: target,
            protocol: PortProtocol::Tcp,
        });
        app.host_port = Some(*host_port);
        app.hash = app.spec.hash();
    }
    Ok(ports)
}

/// The files that hold certificates and keys kept as secrets, for the proxy to read.
fn tls_files(
    desired: &mut Desired,
    manifests: &Manifests,
    secrets: &PassSecrets,
    dir: &Path,
    missing: &mut Vec<MissingSecret>,
) {
    for (domain, d) in &manifests.domains {
        let Tls::Secrets {
            certificate_secret,
            key_secret,
        } = &d.spec.tls
        else {
            continue;
        };
        for name in [certificate_secret, key_secret] {
            let path = dir
                .join(format!("{name}.pem"))
                .to_string_lossy()
                .into_owned();
            match secrets.get(name) {
                Ok(secret) => {
                    desired.files.insert(path, DesiredFile { secret });
                }
                Err(source) => missing.push(MissingSecret {
                    resource: format!("Domain/{domain}"),
                    variable: None,
                    source,
                }),
            }
        }
    }
}

/// How a private domain's token is shown anywhere but in its proxy file:
/// `<secret:private-blog sha256:1a2b3c4d>`. Its hash needs no key: a token is 128
/// random bits, which no guess reaches, and the plan can show it for a token read back
/// from a proxy file as well as for the current one.
pub(super) fn shown_token(domain: &str, token: &str) -> String {
    let name = private_token_secret(domain);
    if token == TOKEN_PLACEHOLDER {
        format!("<secret:{name} generated on apply>")
    } else {
        crate::state::secrets::Secret::new(&name, token).redacted()
    }
}

/// `text` with every private-URL token of `domain` (the `/p/<token>` of its proxy
/// file, the current token or an earlier one) shown redacted. Tokens are 32 characters;
/// a run under 16 after `/p/` is taken for an ordinary path and left alone.
pub(super) fn redact_tokens(domain: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/p/") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-')
            .count();
        if len >= 16 {
            out.push_str(&shown_token(domain, &after[..len]));
            rest = &after[len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The secret holding a private domain's token.
fn private_token_secret(domain: &str) -> String {
    let name = format!("private-{domain}");
    if name.len() <= 63 {
        name
    } else {
        format!("private-{}", crate::state::secrets::short_hash(domain))
    }
}
