//! berth: GitOps for a Docker host.
//!
//! A server's apps, domains, databases and workflows are declared as YAML manifests;
//! berth validates them, plans the changes against what the host holds, and converges.

pub mod fsutil;
pub mod manifest;
pub mod workflow;
