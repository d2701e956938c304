//! The nginx driver: one `berth-<domain>.conf` per domain in the config directory.
//!
//! A change is staged in a copy of the config directory, checked with `nginx -t`
//! against a copy of the main config that includes the staged directory, and only
//! then renamed into place; nginx is reloaded once at the end. Each domain is checked
//! on its own, so one rejected domain leaves the others converging, and a rejected
//! file never reaches the live directory.
//!
//! Every pass stages in a folder of its own, `<configDir>/.berth-staging-<instance>-
//! <pid>-<n>` (beside the live files, so the copy sees them all, and outside nginx's
//! `*.conf` pattern), with its test config `.berth-test-<same>.conf` beside the main
//! config; both are removed when the pass's changes are done. The pass holds a
//! `flock` on its folder while it lives: a folder nobody holds is a leftover of a
//! killed pass, removed by the next one, and a live pass's folder is never touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};

use crate::desired::routes::{self, FileState, Route, RouteTls, Upstream};
use crate::drivers::proxy::ProxyError;
use crate::state::atomic;

/// The comment marker of nginx files.
const COMMENT: &str = "#";

/// The name of every staging folder starts with this.
const STAGING: &str = ".berth-staging";

/// How old an unlocked staging folder or temporary file must be to be a leftover:
/// covers the moment between a pass creating its folder and locking it.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Where nginx is and how it is driven.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The berth instance whose files these are (named in each file's header).
    pub instance: String,
    /// The directory nginx includes `*.conf` from.
    pub config_dir: PathBuf,
    /// The main configuration file (the one that includes `config_dir`).
    pub main_config: PathBuf,
    /// The check command; `-c <file>` is appended.
    pub test: Vec<String>,
    /// The reload command.
    pub reload: Vec<String>,
    /// Ports to listen on.
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
}

/// A file change for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this content.
    Write(String),
    /// Remove the file.
    Remove,
}

impl Nginx {
    /// The file of a domain.
    pub fn file_name(domain: &str) -> String {
        format!("berth-{domain}.conf")
    }

    /// Renders a route as an nginx config file (header line included).
    pub fn render(&self, route: &Route) -> Result<String, ProxyError> {
        route.check().map_err(ProxyError::Render)?;
        let body = render_body(route, self.http_port, self.https_port);
        Ok(routes::with_header(
            COMMENT,
            &route.domain,
            &self.instance,
            &body,
        ))
    }

    /// Applies changes domain by domain; returns each domain's result and reloads nginx
    /// once if anything changed. Errors carry nginx's own message.
    pub fn apply(
        &self,
        changes: &BTreeMap<String, Change>,
    ) -> BTreeMap<String, Result<(), ProxyError>> {
        let mut results = BTreeMap::new();
        if changes.is_empty() {
            return results;
        }
        remove_stale_staging(&self.config_dir, &self.main_config);
        atomic::remove_stale_temporaries(&self.config_dir, "berth-", STALE_AFTER);
        let writes = changes.values().any(|c| matches!(c, Change::Write(_)));
        let staging = match writes {
            true => Some(Staging::create(
                &self.config_dir,
                &self.main_config,
                &self.instance,
            )),
            false => None,
        };
        let mut changed = false;
        for (domain, change) in changes {
            let result = match (change, &staging) {
                (Change::Remove, _) => self.remove(domain).map_err(ProxyError::Change),
                (Change::Write(content), Some(Ok(staging))) => self
                    .write(staging, domain, content)
                    .map_err(ProxyError::Change),
                (Change::Write(_), Some(Err(e))) => Err(ProxyError::Stage(e.clone())),
                (Change::Write(_), None) => unreachable!("a write has a staging folder"),
            };
            changed |= result.is_ok();
            results.insert(domain.clone(), result);
        }
        drop(staging);
        if changed {
            if let Err(e) = run(&self.reload) {
                for r in results.values_mut() {
                    if r.is_ok() {
                        *r = Err(ProxyError::Reload(e.clone()));
                    }
                }
            }
        }
        results
    }

