//! Files → documents: the directory walk with its limits, and the parse of each file.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::Manifests;
use super::diagnostic::{Diagnostic, Diagnostics};
use super::policy::Policy;
use super::validate;
use super::yaml;

/// The largest manifest file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The most documents one revision may hold.
pub const MAX_DOCUMENTS: usize = 10_000;

/// A manifest file's text and its path relative to the source root (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the source root.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// Loads and validates every manifest under `root` (or the single file `root`), with
/// no host policy: for tools and tests that do not act on a host.
pub fn load_dir(root: &Path) -> Result<Manifests, Diagnostics> {
    load_dir_checked(root, None)
}

/// Loads and validates every manifest under `root`, holding them to the host's `policy`.
pub fn load_dir_with_policy(root: &Path, policy: &Policy) -> Result<Manifests, Diagnostics> {
    load_dir_checked(root, Some(policy))
}

fn load_dir_checked(root: &Path, policy: Option<&Policy>) -> Result<Manifests, Diagnostics> {
    let (files, mut problems) = read_source_dir(root);
    match load_files_checked(&files, policy) {
        Ok(mut manifests) if problems.is_empty() => {
            // A single file's builds read the folder it is in.
            let folder = match root.is_dir() {
                true => root.to_path_buf(),
                false => root.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            manifests.tree = Some(super::SourceTree::Dir(folder));
            Ok(manifests)
        }
        Ok(_) => Err(Diagnostics::new(problems)),
        Err(more) => {
            problems.extend(more.iter().cloned());
            Err(Diagnostics::new(problems))
        }
    }
}

/// Parses and validates a revision's files, with no host policy. Every problem of every
/// file is returned.
pub fn load_files(files: &[SourceFile]) -> Result<Manifests, Diagnostics> {
    load_files_checked(files, None)
}

/// Parses and validates a revision's files, holding them to the host's `policy`.
pub fn load_files_with_policy(
    files: &[SourceFile],
    policy: &Policy,
) -> Result<Manifests, Diagnostics> {
    load_files_checked(files, Some(policy))
}

fn load_files_checked(
    files: &[SourceFile],
    policy: Option<&Policy>,
) -> Result<Manifests, Diagnostics> {
    let mut problems = Vec::new();
    let mut documents = Vec::new();
    for file in files {
        let (nodes, error) = yaml::parse_documents(&file.text);
        if let Some(e) = error {
            problems.push(Diagnostic {
                file: file.path.clone(),
                line: e.mark.line,
                column: e.mark.col,
                resource: None,
                message: e.message,
            });
        }
        for node in nodes {
            if documents.len() == MAX_DOCUMENTS {
                problems.push(Diagnostic {
                    file: file.path.clone(),
                    line: node.mark.line,
                    column: node.mark.col,
                    resource: None,
                    message: format!(
                        "more than {MAX_DOCUMENTS} documents in this revision; \
                         berth reads at most {MAX_DOCUMENTS}"
                    ),
                });
                return Err(Diagnostics::new(problems));
            }
            documents.push((file.path.as_str(), node));
        }
    }
    let result = validate::validate(documents, policy).map(|mut m| {
        m.files = files.len();
        m.digest = digest(files);
        m
    });
    match result {
        Ok(manifests) if problems.is_empty() => Ok(manifests),
        Ok(_) => Err(Diagnostics::new(problems)),
        Err(more) => {
            problems.extend(more);
            Err(Diagnostics::new(problems))
        }
    }
}

/// A content hash of the files: the same manifests give the same id, whatever the
/// directory or the files' times.
pub fn digest(files: &[SourceFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update((f.path.len() as u64).to_le_bytes());
        hasher.update(f.path.as_bytes());
        hasher.update((f.text.len() as u64).to_le_bytes());
        hasher.update(f.text.as_bytes());
    }
    hex::encode(&hasher.finalize()[..6])
}

/// Reads every `*.yaml` and `*.yml` file under `root`, sorted, skipping hidden entries.
///
/// Returns the files that could be read and a problem for each that could not: too
/// large, not UTF-8, or a symlink leaving the root. `root` may also be a single file.
pub fn read_source_dir(root: &Path) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut walk = Walk {
        root: root.to_path_buf(),
        canonical_root: fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        files: Vec::new(),
        problems: Vec::new(),
    };
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => walk.dir(root, ""),
        // A file, or something else that `read_file` refuses by name.
        Ok(_) => {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            walk.canonical_root = walk
                .canonical_root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            walk.read_file(root, name);
        }
        Err(e) => walk.problem(
            root.display().to_string(),
            format!("cannot read the manifests: {e}; check the path"),
        ),
    }
    (walk.files, walk.problems)
}

