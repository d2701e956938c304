//! A Git source (gix): a bare clone under `<state-dir>/git/`, fetched on demand; a
//! revision is one commit, and its manifests are read straight from the commit's tree.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;
use gix::remote::Direction;

use super::Revision;
use crate::manifest::{Diagnostic, SourceFile};
use crate::state::secrets::Secret;

/// Where the manifests are: `<url>[#ref][:subdir]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSpec {
    /// The repository: `https://…`, `file://…`, `ssh://…` or a local path.
    pub url: String,
    /// A branch, a tag or a commit id; `None` follows the remote's default branch.
    pub reference: Option<String>,
    /// The folder of the manifests inside the repository (`""` for the root).
    pub subdir: String,
}

/// Why a Git source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The `--source` text is not a Git source.
    #[error("--source {given}: {reason}")]
    Spec {
        /// The text given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local clone could not be created or opened.
    #[error("failed to open the clone at {path}: {message}; remove the folder to start afresh")]
    Clone {
        /// The clone's folder.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// Fetching failed: the last good revision stays live.
    #[error("failed to fetch {url}: {message}")]
    Fetch {
        /// The repository (without credentials).
        url: String,
        /// The error.
        message: String,
    },
    /// The ref is not on the remote.
    #[error("{url} has no branch or tag `{reference}`{hint}")]
    NoSuchRef {
        /// The repository (without credentials).
        url: String,
        /// The ref asked for.
        reference: String,
        /// The branches it has.
        hint: String,
    },
    /// The commit's tree could not be read.
    #[error("failed to read commit {commit}: {message}")]
    Read {
        /// The commit.
        commit: String,
        /// The error.
        message: String,
    },
}

impl GitSpec {
    /// Parses `<url>[#ref][:subdir]`; `#:subdir` keeps the default branch.
    pub fn parse(given: &str) -> Result<GitSpec, GitError> {
        let bad = |reason: &str| GitError::Spec {
            given: redact_url(given),
            reason: reason.to_owned(),
        };
        let (url, rest) = match given.split_once('#') {
            Some((url, rest)) => (url, Some(rest)),
            None => (given, None),
        };
        let (reference, subdir) = match rest {
            Some(rest) => match rest.split_once(':') {
                Some((r, dir)) => (r, dir),
                None => (rest, ""),
            },
            None => ("", ""),
        };
        if url.is_empty() {
            return Err(bad("no repository before `#`"));
        }
        if !reference.is_empty() && !valid_ref(reference) {
            return Err(bad(&format!(
                "`{reference}` is not a valid branch, tag or commit name"
            )));
        }
        let subdir = subdir.trim_matches('/');
        if subdir
            .split('/')
            .any(|part| part == ".." || part == "." || (part.is_empty() && !subdir.is_empty()))
        {
            return Err(bad(&format!(
                "the folder `{subdir}` must be a plain path inside the repository"
            )));
        }
        Ok(GitSpec {
            url: url.to_owned(),
            reference: (!reference.is_empty()).then(|| reference.to_owned()),
            subdir: subdir.to_owned(),
        })
    }

    /// Whether `--source` names a Git repository rather than a directory to watch: a
    /// URL, a path with `#`, or a bare repository on disk.
    pub fn is_git(given: &str) -> bool {
        let url = given.split('#').next().unwrap_or_default();
        if ["file://", "https://", "http://", "ssh://", "git://", "git@"]
            .iter()
            .any(|p| url.starts_with(p))
            || given.contains('#')
        {
            return true;
        }
        let path = Path::new(url);
        path.join("HEAD").is_file() && path.join("objects").is_dir()
    }

    /// The URL without credentials, with the ref and folder: for status and logs.
    pub fn display(&self) -> String {
        let mut out = redact_url(&self.url);
        if let Some(r) = &self.reference {
            out.push('#');
            out.push_str(r);
        }
        if !self.subdir.is_empty() {
            if self.reference.is_none() {
                out.push('#');
            }
            out.push(':');
            out.push_str(&self.subdir);
        }
        out
    }
}

/// Names git itself would accept for a ref (and nothing a transport could misread).
fn valid_ref(name: &str) -> bool {
    !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.ends_with(".lock")
        && name.chars().all(|c| {
            !c.is_control()
                && !c.is_whitespace()
                && !matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

/// `https://user:token@host/x` → `https://host/x`: credentials never reach a log.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A Git repository followed at one ref.
#[derive(Debug)]
pub struct GitSource {
    spec: GitSpec,
    clone: PathBuf,
    token: Option<Secret>,
    /// The full name of the branch followed (`refs/heads/main`), once known: the
    /// default branch is learnt from the remote's HEAD at the first fetch.
    tracked: Mutex<Option<String>>,
}

/// The commit fetched, and whether the ref moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The commit id (40 hex digits).
    pub commit: String,
}

impl GitSource {
    /// A source for `spec`, cloned under `<state_dir>/git/`; `token` authenticates
    /// HTTPS fetches (as the password, with the user `x-access-token`, which GitHub,
    /// Gitea and GitLab accept).
    pub fn new(spec: GitSpec, state_dir: &Path, token: Option<Secret>) -> GitSource {
        // One clone per repository URL, so changing --source never mixes histories.
        let key = crate::state::secrets::short_hash(&spec.url);
        let tracked = spec.reference.as_ref().map(|r| format!("refs/heads/{r}"));
        GitSource {
            clone: state_dir.join("git").join(key),
            spec,
            token,
            tracked: Mutex::new(tracked),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &GitSpec {
        &self.spec
    }

    /// The local clone.
    pub fn clone_dir(&self) -> &Path {
        &self.clone
    }

    /// The branch followed (`refs/heads/main`), if known yet.
    pub fn tracked_ref(&self) -> Option<String> {
        self.tracked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn open(&self) -> Result<gix::Repository, GitError> {
        let err = |e: &dyn std::fmt::Display| GitError::Clone {
            path: self.clone.clone(),
            message: e.to_string(),
        };
        if self.clone.join("HEAD").is_file() {
            gix::open(&self.clone).map_err(|e| err(&e))
        } else {
            std::fs::create_dir_all(&self.clone).map_err(|e| err(&e))?;
            gix::init_bare(&self.clone).map_err(|e| err(&e))
        }
    }

    /// Fetches the ref from the remote (blocking: run it off the async threads) and
    /// returns the commit it points to.
    // The credentials callback returns gix's own error type: its size is not ours.
    #[allow(clippy::result_large_err)]
    pub fn fetch(&self) -> Result<Fetched, GitError> {
        let repo = self.open()?;
        let url = redact_url(&self.spec.url);
        let failed = |e: &dyn std::fmt::Display| GitError::Fetch {
            url: url.clone(),
            message: redact_message(&e.to_string(), self.token.as_ref()),
        };
        let specs: Vec<String> = match &self.spec.reference {
            Some(r) if is_commit_id(r) => vec![r.clone()],
            Some(r) => vec![
                format!("+refs/heads/{r}:refs/remotes/origin/{r}"),
                format!("+refs/tags/{r}:refs/tags/{r}"),
            ],
            None => vec!["+HEAD:refs/remotes/origin/HEAD".to_owned()],
        };
        let remote = repo
            .remote_at(self.spec.url.as_str())
            .map_err(|e| failed(&e))?
            .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
            .map_err(|e| failed(&e))?;
        let mut connection = remote.connect(Direction::Fetch).map_err(|e| failed(&e))?;
        if let Some(token) = &self.token {
            let password = token.expose().to_owned();
            connection.set_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(context) => {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: gix::sec::identity::Account {
                            username: "x-access-token".to_owned(),
                            password: password.clone(),
                            oauth_refresh_token: None,
                        },
                        next: context.into(),
                    }))
                }
                _ => Ok(None),
            });
        }
        let interrupt = AtomicBool::new(false);
        let outcome = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| failed(&e))?
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| match e {
                gix::remote::fetch::Error::NoMapping { .. } => self.no_such_ref(&url),
                e => failed(&e),
            })?;

        if let Some(r) = self.spec.reference.as_ref().filter(|r| is_commit_id(r)) {
            return Ok(Fetched { commit: r.clone() });
        }
        let mappings = &outcome.ref_map.mappings;
        let wanted: Vec<String> = match &self.spec.reference {
            Some(r) => vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")],
            None => vec!["HEAD".to_owned()],
        };
        for name in &wanted {
            let found = mappings
                .iter()
                .find(|m| m.remote.as_name().is_some_and(|n| n == name.as_bytes()));
            if let Some(m) = found {
                let id = m.remote.peeled_id().ok_or_else(|| GitError::NoSuchRef {
                    url: url.clone(),
                    reference: name.clone(),
                    hint: ": it has no commit yet".to_owned(),
                })?;
                let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
                *tracked = Some(match m.remote.as_target() {
                    Some(target) => target.to_str_lossy().into_owned(),
                    None => name.clone(),
                });
                return Ok(Fetched {
                    commit: id.to_hex().to_string(),
                });
            }
        }
        Err(self.no_such_ref(&url))
    }

    fn no_such_ref(&self, url: &str) -> GitError {
        GitError::NoSuchRef {
            url: url.to_owned(),
            reference: self.spec.reference.clone().unwrap_or_else(|| "HEAD".into()),
            hint: "; check the `#ref` part of --source".to_owned(),
        }
    }

    /// Reads the manifests of `commit` from the clone (blocking).
    pub fn read(&self, commit: &str) -> Result<Revision, GitError> {
        let failed = |e: &dyn std::fmt::Display| GitError::Read {
            commit: commit.to_owned(),
            message: e.to_string(),
        };
        let repo = self.open()?;
        let records = folder_records(&repo, commit, &self.spec.subdir)
            .map_err(|e| failed(&e))?
            .ok_or_else(|| GitError::Read {
                commit: commit.to_owned(),
                message: format!(
                    "the commit has no folder `{}`; check the `:subdir` part of --source",
                    self.spec.subdir
                ),
            })?;

        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Diagnostic {
                file: path.to_owned(),
                line: 0,
                column: 0,
                resource: None,
                message,
            })
        };
        for entry in records {
            let path = entry.filepath.to_str_lossy().into_owned();
            let manifest = path.ends_with(".yaml") || path.ends_with(".yml");
            if !manifest || path.split('/').any(|part| part.starts_with('.')) {
                continue;
            }
            if entry.mode.is_link() {
                problem(
                    &path,
                    "is a symlink; berth does not follow symlinks in a Git source: commit the file itself"
                        .to_owned(),
                );
                continue;
            }
            if !entry.mode.is_blob() {
                continue;
            }
            // The size from the object's header: a blob over the limit is never
            // inflated into memory.
            let header = repo.find_header(entry.oid).map_err(|e| failed(&e))?;
            if header.size() > crate::manifest::MAX_FILE_BYTES {
                problem(
                    &path,
                    format!(
                        "file is {} bytes, over the limit of {} bytes (1 MiB); \
                         split it into several files",
                        header.size(),
                        crate::manifest::MAX_FILE_BYTES
                    ),
                );
                continue;
            }
            let blob = repo.find_object(entry.oid).map_err(|e| failed(&e))?;
            match String::from_utf8(blob.detach().data) {
                Ok(text) => files.push(SourceFile { path, text }),
                Err(_) => problem(&path, "is not UTF-8 text; save it as UTF-8".to_owned()),
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Revision {
            id: super::RevisionId::commit(commit),
            files,
            problems,
            tree: crate::manifest::SourceTree::Commit {
                clone: self.clone.clone(),
                commit: commit.to_owned(),
                subdir: self.spec.subdir.clone(),
            },
        })
    }
}

