//! What workflow nodes do on the host: deploy an app through the same plan and apply as
//! a pass (under the instance lock), restart it, run a command in its container, back up
//! a database, send an HTTP request (public addresses only, unless the Settings allow
//! private ones), roll an app back, and queue a message for a Notifier. Every text an
//! action returns or logs is redacted before it is recorded or sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::engine::{Executor, NodeLog, Outputs, Work};
use super::expr::Literal;
use crate::apply::ApplyOptions;
use crate::drivers::docker::DockerApi;
use crate::manifest::Manifests;
use crate::manifest::model::{Action, Runtime};
use crate::manifest::policy::is_public;
use crate::notify::{Notification, Notifier};
use crate::plan::{Op, Target};
use crate::reconcile::{self, PassOptions, Prepared};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::RevisionId;
use crate::state::StateDir;
use crate::state::secrets::{Secret, redact_all};

/// The most bytes of an HTTP response body kept as the `body` output.
pub const BODY_LIMIT: usize = 4096;

/// What the nodes of one run act upon.
pub struct Host {
    /// The berth instance.
    pub instance: String,
    /// Its state directory.
    pub state: StateDir,
    /// The daemon.
    pub docker: Arc<dyn DockerApi>,
    /// The revision's manifests (deploys converge to them).
    pub manifests: Arc<Manifests>,
    /// The revision.
    pub revision: RevisionId,
    /// How apply runs.
    pub apply: ApplyOptions,
    /// How long a node that changes the host waits for the instance's lock.
    pub lock_timeout: Duration,
    /// Where `notify` nodes send.
    pub notifier: Notifier,
    /// The workflow, for messages and pins.
    pub workflow: String,
    /// The values to hide wherever text leaves a node.
    pub secrets: Vec<Secret>,
    /// Whether `http` actions may reach private addresses.
    pub allow_private_targets: bool,
}

