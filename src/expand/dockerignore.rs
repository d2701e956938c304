//! `.dockerignore`, as the Docker CLI reads it: one pattern a line (`#` comments), paths
//! cleaned and relative to the context, `*`, `?`, `[…]` and `**` globs, `!` to take a
//! path back; the last pattern that matches a path or one of its parent folders
//! decides. The Dockerfile and `.dockerignore` itself are always sent, as the CLI does.

/// The parsed patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    tokens: Vec<Token>,
    exclusion: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// One character as it is.
    Char(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any characters but `/`.
    Star,
    /// `**` at the end: anything.
    Rest,
    /// `**/`: any number of whole folders, none included.
    Folders,
    /// `[…]`: one character of (or, negated, not of) these ranges.
    Class(Vec<(char, char)>, bool),
}

/// The most patterns read from one file; a file with more is cut there (a context's
/// listing takes time in their number).
const MAX_PATTERNS: usize = 10_000;

impl DockerIgnore {
    /// Parses the content of a `.dockerignore`.
    pub fn parse(text: &str) -> DockerIgnore {
        let mut patterns = Vec::new();
        for line in text.lines().take(MAX_PATTERNS) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(rest);
            if cleaned.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                tokens: tokenize(&cleaned),
                exclusion,
            });
        }
        DockerIgnore { patterns }
    }

    /// Whether `path` (relative to the context, `/` separators) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = {
            let mut out = Vec::new();
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                out.push(&path[..at + i]);
                at += i + 1;
            }
            out
        };
        let mut matched = false;
        for p in &self.patterns {
            // An exclusion only matters once matched, an inclusion only until then.
            if p.exclusion != matched {
                continue;
            }
            let hit = glob(&p.tokens, &path.chars().collect::<Vec<_>>())
                || parents
                    .iter()
                    .any(|dir| glob(&p.tokens, &dir.chars().collect::<Vec<_>>()));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Go's `filepath.Clean`, then without a leading `/`.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if i >= chars.len() {
                    out.push(Token::Rest);
                } else {
                    if chars[i] == '/' {
                        i += 1;
                    }
                    out.push(Token::Folders);
                }
                continue;
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(Token::Char(chars[i]));
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('^' | '!'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while j < chars.len() {
                    let mut c = chars[j];
                    if c == ']' && (!ranges.is_empty() || j > i + 1 + usize::from(negated)) {
                        closed = true;
                        break;
                    }
                    if c == '\\' && j + 1 < chars.len() {
                        j += 1;
                        c = chars[j];
                    }
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|e| *e != ']')
                    {
                        ranges.push((c, chars[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                if closed {
                    out.push(Token::Class(ranges, negated));
                    i = j + 1;
                    continue;
                }
                // An unclosed `[` is the character itself.
                out.push(Token::Char('['));
            }
            c => out.push(Token::Char(c)),
        }
        i += 1;
    }
    out
}

/// Whether `tokens` match all of `text`. Each (token, position) pair is tried at most
/// once (and once more inside a `**/`), so a hostile pattern stays linear in their
/// product.
fn glob(tokens: &[Token], text: &[char]) -> bool {
    Matcher::new(tokens, text).at(0, 0)
}

struct Matcher<'a> {
    tokens: &'a [Token],
    text: &'a [char],
    seen: Vec<bool>,
    seen_inner: Vec<bool>,
    steps: usize,
}

impl<'a> Matcher<'a> {
    fn new(tokens: &'a [Token], text: &'a [char]) -> Matcher<'a> {
        let cells = (tokens.len() + 1) * (text.len() + 1);
        Matcher {
            tokens,
            text,
            seen: vec![false; cells],
            seen_inner: vec![false; cells],
            steps: 0,
        }
    }

    fn at(&mut self, t: usize, s: usize) -> bool {
        let key = t * (self.text.len() + 1) + s;
        if self.seen[key] {
            return false;
        }
        self.seen[key] = true;
        self.steps += 1;
        let text = self.text;
        let Some(token) = self.tokens.get(t) else {
            return s == text.len();
        };
        let next = text.get(s).copied();
        match token {
            Token::Char(c) => next == Some(*c) && self.at(t + 1, s + 1),
            Token::One => next.is_some_and(|c| c != '/') && self.at(t + 1, s + 1),
            Token::Class(ranges, negated) => {
                next.is_some_and(|c| {
                    c != '/' && ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
                }) && self.at(t + 1, s + 1)
            }
            // Nothing more, or one more character that is not a `/` and the star again.
            Token::Star => {
                self.at(t + 1, s) || (next.is_some_and(|c| c != '/') && self.at(t, s + 1))
            }
            Token::Rest => true,
            // No folder, or characters up to a `/`, as many times as it takes.
            Token::Folders => self.at(t + 1, s) || self.inner(t, s),
        }
    }

    /// Inside a `**/`: characters until a `/`, after which the pattern may go on.
    fn inner(&mut self, t: usize, s: usize) -> bool {
        let key = t * (self.text.len() + 1) + s;
        if self.seen_inner[key] {
            return false;
        }
        self.seen_inner[key] = true;
        self.steps += 1;
        match self.text.get(s) {
            None => false,
            Some('/') => self.at(t + 1, s + 1) || self.inner(t, s + 1),
            Some(_) => self.inner(t, s + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_docker_cli() {
        let ignore = DockerIgnore::parse(
            "# build output\n/target\n*.log\n!keep.log\nnode_modules\n**/*.tmp\ndocs/**\n\
             !docs/README.md\nsecret?.txt\n[ab]*.bak\n",
        );
        let table = [
            ("target", true),
            ("target/debug/berth", true),
            ("src/target", false),
            ("app.log", true),
            ("keep.log", false),
            ("logs/app.log", false),
            ("node_modules/x/index.js", true),
            ("a/b/c.tmp", true),
            ("c.tmp", true),
            ("docs/guide.md", true),
            ("docs/README.md", false),
            ("secret1.txt", true),
            ("secret12.txt", false),
            ("a1.bak", true),
            ("c1.bak", false),
            ("src/main.rs", false),
        ];
        for (path, excluded) in table {
            assert_eq!(ignore.excludes(path), excluded, "{path}");
        }
    }

    #[test]
    fn hostile_patterns_take_steps_linear_in_pattern_and_path() {
        let tokens = tokenize(&format!("{}x", "*a".repeat(200)));
        let path: Vec<char> = "a".repeat(2000).chars().collect();
        let mut m = Matcher::new(&tokens, &path);
        assert!(!m.at(0, 0));
        assert!(
            m.steps <= 2 * (tokens.len() + 1) * (path.len() + 1),
            "{} steps",
            m.steps
        );
        let tokens = tokenize(&format!("{}x", "**/".repeat(50)));
        let path: Vec<char> = "a/".repeat(500).chars().collect();
        let mut m = Matcher::new(&tokens, &path);
        assert!(!m.at(0, 0));
        assert!(m.steps <= 2 * (tokens.len() + 1) * (path.len() + 1));
    }
}
