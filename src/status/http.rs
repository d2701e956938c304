//! The read-only HTTP server (axum): health, status JSON, Prometheus metrics and a page
//! a person reads at a glance. An optional bearer token guards everything but /healthz
//! and the push webhook, which forges sign instead; the `Host` header is checked
//! against the names the server answers to, so a web page cannot read it through DNS
//! rebinding.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{ConditionType, Status, StatusStore};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::git::GitSource;
use crate::source::webhook::{self, Decision};
use crate::state::secrets::Secret;

/// What the push webhook needs.
#[derive(Clone)]
pub struct GitHook {
    /// The secret forges sign with; without it every delivery is refused.
    pub secret: Option<Secret>,
    /// The source, for the ref it follows.
    pub source: Arc<GitSource>,
    /// Poked to fetch at once.
    pub fetch_now: Arc<Notify>,
}

/// Who may read the status: the bearer token, and the `Host` names requests may carry.
#[derive(Debug, Clone)]
pub struct Access {
    /// The bearer token everything but `/healthz` and the webhook requires, if any.
    pub token: Option<String>,
    /// The names the server answers to.
    pub hosts: AllowedHosts,
}

/// The `Host` header values the server answers to: `localhost`, 127.0.0.1, `[::1]` and
/// the listen address with the listen port (any IP address when it listens on all of
/// them), and each name given with `--allowed-host` (with any port, unless the name
/// gives one). A request without a `Host` header is let through: every browser sends
/// one, and DNS rebinding needs a name.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen: SocketAddr,
    names: Vec<(String, Option<u16>)>,
}

impl AllowedHosts {
    /// The names for a server listening on `listen`, plus `names` (`NAME` or
    /// `NAME:PORT`, as [`allowed_host_name`] checks them).
    pub fn new(listen: SocketAddr, names: &[String]) -> AllowedHosts {
        let names = names
            .iter()
            .filter_map(|n| split_host(n))
            .map(|(name, port)| (normalize(name), port))
            .collect();
        AllowedHosts { listen, names }
    }

    /// Whether a request whose `Host` header is `host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let name = normalize(name);
        let ours = port.unwrap_or(80) == self.listen.port();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let listen = self.listen.ip();
            let known = ip.is_loopback() || ip == listen || listen.is_unspecified();
            if known && ours {
                return true;
            }
        } else if name == "localhost" && ours {
            return true;
        }
        self.names
            .iter()
            .any(|(allowed, p)| *allowed == name && p.is_none_or(|p| Some(p) == port))
    }
}

/// Splits a `Host` value into its name (an IPv6 address without brackets) and port.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        match after {
            "" => (ip, None),
            _ => (ip, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!name.is_empty()).then_some((name, port))
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks a value of `--allowed-host`: a DNS name (or an IP address), optionally with
/// `:PORT`.
pub fn allowed_host_name(given: &str) -> Result<String, String> {
    let ok = split_host(given).is_some_and(|(name, _)| {
        name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
    });
    if ok {
        Ok(given.to_owned())
    } else {
        Err("give a host name such as status.example.com, optionally with :PORT".to_owned())
    }
}

#[derive(Clone)]
struct AppState {
    store: StatusStore,
    access: Access,
    hook: Option<GitHook>,
    runs: Option<crate::workflow::runs::Runs>,
}

/// The router without a push webhook; tests call it without a socket.
pub fn app(store: StatusStore, access: Access) -> Router {
    app_with_hook(store, access, None)
}

/// The router, with `POST /hooks/git` served when `hook` is given.
pub fn app_with_hook(store: StatusStore, access: Access, hook: Option<GitHook>) -> Router {
    app_with(store, access, hook, None)
}

