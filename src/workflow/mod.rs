//! Workflows: the condition and template language (`expr`), the engine that runs a
//! workflow's graph of nodes (`engine`), what nodes do on the host (`actions`), and the
//! record of runs kept per instance (`runs`).

pub mod actions;
pub mod engine;
pub mod expr;
pub mod runs;
