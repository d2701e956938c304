//! A plan as people read it: one line per change with its reasons, the apps a rollback
//! holds, the diffs of updated specs, and the closing summary line.

use std::fmt::Write as _;

use super::{Op, Plan, Step, Target};
use crate::manifest::syntax::escape_control as esc;

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";

/// Renders `plan` as text, with ANSI colors when `color` is set.
///
/// Names, reasons and diff lines carry values from the manifests (labels, env values,
/// image names), so their control characters are escaped: only berth's own colors
/// reach the terminal, and every change stays on its own line.
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
        let _ = writeln!(
            out,
            "Revision {}: the host is in sync.",
            esc(&plan.revision)
        );
    } else {
        let _ = writeln!(out, "Revision {}:", esc(&plan.revision));
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
        // An order reads as what it does: `+ issue certificate for blog.example.com
        // (ACME, HTTP-01)`; its reason names the hosts.
        if let (Target::Certificate, Op::Create | Op::Update, Some((what, rest))) =
            (a.target, a.op, a.reasons.split_first())
        {
            let head = paint(code, &format!("{mark} {}", esc(what)));
            match rest.is_empty() {
                true => {
                    let _ = writeln!(out, "  {head}");
                }
                false => {
                    let _ = writeln!(out, "  {head}; {}", esc(&rest.join("; ")));
                }
            }
            continue;
        }
        for step in &a.steps {
            if let Step::Build {
                context,
                files,
                changed,
                ..
            } = step
            {
                let what = match changed {
                    Some(1) => "1 file changed".to_owned(),
                    Some(n) => format!("{n} files changed"),
                    None if *files == 1 => "1 file".to_owned(),
                    None => format!("{files} files"),
                };
                let head = paint(GREEN, &format!("+ build image for app {}", esc(&a.name)));
                let _ = writeln!(out, "  {head} (context {}, {what})", esc(context));
            }
        }
        let head = paint(
            code,
            &format!("{mark} {verb} {} {}", a.target, esc(&a.name)),
        );
        let _ = writeln!(out, "  {head}: {}", esc(&a.reasons.join("; ")));
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
            esc(&a.name),
            esc(&a.reasons.join("; "))
        );
    }
    for a in changes.iter().filter(|a| a.diff.is_some()) {
        let _ = writeln!(
            out,
            "\n{}",
            paint(BOLD, &format!("~ {} {}", a.target, esc(&a.name)))
        );
        for line in a.diff.as_deref().unwrap_or_default().lines() {
            let line = &*esc(line);
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

#[cfg(test)]
mod tests {
    use super::super::{Action, Summary};
    use super::*;

    #[test]
    fn values_with_escape_sequences_cannot_drive_the_terminal_or_forge_lines() {
        let mut a = Action::new(Target::App, "blog", Op::Update);
        a.reasons
            .push("env MODE changed to `x\n+ create app evil\x1b]0;owned\x07`".into());
        a.diff = Some("-  MODE: a\n+  MODE: \"\x1b[31mred\r\"\n".into());
        let plan = Plan {
            revision: "abc\x1b[2J".into(),
            actions: vec![a],
            summary: Summary::default(),
        };
        let text = render_text(&plan, false);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert_eq!(
            text,
            "Revision abc\\u{1b}[2J:\n  \
             ~ update app blog: env MODE changed to `x\\n+ create app evil\\u{1b}]0;owned\\u{7}`\n\
             \n~ app blog\n-  MODE: a\n+  MODE: \"\\u{1b}[31mred\\r\"\n\n\
             Plan: 0 to create, 0 to update, 0 to delete, 0 unchanged.\n"
        );
    }
}