/// The router with the workflows' runs on the page and their routes (the workflow API,
/// which checks the token itself) served beside the status ones, behind the same `Host`
/// check.
pub fn app_with(
    store: StatusStore,
    access: Access,
    hook: Option<GitHook>,
    workflows: Option<(crate::workflow::runs::Runs, Router)>,
) -> Router {
    let (runs, more) = match workflows {
        Some((runs, routes)) => (Some(runs), Some(routes)),
        None => (None, None),
    };
    let state = AppState {
        store,
        access,
        hook,
        runs,
    };
    let guarded = Router::new()
        .route("/", get(page))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/resources", get(resources))
        .route("/api/v1/resources/{kind}/{name}", get(resource))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), bearer))
        .route_layer(middleware::from_fn_with_state(state.clone(), host_check));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/hooks/git",
            post(git_hook).layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES)),
        )
        .merge(guarded)
        .with_state(state.clone());
    match more {
        Some(more) => {
            router.merge(more.route_layer(middleware::from_fn_with_state(state, host_check)))
        }
        None => router,
    }
}

fn answer(code: StatusCode, key: &str, message: String) -> Response {
    (code, Json(json!({ key: message }))).into_response()
}

/// `POST /hooks/git`: verify the forge's signature, then maybe fetch. The payload is
/// only read for its ref; the fetch decides what the revision is.
async fn git_hook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = &state.hook else {
        return answer(
            StatusCode::NOT_FOUND,
            "error",
            "berth run follows a directory: there is nothing to fetch".into(),
        );
    };
    let Some(secret) = &hook.secret else {
        return answer(
            StatusCode::FORBIDDEN,
            "error",
            "the push webhook has no secret: write one to <state-dir>/secrets/git-webhook \
             (or name another with --webhook-secret) and restart berth run"
                .into(),
        );
    };
    let forge = match webhook::verify(&headers, &body, secret.expose().as_bytes()) {
        Ok(f) => f,
        Err(e) => {
            warn!("push webhook refused: {e}");
            return answer(StatusCode::UNAUTHORIZED, "error", e.to_string());
        }
    };
    let event = webhook::event_name(&headers).unwrap_or_default();
    if event.eq_ignore_ascii_case("ping") {
        return answer(StatusCode::OK, "status", "pong".into());
    }
    let push = match webhook::parse_push(forge, &body) {
        Ok(p) => p,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "error", e.to_string()),
    };
    match webhook::decide(&push, hook.source.tracked_ref().as_deref()) {
        Decision::Fetch => {
            info!(forge = ?forge, reference = %push.reference, "push webhook: fetching");
            hook.fetch_now.notify_one();
            answer(
                StatusCode::ACCEPTED,
                "status",
                format!("fetching {}", push.reference),
            )
        }
        Decision::Ignore(why) => {
            info!(forge = ?forge, "push webhook ignored: {why}");
            answer(StatusCode::ACCEPTED, "ignored", why)
        }
    }
}

/// Refuses a request whose `Host` is not one of ours: a page of another site, its name
/// rebound to this address, must not read the status.
async fn host_check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let allowed = host.to_str().is_ok_and(|h| state.access.hosts.allows(h));
        if !allowed {
            let shown = String::from_utf8_lossy(host.as_bytes())
                .escape_debug()
                .to_string();
            warn!(host = %shown, "refused a request for another host");
            return answer(
                StatusCode::MISDIRECTED_REQUEST,
                "error",
                format!(
                    "this server does not answer to Host `{shown}`: if that name is \
                     berth's, start berth run with --allowed-host {shown}"
                ),
            );
        }
    }
    next.run(request).await
}

async fn bearer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.access.token {
        if let Some(refused) = refused_without_bearer(token, request.headers()) {
            return refused;
        }
    }
    next.run(request).await
}

/// The 401 answer unless `headers` carry `Authorization: Bearer <token>` (compared in
/// constant time).
pub(crate) fn refused_without_bearer(token: &str, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if webhook::constant_eq(token.as_bytes(), given.as_bytes()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response(),
    )
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.snapshot().last_pass {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no pass has finished yet\n",
        )
            .into_response(),
    }
}

async fn status(State(s): State<AppState>) -> Json<Status> {
    Json(s.store.snapshot())
}

async fn resources(State(s): State<AppState>) -> Json<serde_json::Value> {
    let snapshot = s.store.snapshot();
    Json(json!({"resources": snapshot.resources.values().collect::<Vec<_>>()}))
}

