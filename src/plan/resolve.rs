//! Resolve: everything a pass must know before it can plan, computed from the desired
//! and the observed state without writing anything — the private domains' tokens, the
//! host ports of apps the proxy reaches on the host (a second one for a container that
//! takes over start-first), the ACME account and each Domain's certificate as found,
//! each Domain's route and rendered proxy file (and the file once its certificate
//! exists), the TLS files to write from secrets, and the secrets generated for this
//! pass. What must be written becomes a step of the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::ports;
use crate::desired::routes::{self, FileState};
use crate::desired::secrets::PassSecrets;
use crate::desired::{Desired, DesiredFile, HostPort, MissingSecret, ProxyFile};
use crate::drivers::batch::ProxyError;
use crate::drivers::proxy::ProxyDriver;
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
    /// The ACME account key cannot be used.
    #[error("{0}")]
    Acme(String),
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

/// What resolving reads besides the desired and observed states.
pub struct ResolveInputs<'a> {
    /// The pass's secrets (generated ones included).
    pub secrets: &'a PassSecrets,
    /// The proxy routes are rendered for.
    pub proxy: &'a ProxyDriver,
    /// The state directory: where secret-backed TLS files and ACME certificates live.
    pub state_dir: &'a Path,
    /// The berth instance (it names the ACME account).
    pub instance: &'a str,
    /// The time of the pass (Unix seconds): whether a certificate still serves.
    pub now: u64,
}

/// Completes `desired` for this host: host ports, the ACME account and certificates,
/// routes, proxy files, TLS files, and the secrets generated for the pass.
pub fn resolve(
    desired: &mut Desired,
    manifests: &Manifests,
    observed: &Observed,
    inputs: &ResolveInputs<'_>,
) -> Result<Resolution, ResolveError> {
    let secrets = inputs.secrets;
    let tls_dir = inputs.state_dir.join("tls");
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
        &tls_dir,
        &mut resolution.missing,
    );
    let ports = host_ports(desired, manifests, observed, inputs.proxy)?;
    let thumbprint = acme(desired, manifests, observed, inputs)?;
    let secret_file = |name: &str| {
        tls_dir
            .join(format!("{name}.pem"))
            .to_string_lossy()
            .into_owned()
    };
    let now = inputs.now;
    let certificates = &desired.certificates;
    let usable = |domain: &str| {
        certificates
            .get(domain)
            .filter(|c| c.usable(now))
            .map(|c| c.file.clone())
    };
    let route_inputs = |certificate: &dyn Fn(&str) -> Option<String>| {
        routes::routes_for(
            manifests,
            &routes::RouteInputs {
                host_ports: &ports,
                tokens: &resolution.tokens,
                secret_file: &secret_file,
                acme: thumbprint.as_deref().map(|thumbprint| routes::AcmeRouting {
                    thumbprint,
                    certificate,
                }),
            },
        )
        .map_err(ResolveError::Route)
    };
    let routes = route_inputs(&usable)?;
    let render = |routes| {
        inputs
            .proxy
            .render_files(routes)
            .map_err(|(domain, source)| ResolveError::Render { domain, source })
    };
    let files = render(&routes)?;
    // The files once the certificates ordered in this pass exist: the HTTPS server and
    // the redirect are switched on only then.
    let ordered = |domain: &str| {
        certificates
            .get(domain)
            .filter(|c| c.owner.is_none())
            .map(|c| c.file.clone())
    };
    let mut certified = BTreeMap::new();
    if certificates
        .values()
        .any(|c| !c.usable(now) && c.owner.is_none())
    {
        for (key, file) in render(&route_inputs(&ordered)?)? {
            if files.get(&key) != Some(&file) {
                certified.insert(key, file);
            }
        }
    }
    desired.routes = routes;
    desired.proxy_files = files;
    desired.certified_files = certified;
    desired.new_secrets = secrets.new_secrets();
    Ok(resolution)
}

