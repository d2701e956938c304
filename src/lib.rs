//! berth: GitOps for a Docker host.
//!
//! A server's apps, domains, databases and workflows are declared as YAML manifests;
//! berth validates them, plans the changes against what the host holds, and converges.

pub mod apply;
pub mod backup;
pub mod controller;
pub mod desired;
pub mod drivers;
pub mod expand;
pub mod manifest;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod resource;
pub mod runtime;
pub mod source;
pub mod state;
pub mod status;
pub mod workflow;