struct Walk {
    root: PathBuf,
    canonical_root: PathBuf,
    files: Vec<SourceFile>,
    problems: Vec<Diagnostic>,
}

impl Walk {
    fn problem(&mut self, file: String, message: String) {
        self.problems.push(Diagnostic {
            file,
            line: 1,
            column: 1,
            resource: None,
            message,
        });
    }

    fn dir(&mut self, dir: &Path, prefix: &str) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                let shown = if prefix.is_empty() {
                    self.root.display().to_string()
                } else {
                    prefix.to_owned()
                };
                return self.problem(shown, format!("cannot read the directory: {e}"));
            }
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                self.dir(&path, &rel);
            } else if is_manifest(&name) {
                if kind.is_symlink() && !self.symlink_ok(&path, &rel) {
                    continue;
                }
                self.read_file(&path, rel);
            } else if kind.is_symlink() && path.is_dir() {
                self.problem(
                    rel,
                    "symlinked directories are not followed; move the manifests into the \
                     source root"
                        .to_owned(),
                );
            }
        }
    }

    /// Whether a symlinked manifest stays inside the root; reports it when not.
    fn symlink_ok(&mut self, path: &Path, rel: &str) -> bool {
        match fs::canonicalize(path) {
            Ok(target) if target.starts_with(&self.canonical_root) => true,
            Ok(target) => {
                self.problem(
                    rel.to_owned(),
                    format!(
                        "symlink points outside the source root (to {}); copy the file \
                         into the repository instead",
                        target.display()
                    ),
                );
                false
            }
            Err(e) => {
                self.problem(rel.to_owned(), format!("broken symlink: {e}"));
                false
            }
        }
    }

    /// Reads one manifest. Only regular files are opened: a FIFO, socket or device named
    /// `*.yaml` would block the read (or never end), so it is refused from its metadata.
    fn read_file(&mut self, path: &Path, rel: String) {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => return self.problem(rel, format!("cannot read the file: {e}")),
        };
        if !meta.file_type().is_file() {
            return self.problem(rel, not_a_regular_file(meta.file_type()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return self.problem(rel, too_large(meta.len()));
        }
        // Opened without blocking and checked again, in case the path was swapped for a
        // FIFO since the metadata was read.
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path);
        let mut file = match opened {
            Ok(file) => file,
            Err(e) => return self.problem(rel, format!("cannot read the file: {e}")),
        };
        match file.metadata() {
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(meta) => return self.problem(rel, not_a_regular_file(meta.file_type())),
            Err(e) => return self.problem(rel, format!("cannot read the file: {e}")),
        }
        let mut bytes = Vec::new();
        if let Err(e) = (&mut file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
            return self.problem(rel, format!("cannot read the file: {e}"));
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return self.problem(rel, too_large(bytes.len() as u64));
        }
        match String::from_utf8(bytes) {
            Ok(text) => self.files.push(SourceFile { path: rel, text }),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                self.problem(
                    rel,
                    format!("file is not valid UTF-8 (at byte {at}); save it as UTF-8"),
                );
            }
        }
    }
}

fn too_large(size: u64) -> String {
    format!(
        "file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB); \
         split it into several files"
    )
}

/// Why a path named like a manifest is not read.
fn not_a_regular_file(kind: fs::FileType) -> String {
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    };
    format!(
        "is {what}, not a regular file; berth reads only regular files: replace it with the \
         manifest itself or rename it so its name does not end in .yaml or .yml"
    )
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}