async fn resource(
    State(s): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    let snapshot = s.store.snapshot();
    let found = ResourceKind::parse(&kind)
        .and_then(|k| snapshot.resources.get(&ResourceId::new(k, name.clone())));
    match found {
        Some(r) => Json(r.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no resource {kind}/{name}")})),
        )
            .into_response(),
    }
}

/// `GET /api/v1/plan`: the newest plan as `berth apply --dry-run -o json` prints it.
async fn plan(State(s): State<AppState>) -> Response {
    let Some(snapshot) = s.store.plan() else {
        return answer(
            StatusCode::NOT_FOUND,
            "error",
            "no plan yet: the first pass has not planned".into(),
        );
    };
    match serde_json::to_string_pretty(snapshot.plan.as_ref()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            format!("failed to write the plan as JSON: {e}"),
        ),
    }
}

async fn events(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"events": s.store.snapshot().events}))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let st = s.store.snapshot();
    let mut out = String::new();
    out.push_str("# HELP berth_passes_total Reconcile passes by result.\n# TYPE berth_passes_total counter\n");
    for (result, n) in &st.passes {
        let _ = writeln!(out, "berth_passes_total{{result=\"{result}\"}} {n}");
    }
    if let Some(p) = &st.last_pass {
        out.push_str("# HELP berth_pass_duration_seconds Duration of the last pass.\n# TYPE berth_pass_duration_seconds gauge\n");
        let _ = writeln!(
            out,
            "berth_pass_duration_seconds {}",
            p.duration_ms as f64 / 1000.0
        );
    }
    if !st.conditions.is_empty() {
        out.push_str("# HELP berth_condition The source's conditions (1 when true).\n# TYPE berth_condition gauge\n");
        for c in &st.conditions {
            let _ = writeln!(
                out,
                "berth_condition{{type=\"{}\"}} {}",
                c.kind,
                u8::from(c.status)
            );
        }
    }
    out.push_str("# HELP berth_resources Resources by their Ready condition.\n# TYPE berth_resources gauge\n");
    let ready = st.resources.values().filter(|r| r.is_ready()).count();
    let _ = writeln!(out, "berth_resources{{condition=\"ready\"}} {ready}");
    let _ = writeln!(
        out,
        "berth_resources{{condition=\"not_ready\"}} {}",
        st.resources.len() - ready
    );
    if let Some(t) = st
        .last_success
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        out.push_str("# HELP berth_last_success_timestamp_seconds When a pass last succeeded.\n# TYPE berth_last_success_timestamp_seconds gauge\n");
        let _ = writeln!(out, "berth_last_success_timestamp_seconds {secs}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let st = s.store.snapshot();
    let mut rows = String::new();
    for r in st.resources.values() {
        let ready = r.condition(ConditionType::Ready);
        let (mark, class) = match ready {
            Some(c) if c.status => ("Ready", "ok"),
            _ => ("Not ready", "bad"),
        };
        let message = r.message();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{mark}</td><td>{}</td><td>{}</td></tr>",
            escape(r.kind.as_str()),
            escape(&r.name),
            escape(&message),
            escape(r.last_action.as_deref().unwrap_or("")),
        );
    }
    let mut events = String::new();
    for e in st.events.iter().rev().take(20) {
        let _ = write!(
            events,
            "<li><time>{}</time> <b>{}</b> {}</li>",
            escape(&e.time),
            escape(e.reason.as_str()),
            escape(&e.message)
        );
    }
    let mut conditions = String::new();
    for c in st
        .conditions
        .iter()
        .filter(|c| c.status || c.kind == ConditionType::Ready)
    {
        let class = match (c.kind, c.status) {
            (ConditionType::Ready, true) => "ok",
            (ConditionType::Reconciling, true) => "busy",
            _ => "bad",
        };
        let _ = write!(
            conditions,
            "<li class=\"{class}\"><b>{}</b> {} <pre>{}</pre></li>",
            escape(c.kind.as_str()),
            escape(c.reason.as_str()),
            escape(&c.message)
        );
    }
    if let Some(f) = &st.fetch {
        let _ = write!(
            conditions,
            "<li class=\"{}\"><b>Fetch</b> at {}: {}</li>",
            if f.error.is_some() { "bad" } else { "ok" },
            escape(&f.time),
            escape(
                f.error
                    .as_deref()
                    .or(f.commit.as_ref().map(|c| c.as_str()))
                    .unwrap_or("")
            ),
        );
    }
    let workflows = s.runs.as_ref().map(workflow_section).unwrap_or_default();
    let last = st.last_pass.as_ref().map_or("no pass yet".to_owned(), |p| {
        format!(
            "{} ({} ms, {}, at {})",
            p.result, p.duration_ms, p.trigger, p.finished_at
        )
    });
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>berth</title>\
         <meta http-equiv=\"refresh\" content=\"10\"><style>body{{font:14px system-ui;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         .ok{{color:#070}}.bad{{color:#b00}}.busy{{color:#a60}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>\
         <h1>berth</h1><p>Source <code>{}</code> — revision applied <code>{}</code>, observed <code>{}</code>. \
         Last pass: {}.</p><ul>{conditions}</ul><h2>Resources</h2><table><tr><th>Kind</th><th>Name</th><th>State</th><th>Message</th>\
         <th>Last action</th></tr>{rows}</table><h2>Plan</h2><pre>{}</pre>{workflows}<h2>Events</h2><ul>{events}</ul></body></html>",
        escape(&st.source),
        escape(st.revision_applied.as_ref().map_or("none", |r| r.as_str())),
        escape(st.revision_observed.as_ref().map_or("none", |r| r.as_str())),
        escape(&last),
        escape(st.plan.as_deref().unwrap_or("in sync")),
    ))
}

