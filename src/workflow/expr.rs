//! The condition language of workflow nodes and the `{{…}}` message templates.
//!
//! Conditions are checked when manifests are validated (syntax, and that every node
//! they name runs before them) and evaluated by the workflow engine over the outcomes
//! and outputs of finished nodes.

use std::collections::BTreeMap;
use std::fmt;

/// The longest condition parsed, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4096;
/// How deeply parentheses and `!` may nest in a condition.
pub const MAX_CONDITION_DEPTH: usize = 64;

/// The outcome of a finished node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it should.
    Succeeded,
    /// It failed.
    Failed,
    /// It did not run (a branch not taken, or a failed dependency).
    Skipped,
    /// An attempt ran past the node's `timeout` and was stopped.
    TimedOut,
    /// The run was stopped (its deadline, or berth shutting down) while it ran.
    Cancelled,
}

impl Outcome {
    /// The word used in expressions and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::TimedOut => "timedOut",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether `<node>.<self>` holds for a node that ended with `actual`: a node that
    /// timed out or was cancelled also counts as failed.
    pub fn matches(self, actual: Outcome) -> bool {
        self == actual
            || (self == Outcome::Failed && matches!(actual, Outcome::TimedOut | Outcome::Cancelled))
    }
}

/// A reference to a node's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `<node>.outcome`: `"succeeded"`, `"failed"` or `"skipped"`.
    Outcome(String),
    /// `<node>.succeeded`, `.failed`, `.skipped`: a boolean.
    Is(String, Outcome),
    /// `<node>.output.<key>`.
    Output(String, String),
}

impl Ref {
    /// The node referred to.
    pub fn node(&self) -> &str {
        match self {
            Ref::Outcome(n) | Ref::Is(n, _) | Ref::Output(n, _) => n,
        }
    }

    fn parse(path: &str) -> Result<Ref, String> {
        let parts: Vec<&str> = path.split('.').collect();
        let node = parts[0].to_owned();
        match parts[1..] {
            ["outcome"] => Ok(Ref::Outcome(node)),
            ["succeeded"] => Ok(Ref::Is(node, Outcome::Succeeded)),
            ["failed"] => Ok(Ref::Is(node, Outcome::Failed)),
            ["skipped"] => Ok(Ref::Is(node, Outcome::Skipped)),
            ["timedOut"] => Ok(Ref::Is(node, Outcome::TimedOut)),
            ["cancelled"] => Ok(Ref::Is(node, Outcome::Cancelled)),
            ["output", key] if !key.is_empty() => Ok(Ref::Output(node, key.to_owned())),
            _ => Err(format!(
                "`{path}` is not a node reference: write `<node>.succeeded`, `.failed`, \
                 `.skipped`, `.timedOut`, `.outcome` or `.output.<key>`"
            )),
        }
    }
}

/// A value in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// Text.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// Nothing (a missing output).
    Null,
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => f.write_str(s),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Literal),
    /// A node reference.
    Ref(Ref),
    /// `!e`
    Not(Box<Expr>),
    /// `a && b`
    And(Box<Expr>, Box<Expr>),
    /// `a || b`
    Or(Box<Expr>, Box<Expr>),
    /// `a <op> b`
    Cmp(Op, Box<Expr>, Box<Expr>),
}

/// What a finished node left behind, for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    /// How it ended.
    pub outcome: Outcome,
    /// Its outputs (an HTTP status, an exit code…).
    pub output: BTreeMap<String, Literal>,
}

impl Expr {
    /// Parses a condition.
    ///
    /// The text is at most [`MAX_CONDITION_BYTES`] long and nests at most
    /// [`MAX_CONDITION_DEPTH`] levels, so that parsing, evaluating and dropping the tree
    /// stay within the stack whatever a manifest holds.
    pub fn parse(text: &str) -> Result<Expr, String> {
        if text.len() > MAX_CONDITION_BYTES {
            return Err(format!(
                "the condition is {} bytes, over the limit of {MAX_CONDITION_BYTES} bytes; \
                 split it across several nodes",
                text.len()
            ));
        }
        let tokens = tokenize(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let expr = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(expr),
            Some(t) => Err(format!("unexpected {t} in condition")),
        }
    }