/// Every entry under `folder` (`""`: the root) of `commit`'s tree, recursively, or
/// `None` when the commit has no such folder.
pub(crate) fn folder_records(
    repo: &gix::Repository,
    commit: &str,
    folder: &str,
) -> Result<Option<Vec<gix::traverse::tree::recorder::Entry>>, String> {
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| e.to_string())?;
    let mut tree = repo
        .find_object(id)
        .map_err(|e| e.to_string())?
        .peel_to_commit()
        .map_err(|e| e.to_string())?
        .tree()
        .map_err(|e| e.to_string())?;
    if !folder.is_empty() {
        let entry = tree
            .lookup_entry_by_path(folder)
            .map_err(|e| e.to_string())?
            .filter(|e| e.mode().is_tree());
        let Some(entry) = entry else {
            return Ok(None);
        };
        tree = entry
            .object()
            .map_err(|e| e.to_string())?
            .try_into_tree()
            .map_err(|e| e.to_string())?;
    }
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| e.to_string())?;
    Ok(Some(recorder.records))
}

fn is_commit_id(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Transport errors may quote the URL or the credentials: keep neither.
fn redact_message(message: &str, token: Option<&Secret>) -> String {
    match token {
        Some(t) => crate::state::secrets::redact_all(message, std::slice::from_ref(t)),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_ref_and_folder() {
        let s = GitSpec::parse("https://git.example.com/ops/server.git#main:hosts/web").unwrap();
        assert_eq!(s.url, "https://git.example.com/ops/server.git");
        assert_eq!(s.reference.as_deref(), Some("main"));
        assert_eq!(s.subdir, "hosts/web");
        let s = GitSpec::parse("file:///srv/state.git").unwrap();
        assert_eq!((s.reference, s.subdir.as_str()), (None, ""));
        let s = GitSpec::parse("/srv/state.git#:deploy/").unwrap();
        assert_eq!((s.reference, s.subdir.as_str()), (None, "deploy"));
        assert_eq!(
            GitSpec::parse("/srv/state.git#:deploy").unwrap().display(),
            "/srv/state.git#:deploy"
        );
    }

    #[test]
    fn refuses_hostile_refs_and_folders() {
        for bad in [
            "file:///r#--upload-pack=sh",
            "file:///r#a..b",
            "file:///r#ma in",
            "file:///r#main:../etc",
            "#main",
        ] {
            let e = GitSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--source "), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_never_shown() {
        let s = GitSpec::parse("https://bot:hunter2@git.example.com/ops/s.git#main").unwrap();
        assert_eq!(s.display(), "https://git.example.com/ops/s.git#main");
        let e = GitSpec::parse("https://bot:hunter2@x/y#a b")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tells_git_from_directories() {
        assert!(GitSpec::is_git("https://x/y.git"));
        assert!(GitSpec::is_git("./state#main"));
        assert!(!GitSpec::is_git("examples/wordpress"));
    }
}