    fn remove(&self, domain: &str) -> Result<(), String> {
        let live = self.config_dir.join(Self::file_name(domain));
        match std::fs::remove_file(&live) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("failed to remove {}: {e}", live.display())),
        }
    }

    fn write(&self, staging: &Staging, domain: &str, content: &str) -> Result<(), String> {
        self.check_staged(staging, domain, content)?;
        let live = self.config_dir.join(Self::file_name(domain));
        atomic::write_atomic(&live, content.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", live.display()))
    }

    /// Fills the pass's staging folder with the live files and `content` as the
    /// domain's file, and runs the check command on a main config that includes it.
    fn check_staged(&self, staging: &Staging, domain: &str, content: &str) -> Result<(), String> {
        staging
            .fill(&self.config_dir, &Self::file_name(domain), content)
            .map_err(|e| format!("failed to stage in {}: {e}", staging.dir.display()))?;
        let main = std::fs::read_to_string(&self.main_config)
            .map_err(|e| format!("failed to read {}: {e}", self.main_config.display()))?;
        let live_dir = self.config_dir.to_string_lossy().into_owned();
        let staged_dir = staging.dir.to_string_lossy().into_owned();
        let test_main = main.replace(&live_dir, &staged_dir);
        if test_main == main {
            return Err(format!(
                "{} does not include {live_dir}: set proxy.mainConfig to the file that does",
                self.main_config.display()
            ));
        }
        std::fs::write(&staging.test_main, test_main)
            .map_err(|e| format!("failed to write {}: {e}", staging.test_main.display()))?;
        let mut cmd = self.test.clone();
        cmd.push("-c".into());
        cmd.push(staging.test_main.to_string_lossy().into_owned());
        run(&cmd).map_err(|e| {
            // Point at the live names, not the staged copies, in nginx's message.
            let e = e.replace(&staged_dir, &live_dir);
            format!("nginx rejected the config: {e}")
        })
    }
}

/// One pass's staging folder and test config, locked while they live and removed
/// when dropped.
#[derive(Debug)]
struct Staging {
    dir: PathBuf,
    test_main: PathBuf,
    /// The folder, open and `flock`ed: the sign that the pass is alive.
    _held: File,
}

