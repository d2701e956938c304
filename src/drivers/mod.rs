//! Drivers: the only code that touches the world (the Docker daemon, proxy files,
//! database servers). Each is a trait with one real implementation.

pub mod acme;
pub mod batch;
mod buildkit;
pub mod dbserver;
pub mod docker;
pub mod memory;
pub mod nginx;
pub mod proxy;
pub mod traefik;
