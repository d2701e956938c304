//! Expand: the resources a manifest implies beyond itself. A Database becomes what
//! berth provides for it — a managed one's container spec and volume, a shared one's
//! database and user on its server — with the variables a linked app gets; an App with
//! `build` becomes the image built from its context.

pub mod builds;
pub mod databases;
mod dockerignore;