impl Staging {
    fn create(config_dir: &Path, main_config: &Path, instance: &str) -> Result<Staging, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{instance}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = config_dir.join(format!("{STAGING}-{id}"));
        let held = std::fs::create_dir_all(config_dir)
            .and_then(|()| std::fs::create_dir(&dir))
            .and_then(|()| File::open(&dir))
            .and_then(|f| {
                flock(&f, FlockOperation::NonBlockingLockExclusive)?;
                Ok(f)
            })
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                format!("failed to create {}: {e}", dir.display())
            })?;
        Ok(Staging {
            dir,
            test_main: test_main_of(main_config, &id),
            _held: held,
        })
    }

    /// Makes the folder a copy of the live `*.conf` files with `content` as `file`.
    fn fill(&self, config_dir: &Path, file: &str, content: &str) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        for entry in std::fs::read_dir(config_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && entry.file_type()?.is_file() {
                match std::fs::copy(entry.path(), self.dir.join(&name)) {
                    // Removed since it was listed (another instance's prune).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        std::fs::write(self.dir.join(file), content)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The test config first: a folder may outlive it, never the other way round.
        let _ = std::fs::remove_file(&self.test_main);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test config of the staging folder `id`, beside the main config (nginx
/// resolves the main config's relative paths from its folder).
fn test_main_of(main_config: &Path, id: &str) -> PathBuf {
    main_config.with_file_name(format!(".berth-test-{id}.conf"))
}

/// Removes the staging folders (and test configs) of passes that died: folders no
/// live pass holds a lock on, older than [`STALE_AFTER`].
fn remove_stale_staging(config_dir: &Path, main_config: &Path) {
    let Ok(entries) = std::fs::read_dir(config_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STAGING) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        let Ok(folder) = File::open(entry.path()) else {
            continue;
        };
        if !old || flock(&folder, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        if let Some(id) = name.strip_prefix(&format!("{STAGING}-")) {
            let _ = std::fs::remove_file(test_main_of(main_config, id));
        }
        tracing::info!(
            "removing {}, left by a pass that died",
            entry.path().display()
        );
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Runs a command; on failure returns what it printed.
fn run(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("failed to run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let text = text
            .lines()
            .filter(|l| !l.contains("test failed") && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(if text.is_empty() {
            format!("{program} exited with {}", out.status)
        } else {
            text
        })
    }
}

/// Reads `<prefix>*<suffix>` files of a directory whose first line is berth's header.
pub(crate) fn observe_dir(
    dir: &Path,
    comment: &str,
    instance: &str,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<BTreeMap<String, (FileState, String)>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(domain) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let state = routes::file_state(comment, domain, instance, &text);
        out.insert(domain.to_owned(), (state, text));
    }
    Ok(out)
}

fn render_body(route: &Route, http: u16, https: u16) -> String {
    let mut out = String::new();
    let names = route.hosts.join(" ");
    let tls = match &route.tls {
        RouteTls::Files { certificate, key } => Some((certificate.clone(), key.clone())),
        RouteTls::Acme | RouteTls::Off => None,
    };
    // Plain HTTP: the app, or a redirect to HTTPS.
    let _ = writeln!(
        out,
        "server {{\n    listen {http};\n    server_name {names};"
    );
    if matches!(route.tls, RouteTls::Acme) {
        // The seam for ACME (HTTP-01): challenges are answered from berth's directory.
        let _ = writeln!(
            out,
            "    location /.well-known/acme-challenge/ {{\n        root /var/lib/berth/acme;\n    }}"
        );
    }
    if route.redirect_https && tls.is_some() {
        let port = if https == 443 {
            String::new()
        } else {
            format!(":{https}")
        };
        let _ = writeln!(
            out,
            "    location / {{\n        return 301 https://$host{port}$request_uri;\n    }}"
        );
    } else {
        locations(&mut out, route);
    }
    out.push_str("}\n");
    if let Some((cert, key)) = tls {
        let _ = writeln!(
            out,
            "server {{\n    listen {https} ssl;\n    server_name {names};\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
        );
        locations(&mut out, route);
        out.push_str("}\n");
    }
    out
}

fn locations(out: &mut String, route: &Route) {
    let container = matches!(route.upstream, Upstream::Container { .. });
    if container {
        // Docker's DNS, re-resolved so that a recreated container is found again.
        out.push_str("    resolver 127.0.0.11 valid=10s ipv6=off;\n");
    }
    let path = route.public_path();
    let _ = writeln!(out, "    location {path} {{");
    if let Some(token) = &route.private_token {
        let _ = writeln!(out, "        rewrite ^/p/{token}(/.*)$ $1 break;");
    }
    if container {
        let _ = writeln!(
            out,
            "        set $berth_upstream http://{};",
            route.upstream.address()
        );
        out.push_str("        proxy_pass $berth_upstream;\n");
    } else {
        let _ = writeln!(
            out,
            "        proxy_pass http://{};",
            route.upstream.address()
        );
    }
    out.push_str(
        "        proxy_http_version 1.1;\n\
         \x20       proxy_set_header Host $host;\n\
         \x20       proxy_set_header X-Real-IP $remote_addr;\n\
         \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20       proxy_set_header Upgrade $http_upgrade;\n\
         \x20       proxy_set_header Connection $http_connection;\n",
    );
    if let Some(max) = route.max_body {
        let _ = writeln!(out, "        client_max_body_size {max};");
    }
    for (name, value) in &route.headers {
        let _ = writeln!(out, "        add_header {name} \"{value}\" always;");
    }
    out.push_str("    }\n");
    if route.private_token.is_some() {
        // Everything outside the private prefix is not found.
        out.push_str("    location / {\n        return 404;\n    }\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::routes::tests::route;

    fn nginx() -> Nginx {
        Nginx {
            instance: "default".into(),
            config_dir: "/etc/nginx/conf.d".into(),
            main_config: "/etc/nginx/nginx.conf".into(),
            test: vec!["nginx".into(), "-t".into()],
            reload: vec!["nginx".into(), "-s".into(), "reload".into()],
            http_port: 80,
            https_port: 443,
        }
    }

    #[test]
    fn a_plain_route() {
        let text = nginx().render(&route()).unwrap();
        assert!(text.starts_with("# berth: Domain/blog sha256:"));
        assert!(
            text.contains(
                "    listen 80;\n    server_name blog.example.com www.blog.example.com;\n"
            )
        );
        assert!(text.contains("    location / {\n        proxy_pass http://127.0.0.1:8001;\n"));
        assert!(!text.contains("ssl"));
        assert_eq!(
            routes::file_state("#", "blog", "default", &text),
            FileState::Intact
        );
    }

    #[test]
    fn tls_redirect_private_and_container_upstream() {
        let mut r = route();
        r.tls = RouteTls::Files {
            certificate: "/etc/ssl/blog.pem".into(),
            key: "/etc/ssl/blog.key".into(),
        };
        r.redirect_https = true;
        r.private_token = Some("abc123".into());
        r.upstream = Upstream::Container {
            host: "blog".into(),
            port: 2368,
        };
        r.headers.insert("X-Frame-Options".into(), "DENY".into());
        let text = nginx().render(&r).unwrap();
        assert!(text.contains("        return 301 https://$host$request_uri;\n"));
        assert!(text.contains("    listen 443 ssl;\n"));
        assert!(text.contains("    ssl_certificate /etc/ssl/blog.pem;\n"));
        assert!(
            text.contains(
                "    location /p/abc123/ {\n        rewrite ^/p/abc123(/.*)$ $1 break;\n"
            )
        );
        assert!(text.contains("        set $berth_upstream http://blog:2368;\n"));
        assert!(text.contains("        add_header X-Frame-Options \"DENY\" always;\n"));
        assert!(text.contains("    location / {\n        return 404;\n    }\n"));
    }

    #[test]
    fn each_pass_stages_in_a_folder_of_its_own_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let main = dir.path().join("nginx.conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("berth-a.conf"), "a").unwrap();
        let one = Staging::create(&conf, &main, "web").unwrap();
        let two = Staging::create(&conf, &main, "web").unwrap();
        assert_ne!(one.dir, two.dir);
        assert_ne!(one.test_main, two.test_main);
        let name = one.dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!(".berth-staging-web-{}-", std::process::id())),
            "{name}"
        );
        one.fill(&conf, "berth-b.conf", "b").unwrap();
        two.fill(&conf, "berth-c.conf", "c").unwrap();
        let staged = |s: &Staging| {
            let mut names: Vec<String> = std::fs::read_dir(&s.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(staged(&one), ["berth-a.conf", "berth-b.conf"]);
        assert_eq!(staged(&two), ["berth-a.conf", "berth-c.conf"]);
        let (dir_one, dir_two) = (one.dir.clone(), two.dir.clone());
        drop(one);
        assert!(!dir_one.exists());
        assert!(dir_two.exists(), "one pass never removes another's folder");
        drop(two);
        assert_eq!(std::fs::read_dir(&conf).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_a_dead_pass_go_and_a_live_passs_folder_stays() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let main = dir.path().join("nginx.conf");
        std::fs::create_dir(&conf).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let age = |path: &Path| {
            File::open(path).unwrap().set_modified(long_ago).unwrap();
        };
        // A live pass, busy for an hour: locked, so kept however old.
        let live = Staging::create(&conf, &main, "web").unwrap();
        age(&live.dir);
        // A pass killed an hour ago: nobody holds its folder.
        let dead = conf.join(".berth-staging-web-999999-0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("berth-a.conf"), "a").unwrap();
        std::fs::write(test_main_of(&main, "web-999999-0"), "x").unwrap();
        age(&dead);
        // One that was killed just now might be a pass that has not locked yet.
        let young = conf.join(".berth-staging-web-999998-0");
        std::fs::create_dir(&young).unwrap();

        remove_stale_staging(&conf, &main);
        assert!(!dead.exists());
        assert!(!test_main_of(&main, "web-999999-0").exists());
        assert!(live.dir.exists());
        assert!(young.exists());
    }

    #[test]
    fn hostile_routes_are_not_rendered() {
        let mut r = route();
        r.hosts[0] = "a.com; include /etc/passwd".into();
        assert!(
            nginx()
                .render(&r)
                .unwrap_err()
                .to_string()
                .contains("refusing to render")
        );
    }
}