impl Host {
    /// A host for a run of `workflow` over `manifests`; the secrets to redact are those
    /// the revision's apps and databases use.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        instance: &str,
        state: StateDir,
        docker: Arc<dyn DockerApi>,
        manifests: Arc<Manifests>,
        revision: RevisionId,
        apply: ApplyOptions,
        lock_timeout: Duration,
        notifier: Notifier,
        workflow: &str,
    ) -> Host {
        let secrets = used_secrets(&manifests, revision.as_str(), &state, instance);
        let allow_private_targets = manifests.settings().workflows.allow_private_targets;
        Host {
            instance: instance.to_owned(),
            state,
            docker,
            manifests,
            revision,
            apply,
            lock_timeout,
            notifier,
            workflow: workflow.to_owned(),
            secrets,
            allow_private_targets,
        }
    }

    /// `text` with every secret value replaced by its `<secret:…>` form.
    pub fn redact(&self, text: &str) -> String {
        redact_all(text, &self.secrets)
    }

    fn options(&self, apply: bool) -> PassOptions {
        PassOptions {
            instance: self.instance.clone(),
            apply,
            no_prune: true,
        }
    }

    async fn lock(
        &self,
        purpose: &'static str,
        log: &NodeLog,
    ) -> Result<crate::state::lock::InstanceLock, String> {
        let (log, instance) = (log.clone(), self.state.instance().to_owned());
        let waiting = move |h: &crate::state::lock::Holder| {
            log.line(&format!(
                "waiting for the lock on instance {instance}, held by {h}"
            ))
        };
        self.state
            .lock(purpose, self.lock_timeout, waiting)
            .await
            .map_err(|e| e.to_string())
    }

    /// The running containers of `app`, by replica.
    async fn containers(&self, app: &str) -> Result<Vec<(u32, String, String)>, String> {
        let observed = crate::observe::observe(self.docker.as_ref(), &self.instance)
            .await
            .map_err(|e| e.to_string())?;
        let mut found: Vec<(u32, String, String)> = observed
            .containers
            .iter()
            .filter(|c| c.app == app && c.kind == crate::desired::ObjectKind::App)
            .map(|c| (c.replica, c.id.clone(), c.state.clone()))
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format!(
                "app {app} has no container (is it deployed? `berth status` shows it)"
            ));
        }
        Ok(found)
    }

    async fn deploy(&self, app: &str, log: &NodeLog) -> Result<Outputs, String> {
        let _lock = self.lock("workflow deploy", log).await?;
        let mut prepared = reconcile::prepare(
            &self.manifests,
            self.revision.as_str(),
            &self.state,
            Some(self.docker.as_ref()),
            &self.options(true),
        )
        .await
        .map_err(|e| self.redact(&e.to_string()))?;
        only_app(&mut prepared, app);
        let action = prepared
            .plan
            .actions
            .iter()
            .find(|a| a.target == Target::App && a.name == app)
            .cloned();
        let Some(action) = action else {
            return Err(format!("app {app} is not declared in this revision"));
        };
        let verb = action.op.verb();
        log.line(&self.redact(&format!(
            "{verb} app {app}{}",
            if action.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", action.reasons.join("; "))
            }
        )));
        let mut outputs = Outputs::from([("op".to_owned(), Literal::Str(verb.to_owned()))]);
        if action.op == Op::Noop {
            return Ok(outputs);
        }
        let quiet: crate::apply::OnProgress = Arc::new(|_| {});
        let report = reconcile::execute(
            &prepared,
            &self.state,
            self.docker.clone(),
            self.apply.clone(),
            quiet,
        )
        .await;
        let mut failed = None;
        for o in &report.outcomes {
            let line = match &o.result {
                crate::apply::Status::Failed(m)
                | crate::apply::Status::Skipped(m)
                | crate::apply::Status::Conflict(m) => {
                    if o.target == Target::App && o.name == app {
                        failed = Some(m.clone());
                    }
                    format!("{} {}: {m}", o.target, o.name)
                }
                crate::apply::Status::Done => format!("{} {}: done", o.target, o.name),
                crate::apply::Status::Unchanged => continue,
            };
            log.line(&self.redact(&line));
        }
        outputs.insert("failed".into(), Literal::Num(report.failures() as f64));
        match failed {
            Some(m) => Err(self.redact(&format!("deploying app {app} failed: {m}"))),
            None => Ok(outputs),
        }
    }

    async fn restart(&self, app: &str, log: &NodeLog) -> Result<Outputs, String> {
        let _lock = self.lock("workflow restart", log).await?;
        if self.manifests.settings().runtime == Runtime::Swarm {
            // Swarm replaces the service's tasks one by one, as its update config says.
            let swarm = self
                .docker
                .swarm()
                .ok_or_else(|| format!("app {app}: this Docker daemon has no Swarm calls"))?;
            swarm
                .restart_service(app)
                .await
                .map_err(|e| self.redact(&e.to_string()))?;
            log.line(&format!("restarted the tasks of service {app}"));
            return Ok(Outputs::from([("restarted".to_owned(), Literal::Num(1.0))]));
        }
        let containers = self.containers(app).await?;
        for (replica, id, _) in &containers {
            self.docker
                .restart_container(id, 10)
                .await
                .map_err(|e| self.redact(&e.to_string()))?;
            log.line(&format!("restarted app {app} replica {replica}"));
        }
        Ok(Outputs::from([(
            "restarted".to_owned(),
            Literal::Num(containers.len() as f64),
        )]))
    }

    async fn exec(&self, app: &str, command: &[String], log: &NodeLog) -> Result<Outputs, String> {
        let (id, command) = match self.manifests.settings().runtime {
            Runtime::Docker => {
                let containers = self.containers(app).await?;
                let Some((_, id, _)) = containers.iter().find(|(_, _, state)| state == "running")
                else {
                    return Err(format!("app {app} has no running container"));
                };
                (id.clone(), command.to_vec())
            }
            // In a task's container on this node, with the app's secrets loaded as its
            // process has them.
            Runtime::Swarm => {
                let id = crate::runtime::swarm::task_container(self.docker.as_ref(), app)
                    .await
                    .map_err(|e| format!("app {app}: {e}"))?;
                let secrets =
                    self.manifests.apps.get(app).is_some_and(|a| {
                        !a.spec.secret_env.is_empty() || !a.spec.databases.is_empty()
                    });
                let command = match secrets {
                    true => crate::runtime::swarm::with_secrets(command),
                    false => command.to_vec(),
                };
                (id, command)
            }
        };
        let id = &id;
        let secrets = self.secrets.clone();
        // Output is redacted line by line as it comes, so that a value split across two
        // chunks is still caught (lines are kept whole until they end).
        let pending = std::sync::Mutex::new(Vec::<u8>::new());
        let sink = |chunk: &[u8]| {
            let mut buf = pending.lock().unwrap_or_else(|e| e.into_inner());
            buf.extend_from_slice(chunk);
            if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                let whole: Vec<u8> = buf.drain(..=end).collect();
                log.append(&redact_all(&String::from_utf8_lossy(&whole), &secrets));
            } else if buf.len() > 16 * 1024 {
                let whole: Vec<u8> = std::mem::take(&mut *buf);
                log.append(&redact_all(&String::from_utf8_lossy(&whole), &secrets));
            }
        };
        let code = self
            .docker
            .exec_output(id, &command, &sink)
            .await
            .map_err(|e| self.redact(&e.to_string()));
        let rest = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !rest.is_empty() {
            log.line(&redact_all(&String::from_utf8_lossy(&rest), &secrets));
        }
        let code = code?;
        log.set_output("exitCode", Literal::Num(code as f64));
        if code != 0 {
            return Err(format!("the command exited with code {code}"));
        }
        Ok(Outputs::from([("exitCode".to_owned(), Literal::Num(0.0))]))
    }

    async fn backup(&self, database: &str, log: &NodeLog) -> Result<Outputs, String> {
        let prepared = reconcile::prepare(
            &self.manifests,
            self.revision.as_str(),
            &self.state,
            None,
            &self.options(false),
        )
        .await
        .map_err(|e| self.redact(&e.to_string()))?;
        let Some(db) = prepared.desired.databases.get(database) else {
            return Err(format!(
                "database {database} is not declared in this revision"
            ));
        };
        let keep = db.backup.as_ref().map(|b| b.keep);
        let _lock = self.lock("workflow backup", log).await?;
        let file = crate::backup::run(
            db,
            self.state.path(),
            None,
            keep,
            Some(self.docker.as_ref()),
        )
        .await
        .map_err(|e| self.redact(&e.to_string()))?;
        log.line(&format!(
            "wrote {} ({} bytes)",
            file.path.display(),
            file.bytes
        ));
        Ok(Outputs::from([
            (
                "file".to_owned(),
                Literal::Str(file.path.display().to_string()),
            ),
            ("bytes".to_owned(), Literal::Num(file.bytes as f64)),
        ]))
    }

    #[allow(clippy::too_many_arguments)]
    async fn http(
        &self,
        url: &str,
        method: &str,
        headers: &BTreeMap<String, String>,
        body: Option<&str>,
        expect: Option<u16>,
        log: &NodeLog,
    ) -> Result<Outputs, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let shown = self.redact(&redact_url(&parsed));
        // Resolve once, check every address, and connect to what was checked.
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("failed to resolve {host}: {e}"))?
            .collect();
        if !self.allow_private_targets {
            if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "refused to send a request to {shown}: {} is a private or loopback address; \
                     set `workflows: {{allowPrivateTargets: true}}` in the Settings to allow it",
                    a.ip()
                ));
            }
        }
        // The host policy bounds what the Settings allow.
        if let Some(policy) = &self.manifests.policy {
            for a in &addrs {
                if let Err(why) = policy.check_http_target(&host, a.ip()) {
                    return Err(format!("refused to send a request to {shown}: {why}"));
                }
            }
        }
        let Some(addr) = addrs.first().copied() else {
            return Err(format!("{host} has no address"));
        };
        // Connect to the address checked above, and follow no redirect: a redirect could
        // lead to an address the check never saw.
        let client = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, addr)
            .build()
            .map_err(|e| format!("failed to set up the HTTP client: {e}"))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("invalid method {method}"))?;
        let mut request = client.request(method.clone(), parsed.clone());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        if let Some(b) = body {
            request = request.body(b.to_owned());
        }
        log.line(&format!("{method} {shown}"));
        let response = request.send().await.map_err(|e| {
            self.redact(&format!(
                "the request to {shown} failed: {}",
                without_url(e)
            ))
        })?;
        let status = response.status().as_u16();
        let mut outputs = Outputs::from([("status".to_owned(), Literal::Num(f64::from(status)))]);
        for (name, value) in response.headers() {
            if outputs.len() >= super::engine::OUTPUT_KEYS - 1 {
                break;
            }
            if let Ok(v) = value.to_str() {
                outputs.insert(
                    format!("header-{}", name.as_str()),
                    Literal::Str(self.redact(v)),
                );
            }
        }
        let mut kept = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = BODY_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if kept.len() >= BODY_LIMIT {
                break;
            }
        }
        let body = self.redact(&String::from_utf8_lossy(&kept));
        log.line(&format!("{status}"));
        outputs.insert("body".into(), Literal::Str(body));
        for (k, v) in &outputs {
            log.set_output(k, v.clone());
        }
        let ok = match expect {
            Some(want) => status == want,
            None => (200..300).contains(&status),
        };
        if !ok {
            let want = expect.map_or("a 2xx status".to_owned(), |w| w.to_string());
            return Err(format!("{shown} answered {status}, expected {want}"));
        }
        Ok(outputs)
    }

    async fn rollback(&self, app: &str, log: &NodeLog) -> Result<Outputs, String> {
        let _lock = self.lock("workflow rollback", log).await?;
        let done = reconcile::rollback(
            &self.manifests,
            self.revision.as_str(),
            &self.state,
            self.docker.clone(),
            &self.options(true),
            self.apply.clone(),
            app,
            None,
            reconcile::PinnedBy::Workflow(self.workflow.clone()),
        )
        .await
        .map_err(|e| self.redact(&e.to_string()))?;
        let held = done.held.unwrap_or_default();
        log.line(&format!("app {app} held at {held}"));
        let failures = done.report.failures();
        if failures > 0 {
            for o in &done.report.outcomes {
                if let crate::apply::Status::Failed(m) = &o.result {
                    log.line(&self.redact(&format!("{} {}: {m}", o.target, o.name)));
                }
            }
            return Err(format!("rolling app {app} back failed"));
        }
        Ok(Outputs::from([("revision".to_owned(), Literal::Str(held))]))
    }

    fn notify(&self, notifier: &str, message: &str) -> Result<Outputs, String> {
        let message = self.redact(message);
        self.notifier
            .send_to(
                notifier,
                Notification {
                    event: crate::manifest::model::EventKind::WorkflowMessage,
                    instance: self.instance.clone(),
                    revision: Some(self.revision.clone()),
                    resource: Some(ResourceId::new(ResourceKind::Workflow, &self.workflow)),
                    summary: message,
                    details: Vec::new(),
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(Outputs::new())
    }
}

#[async_trait]
impl Executor for Host {
    async fn run(&self, _node: &str, work: &Work, log: &NodeLog) -> Result<Outputs, String> {
        match work {
            Work::Action(Action::Deploy { app }) => self.deploy(app, log).await,
            Work::Action(Action::Restart { app }) => self.restart(app, log).await,
            Work::Action(Action::Exec { app, command }) => self.exec(app, command, log).await,
            Work::Action(Action::Backup { database }) => self.backup(database, log).await,
            Work::Action(Action::Http {
                url,
                method,
                headers,
                body,
                expect_status,
            }) => {
                self.http(url, method, headers, body.as_deref(), *expect_status, log)
                    .await
            }
            Work::Rollback(r) => self.rollback(&r.app, log).await,
            Work::Notify { notifier, message } => self.notify(notifier, message),
        }
    }
}

/// Keeps only what converging `app` needs: its own action, the Domain action that
/// switches the proxy to its new container (and then removes the old one), and the
/// writes, networks and volumes it may need (never a removal).
fn only_app(prepared: &mut Prepared, app: &str) {
    prepared.plan.actions.retain(|a| {
        (a.target == Target::App && a.name == app)
            || (a.target == Target::Domain
                && a.needs
                    .iter()
                    .any(|n| n.target == Target::App && n.name == app))
            || (a.op != Op::Delete
                && matches!(
                    a.phase,
                    crate::plan::Phase::Write | crate::plan::Phase::Infrastructure
                ))
    });
}

/// The values the revision's apps and databases use, for redaction.
fn used_secrets(
    manifests: &Manifests,
    revision: &str,
    state: &StateDir,
    instance: &str,
) -> Vec<Secret> {
    let options = PassOptions {
        instance: instance.to_owned(),
        apply: false,
        no_prune: true,
    };
    let Ok(prepared) = reconcile::plan_against(
        manifests,
        revision,
        state,
        &options,
        crate::observe::Observed::default(),
        |_, _| {},
    ) else {
        return Vec::new();
    };
    let mut secrets: Vec<Secret> = prepared
        .desired
        .apps
        .values()
        .flat_map(|a| a.secrets.values().cloned())
        .collect();
    secrets.extend(
        prepared
            .tokens
            .iter()
            .map(|(name, token)| Secret::new(&format!("private-{name}"), token)),
    );
    // Longest first, so a value containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
    secrets.dedup_by(|a, b| a.expose() == b.expose());
    secrets
}

/// The URL without its user information and query (which may carry tokens).
fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?…");
    }
    text
}

/// A reqwest error's message without the URL it carries.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        text = format!("{text}: {source}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_lose_their_user_and_query() {
        let url = reqwest::Url::parse("https://bot:hunter2@hooks.example.com/x?token=abc").unwrap();
        assert_eq!(redact_url(&url), "https://hooks.example.com/x?…");
    }
}
