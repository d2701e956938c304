//! A plan as people read it: one line per change with its reasons, the apps a rollback
//! holds, the diffs of updated specs, and the closing summary line.

use std::fmt::Write as _;

use super::{Op, Plan, Target};

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";

/// Renders `plan` as text, with ANSI colors when `color` is set.
pub fn render_text(plan: &Plan, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let changes: Vec<_> = plan.changes().collect();
    if changes.is_empty() {
        let _ = writeln!(out, "Revision {}: the host is in sync.", plan.revision);
    } else {
        let _ = writeln!(out, "Revision {}:", plan.revision);
    }
    for a in &changes {
        let (mark, code) = match a.op {
            Op::Create => ("+", GREEN),
            Op::Update => ("~", YELLOW),
            Op::Delete => ("-", RED),
            Op::Conflict => ("!", RED),
            Op::Noop => (" ", ""),
        };
        let verb = match (a.target, a.op) {
            (Target::Secret, _) => "generate",
            (Target::File, _) => "write",
            (_, Op::Create) => "create",
            (_, Op::Update) => "update",
            (_, Op::Delete) => "delete",
            (_, Op::Conflict) => "conflict",
            (_, Op::Noop) => "keep",
        };
        let head = paint(code, &format!("{mark} {verb} {} {}", a.target, a.name));
        let _ = writeln!(out, "  {head}: {}", a.reasons.join("; "));
    }
    for a in plan
        .actions
        .iter()
        .filter(|a| a.op == Op::Noop && !a.reasons.is_empty())
    {
        if let Some(held) = &a.held {
            let head = paint(CYAN, &format!("= hold {} {}", a.target, a.name));
            let _ = writeln!(
                out,
                "  {head} at {} (rolled back {})",
                held.short(),
                held.by
            );
            continue;
        }
        let _ = writeln!(
            out,
            "    keep {} {}: {}",
            a.target,
            a.name,
            a.reasons.join("; ")
        );
    }
    for a in changes.iter().filter(|a| a.diff.is_some()) {
        let _ = writeln!(
            out,
            "\n{}",
            paint(BOLD, &format!("~ {} {}", a.target, a.name))
        );
        for line in a.diff.as_deref().unwrap_or_default().lines() {
            let code = match line.chars().next() {
                Some('+') if !line.starts_with("+++") => GREEN,
                Some('-') if !line.starts_with("---") => RED,
                Some('@') => CYAN,
                _ => "",
            };
            let _ = writeln!(
                out,
                "{}",
                if code.is_empty() {
                    line.to_owned()
                } else {
                    paint(code, line)
                }
            );
        }
    }
    let _ = writeln!(out, "\n{}", plan.summary);
    out
}
