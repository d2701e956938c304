//! The nginx driver: one `berth-<domain>.conf` per domain in the config directory.
//!
//! A change is staged in a copy of the config directory, checked with `nginx -t`
//! against a copy of the main config that includes the staged directory, and only
//! then renamed into place; nginx is reloaded once at the end. Each domain is checked
//! on its own, so one rejected domain leaves the others converging, and a rejected
//! file never reaches the live directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::routes::{self, FileState, Route, RouteTls, Upstream};
use crate::state::atomic;

/// The comment marker of nginx files.
const COMMENT: &str = "#";

/// Where nginx is and how it is driven.
#[derive(Debug, Clone)]
pub struct Nginx {
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
    pub fn render(&self, route: &Route) -> Result<String, String> {
        route.check()?;
        let body = render_body(route, self.http_port, self.https_port);
        Ok(format!(
            "{}{body}",
            routes::header(COMMENT, &route.domain, &body)
        ))
    }

    /// The managed files in the config directory: domain → (state, content).
    pub fn observe(&self) -> std::io::Result<BTreeMap<String, (FileState, String)>> {
        observe_dir(&self.config_dir, COMMENT, "berth-", ".conf")
    }

    /// Applies changes domain by domain; returns each domain's result and reloads nginx
    /// once if anything changed. Errors carry nginx's own message.
    pub fn apply(
        &self,
        changes: &BTreeMap<String, Change>,
    ) -> BTreeMap<String, Result<(), String>> {
        let mut results = BTreeMap::new();
        let mut changed = false;
        for (domain, change) in changes {
            let result = self.apply_one(domain, change);
            changed |= result.is_ok();
            results.insert(domain.clone(), result);
        }
        if changed {
            if let Err(e) = run(&self.reload) {
                let message = format!("nginx reload failed: {e}");
                for r in results.values_mut() {
                    if r.is_ok() {
                        *r = Err(message.clone());
                    }
                }
            }
        }
        results
    }

    fn apply_one(&self, domain: &str, change: &Change) -> Result<(), String> {
        let live = self.config_dir.join(Self::file_name(domain));
        if let Change::Remove = change {
            return match std::fs::remove_file(&live) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("failed to remove {}: {e}", live.display())),
            };
        }
        let Change::Write(content) = change else {
            unreachable!()
        };
        self.check_staged(domain, content)?;
        atomic::write_atomic(&live, content.as_bytes())
            .map_err(|e| format!("failed to write {}: {e}", live.display()))
    }

    /// Stages the config directory with `content` as the domain's file and runs the
    /// check command on a main config that includes the staged copy.
    fn check_staged(&self, domain: &str, content: &str) -> Result<(), String> {
        let staging = self.config_dir.join(".berth-staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("failed to create {}: {e}", staging.display()))?;
        let result = (|| {
            for entry in std::fs::read_dir(&self.config_dir).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") && entry.path().is_file() {
                    std::fs::copy(entry.path(), staging.join(&name)).map_err(|e| e.to_string())?;
                }
            }
            std::fs::write(staging.join(Self::file_name(domain)), content)
                .map_err(|e| e.to_string())?;
            let main = std::fs::read_to_string(&self.main_config)
                .map_err(|e| format!("failed to read {}: {e}", self.main_config.display()))?;
            let live_dir = self.config_dir.to_string_lossy().into_owned();
            let staged_dir = staging.to_string_lossy().into_owned();
            let test_main = main.replace(&live_dir, &staged_dir);
            if test_main == main {
                return Err(format!(
                    "{} does not include {live_dir}: set proxy.mainConfig to the file that does",
                    self.main_config.display()
                ));
            }
            let test_path = self
                .main_config
                .with_file_name(format!(".berth-test-{domain}.conf"));
            std::fs::write(&test_path, test_main).map_err(|e| e.to_string())?;
            let mut cmd = self.test.clone();
            cmd.push("-c".into());
            cmd.push(test_path.to_string_lossy().into_owned());
            let outcome = run(&cmd);
            let _ = std::fs::remove_file(&test_path);
            outcome.map_err(|e| {
                // Point at the live names, not the staged copies, in nginx's message.
                let e = e.replace(&staged_dir, &live_dir);
                format!("nginx rejected the config: {e}")
            })
        })();
        let _ = std::fs::remove_dir_all(&staging);
        result
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
        let state = routes::file_state(comment, domain, &text);
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
    use crate::routes::tests::route;

    fn nginx() -> Nginx {
        Nginx {
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
        assert_eq!(routes::file_state("#", "blog", &text), FileState::Intact);
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
    fn hostile_routes_are_not_rendered() {
        let mut r = route();
        r.hosts[0] = "a.com; include /etc/passwd".into();
        assert!(
            nginx()
                .render(&r)
                .unwrap_err()
                .contains("refusing to render")
        );
    }
}