    /// Every node reference, in order of appearance.
    pub fn refs(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Ref>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Ref(r) => out.push(r),
            Expr::Not(e) => e.collect(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluates the condition over finished nodes' results; a node that has no result
    /// counts as skipped.
    pub fn eval(&self, results: &BTreeMap<String, NodeResult>) -> bool {
        truthy(&self.value(results))
    }

    fn value(&self, results: &BTreeMap<String, NodeResult>) -> Literal {
        match self {
            Expr::Lit(l) => l.clone(),
            Expr::Ref(r) => {
                let result = results.get(r.node());
                let outcome = result.map_or(Outcome::Skipped, |r| r.outcome);
                match r {
                    Ref::Outcome(_) => Literal::Str(outcome.as_str().to_owned()),
                    Ref::Is(_, o) => Literal::Bool(o.matches(outcome)),
                    Ref::Output(_, key) => result
                        .and_then(|r| r.output.get(key).cloned())
                        .unwrap_or(Literal::Null),
                }
            }
            Expr::Not(e) => Literal::Bool(!e.eval(results)),
            Expr::And(a, b) => Literal::Bool(a.eval(results) && b.eval(results)),
            Expr::Or(a, b) => Literal::Bool(a.eval(results) || b.eval(results)),
            Expr::Cmp(op, a, b) => {
                Literal::Bool(compare(*op, &a.value(results), &b.value(results)))
            }
        }
    }
}

fn truthy(v: &Literal) -> bool {
    match v {
        Literal::Bool(b) => *b,
        Literal::Null => false,
        Literal::Num(n) => *n != 0.0,
        Literal::Str(s) => !s.is_empty(),
    }
}

fn compare(op: Op, a: &Literal, b: &Literal) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Literal::Num(x), Literal::Num(y)) => x.partial_cmp(y),
        // Outputs are often numbers written as text ("200"): compare them as numbers.
        (Literal::Str(s), Literal::Num(y)) => s.parse::<f64>().ok().and_then(|x| x.partial_cmp(y)),
        (Literal::Num(x), Literal::Str(s)) => s.parse::<f64>().ok().and_then(|y| x.partial_cmp(&y)),
        (Literal::Str(x), Literal::Str(y)) => Some(x.cmp(y)),
        (Literal::Bool(x), Literal::Bool(y)) => Some(x.cmp(y)),
        (Literal::Null, Literal::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Lit(Literal),
    Path(String),
    Op(&'static str),
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Lit(l) => write!(f, "`{l}`"),
            Token::Path(p) => write!(f, "`{p}`"),
            Token::Op(o) => write!(f, "`{o}`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(op) = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|o| *o == two)
        {
            tokens.push(Token::Op(op));
            i += 2;
            continue;
        }
        match c {
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '<' => tokens.push(Token::Op("<")),
            '>' => tokens.push(Token::Op(">")),
            '!' => tokens.push(Token::Op("!")),
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|d| *d == c)
                    .ok_or("unterminated string in condition")?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                tokens.push(Token::Lit(Literal::Str(s)));
                i += end + 2;
                continue;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|d| d.is_ascii_alphanumeric() || matches!(d, '_' | '-' | '.'))
                    .count();
                let word: String = chars[i..i + len].iter().collect();
                i += len;
                tokens.push(match word.as_str() {
                    "true" => Token::Lit(Literal::Bool(true)),
                    "false" => Token::Lit(Literal::Bool(false)),
                    "null" => Token::Lit(Literal::Null),
                    _ => match word.parse::<f64>() {
                        Ok(n) if !word.contains('-') || word.starts_with('-') => {
                            Token::Lit(Literal::Num(n))
                        }
                        _ => Token::Path(word),
                    },
                });
                continue;
            }
            other => return Err(format!("unexpected `{other}` in condition")),
        }
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// How many `(` and `!` enclose the token being parsed.
    depth: usize,
}

impl Parser {
    /// Enters one more level of `(` or `!`, refusing to go past the limit.
    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_CONDITION_DEPTH {
            return Err(format!(
                "the condition nests deeper than {MAX_CONDITION_DEPTH} levels; \
                 remove some parentheses or `!`"
            ));
        }
        Ok(())
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Op(o)) if *o == op)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_op("||") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.peek_op("&&") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_op("!") {
            self.pos += 1;
            self.descend()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.primary()?;
        let op = match self.tokens.get(self.pos) {
            Some(Token::Op("==")) => Op::Eq,
            Some(Token::Op("!=")) => Op::Ne,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.primary()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            Some(Token::Open) => {
                self.descend()?;
                let e = self.or()?;
                self.depth -= 1;
                match self.tokens.get(self.pos) {
                    Some(Token::Close) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    _ => Err("missing `)` in condition".to_owned()),
                }
            }
            Some(Token::Lit(l)) => Ok(Expr::Lit(l)),
            Some(Token::Path(p)) => Ref::parse(&p).map(Expr::Ref),
            Some(t) => Err(format!("unexpected {t} in condition")),
            None => Err("condition ends too early".to_owned()),
        }
    }
}

