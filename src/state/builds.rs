//! What berth keeps of each app's builds, in `<state-dir>/builds-<instance>/`: the log
//! of the last build (`<app>.log`, its last 64 KiB, secrets redacted) and the files of
//! the last successful one (`<app>.json`), which the next plan counts changes against.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic;

/// The most bytes of a build's log kept: its end.
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// The last successful build of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The image built.
    pub tag: String,
    /// Each file of its context: path → digest.
    pub files: BTreeMap<String, String>,
}

/// The builds of one instance.
#[derive(Debug, Clone)]
pub struct Builds {
    dir: PathBuf,
}

impl Builds {
    /// The builds of `instance` under `state_dir`.
    pub fn new(state_dir: &Path, instance: &str) -> Builds {
        Builds {
            dir: state_dir.join(format!("builds-{instance}")),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the log of `app`'s last build is.
    pub fn log_path(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.log"))
    }

    /// The log of `app`'s last build, or `None` when it never built.
    pub fn read_log(&self, app: &str) -> io::Result<Option<String>> {
        match std::fs::read(self.log_path(app)) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces `app`'s build log (already bounded and redacted by the caller).
    pub fn write_log(&self, app: &str, log: &str) -> io::Result<()> {
        self.ensure_dir()?;
        atomic::write_atomic_mode(&self.log_path(app), log.as_bytes(), Some(0o600))
    }

    /// Records `app`'s successful build.
    pub fn record(&self, app: &str, record: &BuildRecord) -> io::Result<()> {
        self.ensure_dir()?;
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        atomic::write_atomic(&self.dir.join(format!("{app}.json")), &json)
    }

    /// The files of each app's last successful build. An unreadable record counts as
    /// none: the plan only says fewer words.
    pub fn last_files(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<BuildRecord>(&b).ok());
            if let Some(r) = record {
                out.insert(app.to_owned(), r.files);
            }
        }
        out
    }

    fn ensure_dir(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }
}

/// A build's output as it comes: its last [`MAX_LOG_BYTES`], in whole lines.
#[derive(Debug, Default, Clone)]
pub struct BoundedLog {
    text: String,
    cut: bool,
}

impl BoundedLog {
    /// Appends output; the oldest lines go once it is over the limit.
    pub fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        if self.text.len() > MAX_LOG_BYTES {
            let mut start = self.text.len() - MAX_LOG_BYTES;
            while !self.text.is_char_boundary(start) {
                start += 1;
            }
            let start = self.text[start..]
                .find('\n')
                .map_or(start, |i| start + i + 1);
            self.text.drain(..start);
            self.cut = true;
        }
    }

    /// The text kept, saying first when the start was cut.
    pub fn text(&self) -> String {
        match self.cut {
            true => format!(
                "[earlier output cut: berth keeps the last 64 KiB]\n{}",
                self.text
            ),
            false => self.text.clone(),
        }
    }

    /// The last `n` non-empty lines.
    pub fn last_lines(&self, n: usize) -> Vec<&str> {
        let mut lines: Vec<&str> = self
            .text
            .lines()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .collect();
        lines.reverse();
        lines
    }

    /// The last step header: `Step N/M : …` (the classic builder) or `#N [stage] …`
    /// (BuildKit, whose failing step's header comes last).
    pub fn last_step(&self) -> Option<&str> {
        self.text.lines().rev().find_map(|l| {
            if l.starts_with("Step ") && l.contains(" : ") {
                return Some(l);
            }
            let (number, rest) = l.strip_prefix('#')?.split_once(' ')?;
            let numbered = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
            (numbered && rest.starts_with('[')).then_some(rest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_keeps_its_end_in_whole_lines() {
        let mut log = BoundedLog::default();
        log.push("Step 1/2 : FROM scratch\n");
        for n in 0..10_000 {
            log.push(&format!("line {n}\n"));
        }
        let text = log.text();
        assert!(text.len() <= MAX_LOG_BYTES + 64, "{}", text.len());
        assert!(text.starts_with("[earlier output cut"), "{}", &text[..80]);
        assert!(text.ends_with("line 9999\n"));
        assert_eq!(log.last_lines(2), ["line 9998", "line 9999"]);
        assert_eq!(
            log.last_step(),
            None,
            "the step header was cut with the start"
        );

        let dir = tempfile::tempdir().unwrap();
        let builds = Builds::new(dir.path(), "test");
        assert_eq!(builds.read_log("web").unwrap(), None);
        builds.write_log("web", &text).unwrap();
        assert_eq!(
            builds.read_log("web").unwrap().as_deref(),
            Some(text.as_str())
        );
        let record = BuildRecord {
            tag: "berth/web:0123456789ab".into(),
            files: [("Dockerfile".to_owned(), "abc".to_owned())].into(),
        };
        builds.record("web", &record).unwrap();
        assert_eq!(builds.last_files()["web"], record.files);
    }
}
