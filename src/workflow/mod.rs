//! Workflows: the graph engine's building blocks. For now, the condition and template
//! language that validation checks and the engine evaluates.

pub mod expr;