/// A `{{…}}` placeholder in a notify message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{{workflow}}`: the workflow's name.
    Workflow,
    /// `{{revision}}`: the revision applied.
    Revision,
    /// `{{trigger}}`: what started the run.
    Trigger,
    /// `{{<node>.outcome}}` or `{{<node>.output.<key>}}`.
    Node(Ref),
}

/// Parses the placeholders of a message template.
pub fn placeholders(template: &str) -> Result<Vec<Placeholder>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or("unclosed `{{` in message: close it with `}}`")?;
        let name = after[..end].trim();
        out.push(match name {
            "workflow" => Placeholder::Workflow,
            "revision" => Placeholder::Revision,
            "trigger" => Placeholder::Trigger,
            _ if name.contains('.') => Placeholder::Node(Ref::parse(name).map_err(|_| {
                format!(
                    "unknown placeholder `{{{{{name}}}}}`: use workflow, revision, trigger, \
                     <node>.outcome or <node>.output.<key>"
                )
            })?),
            _ => {
                return Err(format!(
                    "unknown placeholder `{{{{{name}}}}}`: use workflow, revision, trigger, \
                     <node>.outcome or <node>.output.<key>"
                ));
            }
        });
        rest = &after[end + 2..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> BTreeMap<String, NodeResult> {
        let mut r = BTreeMap::new();
        r.insert(
            "smoke".to_owned(),
            NodeResult {
                outcome: Outcome::Succeeded,
                output: [("status".to_owned(), Literal::Str("200".into()))].into(),
            },
        );
        r.insert(
            "deploy-web".to_owned(),
            NodeResult {
                outcome: Outcome::Failed,
                output: BTreeMap::new(),
            },
        );
        r
    }

    #[test]
    fn evaluates_over_outcomes_and_outputs() {
        let r = results();
        let cases = [
            ("smoke.succeeded", true),
            ("smoke.succeeded && smoke.output.status == 200", true),
            ("smoke.output.status >= 500", false),
            ("deploy-web.failed || smoke.failed", true),
            ("!(deploy-web.outcome == 'failed')", false),
            ("other.skipped", true),
            ("smoke.output.missing == null", true),
        ];
        for (text, want) in cases {
            let e = Expr::parse(text).unwrap();
            assert_eq!(e.eval(&r), want, "{text}");
        }
    }

    #[test]
    fn refs_name_their_nodes() {
        let e = Expr::parse("a.succeeded && (b.output.x != 'y' || c.failed)").unwrap();
        let nodes: Vec<&str> = e.refs().iter().map(|r| r.node()).collect();
        assert_eq!(nodes, ["a", "b", "c"]);
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        for (text, want) in [
            ("a.succeeded &&", "ends too early"),
            ("(a.failed", "missing `)`"),
            ("a.status", "not a node reference"),
            ("a.failed ; b", "unexpected `;`"),
            ("'open", "unterminated string"),
        ] {
            let err = Expr::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let parens = format!("{}a.failed{}", "(".repeat(10_000), ")".repeat(10_000));
        let nots = format!("{}a.failed", "!".repeat(50_000));
        for text in [&parens, &nots] {
            let err = Expr::parse(text).unwrap_err();
            assert!(err.contains("over the limit of 4096 bytes"), "{err}");
        }
        let parens = format!("{}a.failed{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(
            Expr::parse(&parens).unwrap_err(),
            "the condition nests deeper than 64 levels; remove some parentheses or `!`"
        );
        let nots = format!("{}a.failed", "!".repeat(65));
        assert!(Expr::parse(&nots).unwrap_err().contains("deeper than 64"));
        let ok = format!("{}a.skipped{}", "(!".repeat(32), ")".repeat(32));
        assert!(Expr::parse(&ok).unwrap().eval(&results()));
    }

    #[test]
    fn the_longest_chain_allowed_parses_evaluates_and_drops() {
        // `&&` chains build a tree as deep as they are long; the length limit bounds it.
        let chain = vec!["1"; MAX_CONDITION_BYTES / 3].join("&&");
        assert!(chain.len() <= MAX_CONDITION_BYTES);
        let e = Expr::parse(&chain).unwrap();
        assert!(e.eval(&results()));
        assert!(e.refs().is_empty());
    }

    #[test]
    fn templates() {
        let p = placeholders("{{workflow}} at {{ revision }}: {{smoke.output.status}}").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            Placeholder::Node(Ref::Output("smoke".into(), "status".into()))
        );
        assert!(
            placeholders("{{nope}}")
                .unwrap_err()
                .contains("unknown placeholder `{{nope}}`")
        );
        assert!(placeholders("{{workflow").is_err());
    }
}
