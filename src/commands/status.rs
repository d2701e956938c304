//! `berth status`: what a running controller reports, in a terminal.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use berth::status::{ConditionType, Status};

use crate::cli::{Format, StatusArgs};

pub fn exec(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let token = bearer_token(args.token.as_deref(), args.token_file.as_deref())?;
    let body = fetch(&args.url, "/api/v1/status", token.as_deref())?;
    if args.output == Format::Json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let status: Status = serde_json::from_str(&body)
        .with_context(|| format!("{} did not answer with berth's status", args.url))?;
    print!("{}", render(&status));
    let ready = status.resources.values().all(|r| r.is_ready());
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status server's bearer token: `--token` (or `BERTH_TOKEN`), else the content of
/// `--token-file`, else `BERTH_STATUS_TOKEN`, the older name of the variable.
pub(crate) fn bearer_token(
    given: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = given {
        return Ok(Some(token.to_owned()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the token file {}", path.display()))?;
        let token = text.trim_end_matches(['\n', '\r']);
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        return Ok(Some(token.to_owned()));
    }
    Ok(std::env::var("BERTH_STATUS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

/// GET `path` from the status server at `url`.
fn fetch(url: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let base = reqwest::Url::parse(url).with_context(|| format!("--url {url} is not a URL"))?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!(
            "--url {url}: the status server is reached over http:// (or https:// behind a proxy)"
        );
    }
    let target = base
        .join(path)
        .with_context(|| format!("--url {url} cannot lead to {path}"))?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("failed to set up the HTTP client")?;
    let mut request = client.get(target.clone());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().with_context(|| {
        // `host_str` keeps an IPv6 address in brackets, as `--listen` takes it.
        match (base.host_str(), base.port_or_known_default()) {
            (Some(host), Some(port)) => {
                format!(
                    "cannot reach berth run at {url}; is it running with --listen {host}:{port}?"
                )
            }
            _ => format!("cannot reach berth run at {url}"),
        }
    })?;
    let status = response.status();
    let body = response
        .text()
        .with_context(|| format!("{target} broke off its answer"))?;
    match status.as_u16() {
        200 => Ok(body),
        401 => bail!("{url} needs a token: pass --token-file PATH or set BERTH_TOKEN"),
        other => bail!("{target} answered {other}: {}", body.trim()),
    }
}

fn render(st: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Source {}: revision applied {}, observed {}",
        if st.source.is_empty() {
            "?"
        } else {
            &st.source
        },
        st.revision_applied.as_ref().map_or("none", |r| r.as_str()),
        st.revision_observed.as_ref().map_or("none", |r| r.as_str())
    );
    match &st.last_pass {
        Some(p) => {
            let _ = writeln!(
                out,
                "Last pass: {} in {} ms ({}), at {}",
                p.result, p.duration_ms, p.trigger, p.finished_at
            );
        }
        None => out.push_str("Last pass: none yet\n"),
    }
    for c in &st.conditions {
        if c.status || c.kind == ConditionType::Ready {
            let _ = writeln!(
                out,
                "{}: {} ({}) {}",
                c.kind,
                if c.status { "True" } else { "False" },
                c.reason,
                c.message.replace('\n', "\n    ")
            );
        }
    }
    if let Some(f) = &st.fetch {
        match &f.error {
            Some(e) => {
                let _ = writeln!(out, "Fetch failed at {}: {e}", f.time);
            }
            None => {
                let _ = writeln!(
                    out,
                    "Fetched at {}: {}",
                    f.time,
                    f.commit.as_ref().map_or("?", |c| c.as_str())
                );
            }
        }
    }
    let width = st
        .resources
        .values()
        .map(|r| r.kind.as_str().len() + r.name.len() + 1)
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(out, "\n{:<width$}  {:<9}  MESSAGE", "RESOURCE", "READY");
    for r in st.resources.values() {
        let ready = r.condition(ConditionType::Ready);
        let message = r.message();
        let state = match ready {
            Some(c) if c.status => "yes",
            Some(_) => "no",
            None => "unknown",
        };
        let _ = writeln!(
            out,
            "{:<width$}  {state:<9}  {message}",
            format!("{}/{}", r.kind, r.name)
        );
    }
    if !st.certificates.is_empty() {
        out.push_str("\nCertificates (ACME):\n");
        for (domain, c) in &st.certificates {
            let mut line = format!("  {domain} ({}):", c.hosts.join(", "));
            match (&c.issuer, &c.not_after) {
                (Some(issuer), Some(until)) => {
                    let _ = write!(line, " issued by {issuer}, valid until {until}");
                }
                _ => line.push_str(" not issued yet"),
            }
            if let Some(next) = &c.next_renewal {
                let _ = write!(line, "; renewal at {next}");
            }
            if c.expiring {
                line.push_str("; EXPIRING, not renewed");
            }
            if let Some(error) = &c.last_error {
                let _ = write!(
                    line,
                    "; {} failed, the last: {error}; next attempt at {}",
                    match c.failures {
                        1 => "1 attempt".to_owned(),
                        n => format!("{n} attempts"),
                    },
                    c.next_attempt.as_deref().unwrap_or("?")
                );
            }
            let _ = writeln!(out, "{line}");
        }
    }
    if !st.events.is_empty() {
        out.push_str("\nRecent events:\n");
        for e in st.events.iter().rev().take(10) {
            let _ = writeln!(out, "  {} {} {}", e.time, e.reason, e.message);
        }
    }
    if let Some(plan) = &st.plan {
        let _ = write!(out, "\nPending plan:\n{plan}");
    }
    out
}