/// Shown where the ACME account's thumbprint will be, in a dry run before the account
/// key exists.
const THUMBPRINT_PLACEHOLDER: &str = "account-key-generated-on-apply";

/// The secret holding an instance's ACME account key.
pub fn acme_account_secret(instance: &str) -> String {
    let name = format!("acme-account-{instance}");
    if crate::manifest::syntax::check_name(&name).is_ok() {
        name
    } else {
        format!(
            "acme-account-{}",
            crate::state::secrets::short_hash(instance)
        )
    }
}

/// Berth's ACME client (nginx): the account key (generated once), its thumbprint, and
/// each Domain's certificate as found. `None` when no Domain needs it.
fn acme(
    desired: &mut Desired,
    manifests: &Manifests,
    observed: &Observed,
    inputs: &ResolveInputs<'_>,
) -> Result<Option<String>, ResolveError> {
    let domains: Vec<(
        &String,
        &crate::manifest::Resource<crate::manifest::model::DomainSpec>,
    )> = manifests
        .domains
        .iter()
        .filter(|(_, d)| d.spec.tls == Tls::Acme { acme: true })
        .collect();
    if domains.is_empty() || !matches!(inputs.proxy, ProxyDriver::Nginx(_)) {
        return Ok(None);
    }
    let settings = manifests.settings().acme;
    let name = acme_account_secret(inputs.instance);
    let key = inputs.secrets.generated_with(&name, |store| {
        store.generate_with(&name, crate::drivers::acme::new_account_key)
    })?;
    let thumbprint = match &key {
        Some(key) => {
            crate::drivers::acme::thumbprint(key).map_err(|e| ResolveError::Acme(e.to_string()))?
        }
        None => THUMBPRINT_PLACEHOLDER.to_owned(),
    };
    let store = crate::state::certs::Certificates::new(inputs.state_dir);
    for (domain, d) in domains {
        let mut hosts = d.spec.hosts.clone();
        hosts.sort();
        let found = observed.certificates.get(domain.as_str());
        let record = found.and_then(|f| f.record.clone());
        let owner = observed.certificate_owners.get(domain.as_str()).cloned();
        let (current, missing) = match found.map(|f| &f.certificate) {
            Some(Ok(info)) => (Some(info.clone()), None),
            Some(Err(why)) => (None, Some(why.clone())),
            None => (None, Some("not issued yet".to_owned())),
        };
        desired.certificates.insert(
            domain.clone(),
            crate::desired::DesiredCertificate {
                domain: domain.clone(),
                hosts,
                file: store.file_of(domain).to_string_lossy().into_owned(),
                current,
                missing,
                record,
                window: observed.renewal_windows.get(domain.as_str()).copied(),
                owner,
            },
        );
    }
    desired.acme = Some(crate::desired::DesiredAcme {
        directory: settings.directory.clone(),
        email: settings.email.clone(),
        ca_bundle: settings.ca_bundle.clone(),
        key,
    });
    Ok(Some(thumbprint))
}

