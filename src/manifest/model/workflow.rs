//! Workflow: triggers and a graph of nodes (actions, conditions, notifications, rollbacks).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::units::{Cron, Duration};

/// A graph of nodes run by the controller when one of its triggers fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    /// What starts a run. A workflow can always be run by hand.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
    /// The nodes; each runs once the nodes it `needs` have finished.
    #[schemars(length(min = 1, max = 200))]
    pub nodes: Vec<Node>,
    /// The longest a run may take before it is stopped and failed. Default: `30m`.
    #[serde(default = "default_workflow_timeout")]
    pub timeout: Duration,
}

fn default_workflow_timeout() -> Duration {
    Duration::from_secs(1800)
}

/// What starts a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "on", rename_all = "camelCase", deny_unknown_fields)]
pub enum Trigger {
    /// A new revision has been applied.
    RevisionApplied,
    /// An app has been deployed (created or updated) successfully.
    AppDeployed {
        /// The App.
        app: String,
    },
    /// Deploying an app failed or it became unhealthy.
    AppFailed {
        /// The App.
        app: String,
    },
    /// A schedule, in cron syntax (host local time).
    Schedule {
        /// Such as `0 4 * * *`.
        cron: Cron,
    },
    /// Only `berth workflow run NAME`.
    Manual,
}

/// One step of a workflow: exactly one of `action`, `condition`, `notify`, `rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// The node's name, unique in the workflow (a DNS label).
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Nodes that must finish first. Default: none (the node starts at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Do something: deploy, restart, exec, backup or an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Branch on earlier nodes' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Send a message through a Notifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Put an app back to the spec it had before its last deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// When it runs: `onSuccess`, once every node it needs succeeded (a need that
    /// failed or was skipped skips it), or `always`, once they finished however they
    /// ended (clean-up, final notifications). Default: `onSuccess`.
    #[serde(default, skip_serializing_if = "When::is_default")]
    pub when: When,
    /// The longest one attempt may take; it is then stopped and counts as timed out.
    /// Default: `5m`.
    #[serde(default = "default_node_timeout")]
    pub timeout: Duration,
    /// How many times a failed or timed-out `action` or `rollback` is tried again.
    /// Default: 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// The wait before the first retry, doubled before each next one (at most 5 minutes).
    /// Default: `1s`.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: Duration,
}

fn default_node_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// When a node runs, given how the nodes it needs ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum When {
    /// Only when every node it needs succeeded.
    #[default]
    OnSuccess,
    /// Whenever they finished, whatever their outcome.
    Always,
}

impl When {
    fn is_default(&self) -> bool {
        *self == When::OnSuccess
    }
}

/// What an action node does (exactly one key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Converge one app to its declared spec now.
    Deploy {
        /// The App.
        app: String,
    },
    /// Restart an app's containers.
    Restart {
        /// The App.
        app: String,
    },
    /// Run a command in an app's container; its exit code decides the outcome and its
    /// output is kept (bounded).
    Exec {
        /// The App.
        app: String,
        /// The command, exec form.
        #[schemars(length(min = 1))]
        command: Vec<String>,
    },
    /// Dump a database now.
    Backup {
        /// The Database.
        database: String,
    },
    /// Send an HTTP request; the node fails unless the status is the expected one.
    #[serde(rename_all = "camelCase")]
    Http {
        /// An `http://` or `https://` URL.
        url: String,
        /// The method. Default: `GET`.
        #[serde(default = "default_method")]
        method: String,
        /// Request headers. Default: none.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The request body. Default: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The status that counts as success. Default: any 2xx.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 100, max = 599))]
        expect_status: Option<u16>,
    },
}

fn default_method() -> String {
    "GET".to_owned()
}

/// A branch: `if` is evaluated over earlier nodes; the nodes in `then` run when it is
/// true, those in `else` when it is false (the others are skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// An expression such as `smoke.succeeded && smoke.output.status == 200`: node
    /// references (`<node>.succeeded`, `.failed`, `.skipped`, `.outcome`,
    /// `.output.<key>`), literals, `== != < <= > >=`, `&& || !` and parentheses.
    #[serde(rename = "if")]
    pub expr: String,
    /// Nodes run when the expression is true. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<String>,
    /// Nodes run when it is false. Default: none.
    #[serde(default, rename = "else", skip_serializing_if = "Vec::is_empty")]
    pub otherwise: Vec<String>,
}

/// A message sent through a Notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// The Notifier.
    pub notifier: String,
    /// The message; `{{workflow}}`, `{{revision}}`, `{{trigger}}` and
    /// `{{<node>.outcome}}` / `{{<node>.output.<key>}}` are replaced.
    pub message: String,
}

/// Puts an app back to its previous spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    /// The App.
    pub app: String,
}
