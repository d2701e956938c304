//! berth's integration tests: one binary, a module per area.

mod acme;
mod builds;
mod cli;
mod corpus;
mod databases;
mod dbserver;
mod deploy;
mod docker;
mod full_disk;
mod fuzz;
mod gitops;
mod http;
mod instances;
mod listener;
mod nginx;
mod nginx_master;
mod nginx_routing;
mod planner;
mod policy;
mod private_urls;
mod rollback;
mod routing;
mod run;
mod schemas;
mod servers;
mod source_limits;
mod status_server;
mod workflows;

// The Swarm runtime, against daemons the tests start themselves.
mod daemon;
mod remote;
mod swarm;
mod swarm_nodes;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A loopback port nothing listens on (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the berth binary with `args` in `dir`.
pub fn berth(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("the berth binary runs")
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
