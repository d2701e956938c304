//! The host policy: what a repository may ask of this host, read from the host only.
//!
//! Whoever can push to the state repository decides what berth runs; the policy bounds
//! what that can reach on the host (bind mounts, the Docker socket, proxy files and
//! commands, TLS files, workflow `http` targets, health intervals, resources). It is read
//! from `<state-dir>/policy.yaml` (or `--policy FILE`), never from the repository.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::units::{Duration, Size};
use super::yaml::{self, Node, Value};

/// The largest policy file read, in bytes.
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("failed to read the host policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("failed to load the host policy: {path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The line of the offending value.
        line: usize,
        /// Its column.
        column: usize,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Where one rule of the policy comes from: a line of the policy file, or the default.
#[derive(Debug, Clone, PartialEq)]
struct Rule<T> {
    value: T,
    line: Option<usize>,
}

impl<T> Rule<T> {
    fn default(value: T) -> Rule<T> {
        Rule { value, line: None }
    }
}

/// An allowed target of a workflow `http` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTarget {
    /// Every public address.
    Public,
    /// The addresses of a network, `10.0.0.0/8`, `::1/128`.
    Network {
        /// The network's address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A host name, as written in the URL (compared without case).
    Host(String),
}

impl HttpTarget {
    fn parse(text: &str) -> Result<HttpTarget, String> {
        if text == "public" {
            return Ok(HttpTarget::Public);
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        if let Ok(addr) = addr.parse::<IpAddr>() {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("`{text}`: the prefix length must be 0 to {max}")),
                },
            };
            return Ok(HttpTarget::Network { addr, prefix });
        }
        let host_ok = prefix.is_none()
            && !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if host_ok {
            Ok(HttpTarget::Host(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{text}` is not `public`, a network (`10.0.0.0/8`) or a host name"
            ))
        }
    }

    /// Whether a request to `host` resolved to `ip` is covered.
    fn covers(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            HttpTarget::Public => is_public(ip),
            HttpTarget::Network { addr, prefix } => in_network(ip, *addr, *prefix),
            HttpTarget::Host(name) => host.eq_ignore_ascii_case(name),
        }
    }
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpTarget::Public => f.write_str("public"),
            HttpTarget::Network { addr, prefix } => write!(f, "{addr}/{prefix}"),
            HttpTarget::Host(h) => f.write_str(h),
        }
    }
}

/// What a repository may ask of this host. See the README's "Trust model and host
/// policy" for the file's format.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The file read, or the path it would be read from when the defaults apply.
    file: String,
    /// Whether `file` was read.
    from_file: bool,
    host_paths: Rule<Vec<String>>,
    docker_socket: Rule<bool>,
    proxy_paths: Rule<Vec<String>>,
    proxy_commands: Rule<Vec<Vec<String>>>,
    tls_roots: Rule<Vec<String>>,
    http_targets: Rule<Vec<HttpTarget>>,
    min_health_interval: Rule<Duration>,
    max_memory: Rule<Option<Size>>,
    max_cpus: Rule<Option<f64>>,
}

/// The directories no bind mount reaches unless the policy names them (or a path in
/// them) itself: a prefix of `/` alone does not open them.
pub const SENSITIVE_PATHS: [&str; 6] = ["/etc", "/proc", "/sys", "/dev", "/boot", "/root"];

/// The Docker daemon's sockets.
pub const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

impl Policy {
    /// The policy of a host whose state directory is `state_dir` and which has no
    /// policy file.
    pub fn defaults(state_dir: &Path) -> Policy {
        let state = state_dir.display().to_string();
        let state = state.trim_end_matches('/');
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Policy {
            file: format!("{state}/policy.yaml"),
            from_file: false,
            host_paths: Rule::default(vec!["/srv".to_owned(), format!("{state}/data")]),
            docker_socket: Rule::default(false),
            proxy_paths: Rule::default(words(&[
                "/etc/nginx/conf.d",
                "/etc/nginx/nginx.conf",
                "/etc/traefik/dynamic",
            ])),
            proxy_commands: Rule::default(vec![
                words(&["nginx", "-s", "reload"]),
                words(&["nginx", "-t"]),
            ]),
            tls_roots: Rule::default(vec![
                format!("{state}/tls"),
                "/etc/letsencrypt/live".to_owned(),
                "/etc/ssl".to_owned(),
            ]),
            http_targets: Rule::default(vec![HttpTarget::Public]),
            min_health_interval: Rule::default(Duration::from_secs(1)),
            max_memory: Rule::default(None),
            max_cpus: Rule::default(None),
        }
    }

    /// The policy of this host: `explicit` when given, else `<state_dir>/policy.yaml`
    /// when it exists, else the defaults.
    pub fn for_host(state_dir: &Path, explicit: Option<&Path>) -> Result<Policy, PolicyError> {
        match explicit {
            Some(path) => Policy::load(path, state_dir),
            None => {
                let path = state_dir.join("policy.yaml");
                if path.exists() {
                    Policy::load(&path, state_dir)
                } else {
                    Ok(Policy::defaults(state_dir))
                }
            }
        }
    }

    /// Reads the policy file `path`; what it leaves out is the default of `state_dir`.
    pub fn load(path: &Path, state_dir: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let read_error = |source| PolicyError::Read {
            path: shown.clone(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_error)?;
        if !meta.is_file() || meta.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                path: shown,
                line: 1,
                column: 1,
                message: format!("must be a regular file of at most {MAX_POLICY_BYTES} bytes"),
            });
        }
        let text = fs::read_to_string(path).map_err(read_error)?;
        Policy::parse(&text, &shown, state_dir)
    }

    /// Parses a policy file's text; `file` names it in messages.
    pub fn parse(text: &str, file: &str, state_dir: &Path) -> Result<Policy, PolicyError> {
        let invalid = |node: &Node, message: String| PolicyError::Invalid {
            path: file.to_owned(),
            line: node.mark.line,
            column: node.mark.col,
            message,
        };
        let (mut docs, error) = yaml::parse_documents(text);
        if let Some(e) = error {
            return Err(PolicyError::Invalid {
                path: file.to_owned(),
                line: e.mark.line,
                column: e.mark.col,
                message: e.message,
            });
        }
        if docs.len() > 1 {
            return Err(invalid(&docs[1], "only one document is allowed".to_owned()));
        }
        let mut policy = Policy::defaults(state_dir);
        policy.file = file.to_owned();
        policy.from_file = true;
        let Some(root) = docs.pop() else {
            return Ok(policy);
        };
        let entries = match root.value {
            Value::Map(entries) => entries,
            Value::Null => return Ok(policy),
            _ => return Err(invalid(&root, "expected a mapping of rules".to_owned())),
        };
        for (key, value) in &entries {
            let line = Some(key.mark.line);
            let bad = |m: String| invalid(value, m);
            match key.as_str().unwrap_or_default() {
                "hostPaths" => {
                    let paths = path_list(value).map_err(bad)?;
                    policy.host_paths = Rule { value: paths, line };
                }
                "dockerSocket" => match value.value {
                    Value::Bool(b) => policy.docker_socket = Rule { value: b, line },
                    _ => return Err(bad("expected true or false".to_owned())),
                },
                "proxyPaths" => {
                    let paths = path_list(value).map_err(bad)?;
                    policy.proxy_paths = Rule { value: paths, line };
                }
                "proxyCommands" => {
                    let commands = command_list(value).map_err(bad)?;
                    policy.proxy_commands = Rule {
                        value: commands,
                        line,
                    };
                }
                "tlsRoots" => {
                    let paths = path_list(value).map_err(bad)?;
                    policy.tls_roots = Rule { value: paths, line };
                }
                "httpTargets" => {
                    let targets = strings(value)
                        .map_err(bad)?
                        .iter()
                        .map(|t| HttpTarget::parse(t))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(bad)?;
                    policy.http_targets = Rule {
                        value: targets,
                        line,
                    };
                }
                "minHealthInterval" => {
                    let d = value
                        .as_str()
                        .ok_or_else(|| "expected a duration such as `1s`".to_owned())
                        .and_then(|s| s.parse::<Duration>().map_err(|e| e.to_string()))
                        .map_err(bad)?;
                    policy.min_health_interval = Rule { value: d, line };
                }
                "maxMemory" => {
                    let size = match &value.value {
                        Value::Null => None,
                        Value::Str(s) => Some(s.parse::<Size>().map_err(|e| bad(e.to_string()))?),
                        _ => return Err(bad("expected a size such as `4Gi`".to_owned())),
                    };
                    policy.max_memory = Rule { value: size, line };
                }
                "maxCpus" => {
                    let cpus = match value.value {
                        Value::Null => None,
                        Value::Int(i) if i > 0 => Some(i as f64),
                        Value::Float(f) if f > 0.0 => Some(f),
                        _ => return Err(bad("expected a positive number of CPUs".to_owned())),
                    };
                    policy.max_cpus = Rule { value: cpus, line };
                }
                other => {
                    return Err(invalid(
                        key,
                        format!(
                            "unknown rule `{other}`; the rules are hostPaths, dockerSocket, \
                             proxyPaths, proxyCommands, tlsRoots, httpTargets, \
                             minHealthInterval, maxMemory and maxCpus"
                        ),
                    ));
                }
            }
        }
        Ok(policy)
    }

    /// Where `rule` is set, for messages: `policy.yaml:3`, or the default's file.
    fn source<T>(&self, rule: &Rule<T>) -> String {
        match rule.line {
            Some(line) => format!("{}:{line}", self.file),
            None if self.from_file => format!("default, not set in {}", self.file),
            None => format!("default; set it in {}", self.file),
        }
    }

    /// Why a bind mount of `path` is refused, if it is.
    pub fn check_host_path(&self, path: &str) -> Result<(), String> {
        let real = canonical(path);
        if !self.docker_socket.value {
            for candidate in [path, real.as_str()] {
                let Some(socket) = DOCKER_SOCKETS.iter().find(|s| under(candidate, s)) else {
                    continue;
                };
                let what = match (candidate == path, candidate == *socket) {
                    (true, true) => "is the Docker socket".to_owned(),
                    (true, false) => format!("holds the Docker socket {socket}"),
                    (false, true) => format!("resolves to the Docker socket {socket}"),
                    (false, false) => {
                        format!("resolves to {candidate}, which holds the Docker socket {socket}")
                    }
                };
                return Err(format!(
                    "host path {path} {what}, which gives the app root on the host; refused \
                     by the host policy (dockerSocket: false; {})",
                    self.source(&self.docker_socket)
                ));
            }
        }
        for candidate in [path, real.as_str()] {
            if !any_allows(&self.host_paths.value, candidate) {
                let resolved = match candidate == path {
                    true => String::new(),
                    false => format!(" (it resolves to {candidate})"),
                };
                return Err(format!(
                    "host path {path}{resolved} is outside the host policy (hostPaths: {}; {})",
                    shown_list(&self.host_paths.value),
                    self.source(&self.host_paths)
                ));
            }
        }
        Ok(())
    }

    /// Why a proxy file or directory `path` is refused, if it is.
    pub fn check_proxy_path(&self, path: &str) -> Result<(), String> {
        self.check_under(&self.proxy_paths, "proxyPaths", "proxy path", path)
    }

    /// Why the proxy command `words` is refused, if it is.
    pub fn check_proxy_command(&self, words: &[String]) -> Result<(), String> {
        if self
            .proxy_commands
            .value
            .iter()
            .any(|c| command_matches(c, words))
        {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .proxy_commands
            .value
            .iter()
            .map(|c| format!("`{}`", c.join(" ")))
            .collect();
        Err(format!(
            "command `{}` is not allowed by the host policy (proxyCommands: {}; {})",
            words.join(" "),
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            },
            self.source(&self.proxy_commands)
        ))
    }

    /// Why a TLS file `path` is refused, if it is.
    pub fn check_tls_file(&self, path: &str) -> Result<(), String> {
        self.check_under(&self.tls_roots, "tlsRoots", "TLS file", path)
    }

    /// Why `path` (as written, and with its symlinks resolved) is outside every prefix
    /// of `rule`, if it is.
    fn check_under(
        &self,
        rule: &Rule<Vec<String>>,
        name: &str,
        what: &str,
        path: &str,
    ) -> Result<(), String> {
        let real = canonical(path);
        for candidate in [path, real.as_str()] {
            if !any_allows(&rule.value, candidate) {
                return Err(format!(
                    "{what} {path} is outside the host policy ({name}: {}; {})",
                    shown_list(&rule.value),
                    self.source(rule)
                ));
            }
        }
        Ok(())
    }

    /// Why a health check every `interval` is refused, if it is.
    pub fn check_health_interval(&self, interval: Duration) -> Result<(), String> {
        let min = self.min_health_interval.value;
        if interval.get() < min.get() {
            return Err(format!(
                "a health check every {interval} is more often than the host policy allows \
                 (minHealthInterval: {min}; {})",
                self.source(&self.min_health_interval)
            ));
        }
        Ok(())
    }

    /// Why a memory limit of `memory` is refused, if it is.
    pub fn check_memory(&self, memory: Option<Size>) -> Result<(), String> {
        let Some(max) = self.max_memory.value else {
            return Ok(());
        };
        match memory {
            Some(m) if m.bytes() <= max.bytes() => Ok(()),
            Some(m) => Err(format!(
                "memory {m} is more than the host policy allows (maxMemory: {max}; {})",
                self.source(&self.max_memory)
            )),
            None => Err(format!(
                "the host policy limits memory (maxMemory: {max}; {}); set `resources.memory`",
                self.source(&self.max_memory)
            )),
        }
    }

    /// Why a CPU limit of `cpus` is refused, if it is.
    pub fn check_cpus(&self, cpus: Option<f64>) -> Result<(), String> {
        let Some(max) = self.max_cpus.value else {
            return Ok(());
        };
        match cpus {
            Some(c) if c <= max => Ok(()),
            Some(c) => Err(format!(
                "{c} CPUs is more than the host policy allows (maxCpus: {max}; {})",
                self.source(&self.max_cpus)
            )),
            None => Err(format!(
                "the host policy limits CPUs (maxCpus: {max}; {}); set `resources.cpus`",
                self.source(&self.max_cpus)
            )),
        }
    }

    /// Whether the policy allows any `http` target that is not a public address: if
    /// not, `allowPrivateTargets: true` in the Settings asks for more than the host
    /// gives.
    pub fn allows_private_targets(&self) -> bool {
        self.http_targets
            .value
            .iter()
            .any(|t| !matches!(t, HttpTarget::Public))
    }

    /// Why a workflow `http` request to `host`, resolved to `ip`, is refused, if it is.
    pub fn check_http_target(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.http_targets.value.iter().any(|t| t.covers(host, ip)) {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .http_targets
            .value
            .iter()
            .map(ToString::to_string)
            .collect();
        Err(format!(
            "{ip} is outside the host policy (httpTargets: {}; {})",
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            },
            self.source(&self.http_targets)
        ))
    }

    /// The rule a Settings' `allowPrivateTargets: true` exceeds, for its message.
    pub fn http_targets_rule(&self) -> String {
        let allowed: Vec<String> = self
            .http_targets
            .value
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "httpTargets: {}; {}",
            allowed.join(", "),
            self.source(&self.http_targets)
        )
    }
}

/// Whether `words` is the allowed command `allowed`: the same words, or, when its last
/// word is `*`, the same first words followed by any others.
fn command_matches(allowed: &[String], words: &[String]) -> bool {
    match allowed.split_last() {
        Some((last, head)) if last == "*" => words.starts_with(head),
        _ => allowed == words,
    }
}

/// The path with its symlinks resolved, when it exists; the path itself otherwise.
/// Bind mounts follow symlinks, so `/srv/x -> /etc` must be judged as `/etc`.
fn canonical(path: &str) -> String {
    fs::canonicalize(path)
        .map(|p: PathBuf| p.display().to_string())
        .unwrap_or_else(|_| path.to_owned())
}

/// Whether `path` is `prefix` or inside it, by whole components.
fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return path.starts_with('/');
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether the policy entry `prefix` allows `path`: it is inside `prefix`, and a
/// sensitive directory (or `/` itself) is reached only through an entry that names it.
fn allows(prefix: &str, path: &str) -> bool {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if !under(prefix, path) {
        return false;
    }
    let prefix = prefix.trim_end_matches('/');
    if path == "/" {
        return prefix.is_empty();
    }
    SENSITIVE_PATHS
        .iter()
        .filter(|s| under(s, path))
        .all(|s| under(s, if prefix.is_empty() { "/" } else { prefix }))
}

/// Whether one of `prefixes`, as written or with its symlinks resolved, allows `path`.
fn any_allows(prefixes: &[String], path: &str) -> bool {
    prefixes
        .iter()
        .any(|p| allows(p, path) || allows(&canonical(p), path))
}

fn shown_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn strings(node: &Node) -> Result<Vec<String>, String> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "expected a list of strings".to_owned()),
        Value::Null => Ok(Vec::new()),
        _ => Err("expected a list of strings".to_owned()),
    }
}

fn path_list(node: &Node) -> Result<Vec<String>, String> {
    let paths = strings(node)?;
    for p in &paths {
        super::syntax::check_fs_path(p)?;
    }
    Ok(paths)
}

fn command_list(node: &Node) -> Result<Vec<Vec<String>>, String> {
    let Value::Seq(items) = &node.value else {
        return Err("expected a list of commands".to_owned());
    };
    items
        .iter()
        .map(|item| match &item.value {
            Value::Str(line) => Ok(line.split_whitespace().map(str::to_owned).collect()),
            Value::Seq(_) => strings(item),
            _ => Err("expected a command: a string or a list of strings".to_owned()),
        })
        .collect()
}

/// Whether `ip` is a public address (not loopback, private, link-local, unique-local,
/// unspecified, multicast or documentation).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    fn state() -> &'static Path {
        Path::new("/var/lib/berth")
    }

    #[test]
    fn the_defaults_allow_srv_and_the_data_dir_only() {
        let p = Policy::defaults(state());
        assert!(p.check_host_path("/srv/www").is_ok());
        assert!(p.check_host_path("/var/lib/berth/data/blog").is_ok());
        assert_eq!(
            p.check_host_path("/etc").unwrap_err(),
            "host path /etc is outside the host policy (hostPaths: /srv, /var/lib/berth/data; \
             default; set it in /var/lib/berth/policy.yaml)"
        );
        assert!(p.check_host_path("/srvx").is_err());
        assert!(p.check_host_path("/var/lib/berth/secrets").is_err());
    }

    #[test]
    fn a_prefix_of_slash_does_not_open_the_sensitive_directories() {
        let p = Policy::parse("hostPaths: [/]\n", "policy.yaml", state()).unwrap();
        assert!(p.check_host_path("/home/me").is_ok());
        // `/` holds the Docker socket.
        assert!(
            p.check_host_path("/")
                .unwrap_err()
                .contains("dockerSocket: false")
        );
        let open = Policy::parse("hostPaths: [/]\ndockerSocket: true\n", "p.yaml", state());
        assert!(open.unwrap().check_host_path("/").is_ok());
        for path in [
            "/etc",
            "/etc/cron.d",
            "/proc",
            "/sys/kernel",
            "/dev",
            "/boot",
            "/root",
        ] {
            let e = p.check_host_path(path).unwrap_err();
            assert!(e.contains("(hostPaths: /; policy.yaml:1)"), "{path}: {e}");
        }
        let p = Policy::parse("hostPaths: [/srv, /etc/app]\n", "policy.yaml", state()).unwrap();
        assert!(p.check_host_path("/etc/app/conf").is_ok());
        assert!(p.check_host_path("/").is_err());
    }

    #[test]
    fn the_docker_socket_is_refused_by_any_path_that_holds_it() {
        let p = Policy::parse("hostPaths: [/]\n", "policy.yaml", state()).unwrap();
        for path in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run",
            "/var/run",
        ] {
            assert!(p.check_host_path(path).is_err(), "{path}");
        }
        let open = Policy::parse("hostPaths: [/]\ndockerSocket: true\n", "p.yaml", state());
        assert!(open.unwrap().check_host_path("/run/docker.sock").is_ok());
    }

    #[test]
    fn http_targets_are_public_by_default_and_widened_by_networks_and_names() {
        let p = Policy::defaults(state());
        assert!(p.check_http_target("x", "1.1.1.1".parse().unwrap()).is_ok());
        assert!(
            p.check_http_target("x", "127.0.0.1".parse().unwrap())
                .is_err()
        );
        assert!(!p.allows_private_targets());
        let p = Policy::parse(
            "httpTargets: [public, 127.0.0.0/8, hooks.internal]\n",
            "policy.yaml",
            state(),
        )
        .unwrap();
        assert!(
            p.check_http_target("x", "127.1.2.3".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.check_http_target("x", "::ffff:127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            p.check_http_target("Hooks.Internal", "10.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert_eq!(
            p.check_http_target("x", "10.0.0.1".parse().unwrap())
                .unwrap_err(),
            "10.0.0.1 is outside the host policy (httpTargets: public, 127.0.0.0/8, \
             hooks.internal; policy.yaml:1)"
        );
    }

    #[test]
    fn proxy_commands_match_whole_or_up_to_a_final_star() {
        let words = |l: &str| l.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let p = Policy::defaults(state());
        assert!(p.check_proxy_command(&words("nginx -s reload")).is_ok());
        assert_eq!(
            p.check_proxy_command(&words("sh -c id")).unwrap_err(),
            "command `sh -c id` is not allowed by the host policy (proxyCommands: \
             `nginx -s reload`, `nginx -t`; default; set it in /var/lib/berth/policy.yaml)"
        );
        assert!(
            p.check_proxy_command(&words("nginx -s reload -g x"))
                .is_err()
        );
        let p = Policy::parse(
            "proxyCommands: [\"docker exec proxy *\"]\n",
            "p.yaml",
            state(),
        );
        let p = p.unwrap();
        assert!(
            p.check_proxy_command(&words("docker exec proxy nginx -t"))
                .is_ok()
        );
        assert!(
            p.check_proxy_command(&words("docker exec other nginx -t"))
                .is_err()
        );
    }

    #[test]
    fn an_invalid_policy_names_its_line() {
        let e = Policy::parse("hostPaths: [/srv]\nhostpath: [/]\n", "p.yaml", state());
        assert!(
            e.unwrap_err()
                .to_string()
                .starts_with("failed to load the host policy: p.yaml:2:1: unknown rule `hostpath`")
        );
        let e = Policy::parse("httpTargets: [10.0.0.0/40]\n", "p.yaml", state()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to load the host policy: p.yaml:1:14: `10.0.0.0/40`: the prefix length \
             must be 0 to 32"
        );
        let e = Policy::parse("minHealthInterval: soon\n", "p.yaml", state()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("failed to load the host policy: p.yaml:1:20:")
        );
    }
}
