//! The workflow part of the status server: the runs kept per workflow
//! (`GET /api/v1/workflows`, `/api/v1/workflows/{name}/runs`, `…/runs/{number}`), and the
//! one control call that changes something, `POST /api/v1/workflows/{name}/runs`, which
//! always needs the status token and is refused when none is configured.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::workflow::runs::Runs;

/// Why a control call could not start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefused {
    /// No such workflow in the applied revision.
    Unknown(String),
    /// A run of it is going.
    Running(String),
    /// Nothing applied yet.
    NotReady(String),
}

/// What the status server asks of the controller's workflows.
pub trait WorkflowControl: Send + Sync {
    /// The workflows the applied revision declares.
    fn declared(&self) -> Vec<String>;
    /// Starts a run of `name` by hand; returns its number.
    fn start(&self, name: &str) -> Result<u64, StartRefused>;
}

#[derive(Clone)]
struct Routes {
    runs: Runs,
    control: Option<Arc<dyn WorkflowControl>>,
    token: Option<String>,
}

/// The workflow routes, to merge into the status server's router. Each checks the
/// bearer token when one is configured; the control call is refused without one.
pub fn routes(
    runs: Runs,
    control: Option<Arc<dyn WorkflowControl>>,
    token: Option<String>,
) -> Router {
    let state = Routes {
        runs,
        control,
        token,
    };
    Router::new()
        .route("/api/v1/workflows", get(list))
        .route("/api/v1/workflows/{name}/runs", get(runs_of).post(start))
        .route("/api/v1/workflows/{name}/runs/{number}", get(one))
        .with_state(state)
}

async fn list(State(r): State<Routes>, headers: HeaderMap) -> Response {
    if let Some(refused) = bearer(r.token.as_deref(), &headers, false) {
        return refused;
    }
    let latest = r.runs.latest();
    let mut names: Vec<String> = r.control.as_ref().map(|c| c.declared()).unwrap_or_default();
    names.extend(latest.keys().cloned());
    names.sort();
    names.dedup();
    let workflows: Vec<_> = names
        .iter()
        .map(|n| json!({"name": n, "lastRun": latest.get(n)}))
        .collect();
    Json(json!({ "workflows": workflows })).into_response()
}

async fn runs_of(
    State(r): State<Routes>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = bearer(r.token.as_deref(), &headers, false) {
        return refused;
    }
    Json(json!({ "workflow": name, "runs": r.runs.list(&name) })).into_response()
}

async fn one(
    State(r): State<Routes>,
    headers: HeaderMap,
    Path((name, number)): Path<(String, u64)>,
) -> Response {
    if let Some(refused) = bearer(r.token.as_deref(), &headers, false) {
        return refused;
    }
    match r.runs.get(&name, number) {
        Some(run) => Json(run).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("workflow `{name}` has no run {number}"),
        ),
    }
}

async fn start(State(r): State<Routes>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(refused) = bearer(r.token.as_deref(), &headers, true) {
        return refused;
    }
    let Some(control) = &r.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs no workflows".into(),
        );
    };
    match control.start(&name) {
        Ok(number) => (
            StatusCode::ACCEPTED,
            Json(json!({"workflow": name, "number": number, "state": "running"})),
        )
            .into_response(),
        Err(StartRefused::Unknown(m)) => error(StatusCode::NOT_FOUND, m),
        Err(StartRefused::Running(m)) => error(StatusCode::CONFLICT, m),
        Err(StartRefused::NotReady(m)) => error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// `None` when the request may go on. A control call (`required`) is refused when no
/// token is configured: nobody may start runs anonymously.
fn bearer(token: Option<&str>, headers: &HeaderMap, required: bool) -> Option<Response> {
    let Some(token) = token else {
        return required.then(|| {
            error(
                StatusCode::FORBIDDEN,
                "starting a run needs the status token, and this server has none: start \
                 berth run with --token-file (or BERTH_TOKEN)"
                    .into(),
            )
        });
    };
    super::http::refused_without_bearer(token, headers)
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