/// The workflows' recent runs (the last 5 of each), or nothing when none has run.
fn workflow_section(runs: &crate::workflow::runs::Runs) -> String {
    let latest = runs.latest();
    if latest.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for name in latest.keys() {
        for run in runs.list(name).iter().take(5) {
            let class = match run.state.as_str() {
                "succeeded" => "ok",
                "running" => "busy",
                "skipped" => "",
                _ => "bad",
            };
            let nodes: Vec<String> = run
                .nodes
                .iter()
                .map(|n| format!("{} {}", escape(&n.name), escape(&n.state)))
                .collect();
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                escape(name),
                run.number,
                escape(&run.trigger),
                escape(&run.started),
                escape(run.state.as_str()),
                match &run.message {
                    Some(m) => escape(m),
                    None => nodes.join(", "),
                }
            );
        }
    }
    format!(
        "<h2>Workflows</h2><table><tr><th>Workflow</th><th>Run</th><th>Trigger</th>\
         <th>Started</th><th>State</th><th>Nodes</th></tr>{rows}</table>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::status::{EventReason, PassResult, Reason};

    fn store() -> StatusStore {
        let mut st = Status {
            source: "/srv/state".into(),
            revision_applied: Some(crate::source::RevisionId::content("3f2a1c0d")),
            ..Status::default()
        };
        st.set_resource(
            &ResourceId::new(ResourceKind::App, "blog"),
            true,
            Reason::Applied,
            "running <ghost>",
            Some("create".into()),
        );
        st.set_resource(
            &ResourceId::new(ResourceKind::Domain, "shop"),
            false,
            Reason::ApplyFailed,
            "nginx rejected the config",
            None,
        );
        st.push_event(EventReason::Deployed, "deployed 3f2a1c0d".into());
        st.passes.insert(PassResult::Synced, 3);
        StatusStore::in_memory(st)
    }

    fn access(token: Option<&str>) -> Access {
        Access {
            token: token.map(str::to_owned),
            hosts: AllowedHosts::new("127.0.0.1:9470".parse().unwrap(), &[]),
        }
    }

    async fn get(app: Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    struct Starts;

    impl crate::status::workflows::WorkflowControl for Starts {
        fn declared(&self) -> Vec<String> {
            vec!["nightly".into(), "never-run".into()]
        }
        fn start(&self, name: &str) -> Result<u64, crate::status::workflows::StartRefused> {
            match name {
                "nightly" => Ok(2),
                _ => Err(crate::status::workflows::StartRefused::Unknown(format!(
                    "no workflow named `{name}` in the applied revision"
                ))),
            }
        }
    }

    fn with_workflows(token: Option<&str>) -> Router {
        let runs = crate::workflow::runs::Runs::in_memory();
        let n = runs.begin(
            "nightly",
            "schedule 0 4 * * *",
            "3f2a1c0d",
            &["dump".into()],
        );
        runs.finish("nightly", n, crate::workflow::runs::RunState::Failed);
        let control: Arc<dyn crate::status::workflows::WorkflowControl> = Arc::new(Starts);
        let routes =
            crate::status::workflows::routes(runs.clone(), Some(control), token.map(str::to_owned));
        app_with(store(), access(token), None, Some((runs, routes)))
    }

    async fn post(app: Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().method("POST").uri(uri);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn workflow_runs_are_listed_and_a_run_is_started_only_with_the_token() {
        let app = with_workflows(Some("tok"));
        let (code, body) = get(app.clone(), "/api/v1/workflows", Some("tok")).await;
        assert_eq!(code, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["workflows"][0]["name"], "never-run");
        assert_eq!(v["workflows"][0]["lastRun"], serde_json::Value::Null);
        assert_eq!(v["workflows"][1]["lastRun"]["state"], "failed");
        let (code, body) = get(app.clone(), "/api/v1/workflows/nightly/runs", Some("tok")).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("\"trigger\":\"schedule 0 4 * * *\""),
            "{body}"
        );
        assert_eq!(
            get(app.clone(), "/api/v1/workflows", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(app.clone(), "/api/v1/workflows/nightly/runs", Some("wrong"))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let (code, body) = post(app.clone(), "/api/v1/workflows/nightly/runs", Some("tok")).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        assert!(body.contains("\"number\":2"), "{body}");
        let (code, body) = post(app.clone(), "/api/v1/workflows/other/runs", Some("tok")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.contains("no workflow named `other`"), "{body}");
        // A foreign Host is refused on these routes too.
        let req = Request::builder()
            .uri("/api/v1/workflows")
            .header("Host", "evil.example")
            .header("Authorization", "Bearer tok")
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST);
        // The page shows the runs.
        let (_, page) = get(app, "/", Some("tok")).await;
        assert!(page.contains("<h2>Workflows</h2>"), "{page}");
        assert!(
            page.contains("<td>nightly</td><td>1</td><td>schedule 0 4 * * *</td>"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn without_a_token_no_run_can_be_started() {
        let app = with_workflows(None);
        let (code, body) = post(app.clone(), "/api/v1/workflows/nightly/runs", None).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(
            body.contains("starting a run needs the status token"),
            "{body}"
        );
        // Reading stays open, as the rest of the status is.
        assert_eq!(
            get(app.clone(), "/api/v1/workflows", None).await.0,
            StatusCode::OK
        );
        // No run yet: no empty heading on a page without workflows.
        let (_, page) = get(super::app(store(), access(None)), "/", None).await;
        assert!(!page.contains("Workflows"), "{page}");
    }

    #[tokio::test]
    async fn endpoints_serve_what_a_user_reads() {
        let app = app(store(), access(None));
        assert_eq!(
            get(app.clone(), "/healthz", None).await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get(app.clone(), "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (code, body) = get(app.clone(), "/api/v1/resources/app/blog", None).await;
        assert_eq!(code, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["conditions"][0]["type"], "Ready");
        assert_eq!(v["conditions"][0]["status"], true);
        assert_eq!(
            get(app.clone(), "/api/v1/resources/App/nope", None).await.0,
            StatusCode::NOT_FOUND
        );
        let (_, metrics) = get(app.clone(), "/metrics", None).await;
        assert!(
            metrics.contains("berth_passes_total{result=\"Synced\"} 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("berth_resources{condition=\"not_ready\"} 1\n"),
            "{metrics}"
        );
        let (_, page) = get(app.clone(), "/", None).await;
        assert!(page.contains("running &lt;ghost&gt;"), "escaped: {page}");
        assert!(page.contains("nginx rejected the config"));
        let (_, events) = get(app, "/api/v1/events", None).await;
        assert!(events.contains("deployed 3f2a1c0d"));
    }

    /// `/api/v1/plan` serves what `berth apply --dry-run -o json` prints for the revision.
    #[tokio::test]
    async fn the_plan_is_served_as_the_dry_run_prints_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("web.yaml"),
            "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  image: nginx:1\n",
        )
        .unwrap();
        let manifests = crate::manifest::load_dir(dir.path()).unwrap();
        let options = crate::reconcile::PassOptions {
            instance: "t".into(),
            apply: false,
            no_prune: false,
        };
        // As `berth apply --dry-run --offline` plans it.
        let prepared = crate::reconcile::prepare(
            &manifests,
            &manifests.digest,
            &crate::state::StateDir::new(state.path(), "default"),
            None,
            &options,
        )
        .await
        .unwrap();
        let printed = serde_json::to_string_pretty(&prepared.plan).unwrap();
        assert!(printed.contains("\"web\""), "{printed}");

        let store = store();
        let (code, body) = get(app(store.clone(), access(None)), "/api/v1/plan", None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("no plan yet"), "{body}");

        store.set_plan(
            crate::source::RevisionId::content(manifests.digest.clone()),
            prepared.plan.clone(),
        );
        let text = crate::plan::render_text(&prepared.plan, false);
        store.update(|st| st.plan = Some(text.clone()));
        let app = app(store, access(None));
        let req = Request::builder()
            .uri("/api/v1/plan")
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), printed);
        // The page still shows the plan as text.
        let (_, page) = get(app, "/", None).await;
        assert!(page.contains(&escape(&text)), "{page}");
    }

    #[tokio::test]
    async fn a_token_guards_everything_but_healthz() {
        let app = app(store(), access(Some("s3cret")));
        assert_eq!(get(app.clone(), "/healthz", None).await.0, StatusCode::OK);
        assert_eq!(
            get(app.clone(), "/api/v1/status", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app.clone(), "/api/v1/status", Some("wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app.clone(), "/metrics", Some("s3cre")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(app, "/api/v1/status", Some("s3cret")).await.0,
            StatusCode::OK
        );
    }

    async fn get_for(app: Router, uri: &str, host: &str) -> (StatusCode, String) {
        let req = Request::builder().uri(uri).header("Host", host);
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// DNS rebinding: a page of evil.example, its name pointed at 127.0.0.1, must not
    /// read the status through the visitor's browser.
    #[tokio::test]
    async fn the_status_server_checks_the_host_header_against_dns_rebinding() {
        let hosts = AllowedHosts::new(
            "127.0.0.1:9470".parse().unwrap(),
            &["status.example.com".into(), "ops.example.com:8443".into()],
        );
        let app = app(store(), Access { token: None, hosts });
        for host in [
            "127.0.0.1:9470",
            "localhost:9470",
            "LOCALHOST.:9470",
            "[::1]:9470",
            "status.example.com",
            "status.example.com:443",
            "ops.example.com:8443",
        ] {
            let (code, body) = get_for(app.clone(), "/api/v1/status", host).await;
            assert_eq!(code, StatusCode::OK, "{host}: {body}");
        }
        for host in [
            "evil.example",
            "evil.example:9470",
            "localhost:8080",
            "127.0.0.1",
            "10.1.2.3:9470",
            "ops.example.com:443",
            "status.example.com.evil.example",
        ] {
            for path in ["/api/v1/status", "/", "/api/v1/plan", "/metrics"] {
                let (code, body) = get_for(app.clone(), path, host).await;
                assert_eq!(
                    code,
                    StatusCode::MISDIRECTED_REQUEST,
                    "{host}{path}: {body}"
                );
            }
        }
        let (_, body) = get_for(app.clone(), "/api/v1/status", "evil.example:9470").await;
        assert_eq!(
            body,
            r#"{"error":"this server does not answer to Host `evil.example:9470`: if that name is berth's, start berth run with --allowed-host evil.example:9470"}"#
        );
        // Health probes come with any name; they read nothing.
        assert_eq!(
            get_for(app, "/healthz", "evil.example").await.0,
            StatusCode::OK
        );

        // Listening on every address: any IP address with the port, still no foreign name.
        let hosts = AllowedHosts::new("0.0.0.0:9470".parse().unwrap(), &[]);
        let app = super::app(store(), Access { token: None, hosts });
        assert_eq!(
            get_for(app.clone(), "/", "10.1.2.3:9470").await.0,
            StatusCode::OK
        );
        assert_eq!(
            get_for(app, "/", "evil.example:9470").await.0,
            StatusCode::MISDIRECTED_REQUEST
        );
        assert!(allowed_host_name("status.example.com:8443").is_ok());
        assert!(allowed_host_name("evil/../x").is_err());
        assert!(allowed_host_name("").is_err());
    }

    fn hook(secret: Option<&str>) -> (Router, Arc<Notify>) {
        let spec = crate::source::git::GitSpec::parse("file:///srv/state.git#main").unwrap();
        let source = Arc::new(GitSource::new(
            spec,
            std::path::Path::new("/nonexistent"),
            None,
        ));
        let fetch_now = Arc::new(Notify::new());
        let hook = GitHook {
            secret: secret.map(|s| Secret::new("git-webhook", s)),
            source,
            fetch_now: fetch_now.clone(),
        };
        (
            app_with_hook(store(), access(Some("t0ken")), Some(hook)),
            fetch_now,
        )
    }

    async fn post_hook(
        app: Router,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method("POST").uri("/hooks/git");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Whether `fetch_now` was poked (a poke is stored until someone waits).
    async fn poked(n: &Notify) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(20), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_push_webhook_fetches_only_for_a_good_signature_on_the_followed_branch() {
        let body = br#"{"ref":"refs/heads/main","after":"abc"}"#.to_vec();
        let good = webhook::github_signature(b"w3bhook", &body);
        let bad = webhook::github_signature(b"nope", &body);
        let (app, fetch_now) = hook(Some("w3bhook"));

        // No bearer token needed: forges sign instead.
        let (code, text) = post_hook(
            app.clone(),
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bad)],
            body.clone(),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
        assert!(
            text.contains("the GitHub signature does not match"),
            "{text}"
        );
        assert!(!poked(&fetch_now).await);

        let (code, text) =
            post_hook(app.clone(), &[("X-GitHub-Event", "push")], body.clone()).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
        assert!(text.contains("no signature"), "{text}");
        assert!(!poked(&fetch_now).await);

        let (code, text) = post_hook(
            app.clone(),
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &good)],
            body.clone(),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{text}");
        assert!(poked(&fetch_now).await);

        // GitLab sends the secret itself.
        let (code, _) = post_hook(
            app.clone(),
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", "w3bhook"),
            ],
            body.clone(),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert!(poked(&fetch_now).await);

        // Another branch: acknowledged, ignored.
        let dev = br#"{"ref":"refs/heads/dev"}"#.to_vec();
        let sig = webhook::github_signature(b"w3bhook", &dev);
        let (code, text) = post_hook(
            app.clone(),
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
            dev,
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert!(text.contains("\"ignored\""), "{text}");
        assert!(!poked(&fetch_now).await);

        // A ping is answered; nothing is fetched.
        let ping = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
        let sig = webhook::github_signature(b"w3bhook", &ping);
        let (code, _) = post_hook(
            app.clone(),
            &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)],
            ping,
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert!(!poked(&fetch_now).await);

        // Over 1 MiB: refused.
        let huge = vec![b' '; webhook::MAX_BODY_BYTES + 1];
        let sig = webhook::github_signature(b"w3bhook", &huge);
        let (code, _) = post_hook(
            app.clone(),
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
            huge,
        )
        .await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!poked(&fetch_now).await);
    }

    #[tokio::test]
    async fn the_push_webhook_is_off_without_a_secret_or_a_git_source() {
        let (app, _) = hook(None);
        let (code, text) = post_hook(app, &[], b"{}".to_vec()).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert!(text.contains("secrets/git-webhook"), "{text}");
        let (code, text) = post_hook(super::app(store(), access(None)), &[], b"{}".to_vec()).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(text.contains("follows a directory"), "{text}");
    }
}