/// Allocates host ports to the apps the proxy reaches on the host (`127.0.0.1:<port>`
/// to the app's port). An app keeps the port of a container that already runs its
/// desired spec; one whose container is about to be replaced start-first behind nginx
/// gets a port of its own for the new container, which the proxy switches to; others
/// keep the port they have.
fn host_ports(
    desired: &mut Desired,
    manifests: &Manifests,
    observed: &Observed,
    proxy: &ProxyDriver,
) -> Result<BTreeMap<String, u16>, ResolveError> {
    let apps: BTreeSet<String> = routes::host_port_apps(manifests)
        .into_iter()
        .filter(|a| desired.apps.contains_key(a))
        .collect();
    // Every port an app's containers hold is theirs, not in use by others.
    let own: BTreeSet<u16> = observed
        .containers
        .iter()
        .filter(|c| apps.contains(&c.app))
        .filter_map(|c| observed.host_port_of(c))
        .collect();
    let used = observed
        .published_ports
        .iter()
        .chain(&observed.listening_ports)
        .copied()
        .filter(|p| !own.contains(p))
        .collect();
    let mut wishes = BTreeMap::new();
    let mut switchable = BTreeSet::new();
    for name in &apps {
        let app = &desired.apps[name];
        // A Domain file of the app that berth cannot write would never switch.
        let blocked = manifests
            .domains
            .iter()
            .filter(|(_, d)| d.spec.app == *name)
            .any(|(domain, _)| {
                matches!(
                    observed.proxy_files.get(domain.as_str()),
                    Some((FileState::Foreign | FileState::OtherInstance(_), _))
                )
            });
        if handover_possible(app, proxy) && !blocked {
            switchable.insert(name.clone());
        }
        let mine: Vec<&crate::observe::ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.app == *name && c.replica == 1)
            .collect();
        let running = |c: &&&crate::observe::ObservedContainer| super::app::is_up(&c.state);
        let wish = if let Some(p) = mine
            .iter()
            .filter(running)
            .filter(|c| c.hash == app.hash)
            .find_map(|c| observed.host_port_of(c))
        {
            ports::Wish::Keep(p)
        } else if switchable.contains(name) && mine.iter().any(|c| running(&c)) {
            ports::Wish::Fresh {
                avoid: mine
                    .iter()
                    .filter_map(|c| observed.host_port_of(c))
                    .collect(),
            }
        } else {
            match mine
                .iter()
                .find_map(|c| observed.host_port_of(c))
                .or_else(|| observed.host_ports.get(name).copied())
            {
                Some(p) => ports::Wish::Keep(p),
                None => ports::Wish::Any,
            }
        };
        wishes.insert(name.clone(), wish);
    }
    let ports = ports::allocate(&wishes, &used, manifests.settings().host_ports)
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
        // Under Swarm, Swarm's routing mesh publishes the port on every node, the
        // manager's proxy included: there is no container to hand over between.
        let swarm = desired.runtime == crate::manifest::model::Runtime::Swarm;
        app.host_port = Some(HostPort {
            host: *host_port,
            container: target,
            switchable: switchable.contains(name) && !swarm,
        });
        // The service publishes it: a new port is an update of the service.
        if let Some(service) = app.spec.service.as_mut() {
            service.host_port = Some(format!("{host_port}:{target}"));
            app.hash = app.spec.hash();
        }
    }
    Ok(ports)
}

/// Whether an update of `app` can start its new container beside the old one and
/// switch the proxy over: start-first, no fixed host ports of its own, and a proxy
/// berth reloads and asks (nginx).
pub fn handover_possible(app: &crate::desired::DesiredApp, proxy: &ProxyDriver) -> bool {
    app.update == crate::manifest::model::UpdateStrategy::StartFirst
        && app.spec.ports.is_empty()
        && proxy.verifies_reloads()
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

/// `text` (a version of `file`) with every private-URL token shown redacted: the
/// current tokens of the file's Domains by value, and any other `/p/<token>` run (an
/// earlier token read back from the file) as its first Domain's. Tokens are 32
/// characters; a run under 16 after `/p/` is taken for an ordinary path and left alone.
pub(super) fn redact_tokens(desired: &Desired, file: &ProxyFile, text: &str) -> String {
    let mut known = Vec::new();
    for domain in &file.domains {
        if let Some(token) = desired
            .routes
            .get(domain)
            .and_then(|r| r.private_token.as_deref())
            .filter(|t| t.len() >= 16)
        {
            known.push((token, shown_token(domain, token)));
        }
    }
    let first = file.domains.first().map(String::as_str).unwrap_or_default();
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
            let token = &after[..len];
            match known.iter().find(|(t, _)| *t == token) {
                Some((_, shown)) => out.push_str(shown),
                None => out.push_str(&shown_token(first, token)),
            }
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
