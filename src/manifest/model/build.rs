//! An App's `build`: the image built from a folder of the state repository.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::EnvValue;
use crate::manifest::units::Duration;

/// How berth builds an app's image from source. The image is tagged
/// `berth/<app>:<hash of the context and these options>` and built only when that hash
/// changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Build {
    /// The build context: a folder of the state repository, relative to its root (or to
    /// the `:subdir` of a Git source), such as `apps/web`; `.` is the root. It is read
    /// from the revision being applied (a Git source's commit, a directory source's
    /// folder), honouring its `.dockerignore`.
    pub context: String,
    /// The Dockerfile, relative to the context. Default: `Dockerfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The stage of a multi-stage Dockerfile to build. Default: the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Build arguments (`ARG` in the Dockerfile). They are recorded in the image's
    /// history: never put a secret here. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, EnvValue>,
    /// Secrets the build may read, by id → secret name in the secret store. They are
    /// BuildKit secret mounts, not `ARG`s: a step reads one with
    /// `RUN --mount=type=secret,id=ID` (the file `/run/secrets/ID`), and its value
    /// never enters the image, its history or a log. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_args: BTreeMap<String, String>,
    /// How long one build may take before it is cancelled. Default: `30m`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
