//! Build contexts: each App with `build` becomes the image berth builds for it. Its
//! context is listed from the revision (honouring `.dockerignore`), and the image is
//! tagged `berth/<app>:<hash>`, the hash covering every file's path, kind and digest and
//! the build options: the same context and options always give the same tag, so a pass
//! whose tag the daemon already holds builds nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::dockerignore::DockerIgnore;
use crate::manifest::model::Build;
use crate::manifest::{Manifests, Origin, SourceTree, syntax};
use crate::source::context::{self, ContextEntry, ContextError, EntryKind};

/// One image berth builds for an app.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredBuild {
    /// The app.
    pub app: String,
    /// The image's tag: `berth/<app>:<12 hex digits of the hash>`.
    pub tag: String,
    /// The full hash of the context and options.
    pub hash: String,
    /// The options, as plans show them.
    pub options: BuildOptions,
    /// How long the build may take.
    pub timeout: std::time::Duration,
    /// Where the context is read from.
    pub tree: SourceTree,
    /// The files sent, sorted (`.dockerignore` applied).
    pub entries: Vec<ContextEntry>,
    /// The secrets it mounts, by id, read from the store for this pass.
    pub secrets: BTreeMap<String, crate::state::secrets::Secret>,
}

/// The options of a build, as a plan's diff shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildOptions {
    /// The context folder, relative to the revision's root (`""` for the root).
    pub context: String,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    /// The stage built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Build arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The secrets it mounts: id → secret name (never a value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_args: BTreeMap<String, String>,
}

impl DesiredBuild {
    /// Each file's path and digest: what the next build is compared with.
    pub fn files(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|e| (e.path.clone(), e.digest.clone()))
            .collect()
    }

    /// The context as people read it: `apps/web`, or `.` for the root.
    pub fn context_shown(&self) -> &str {
        match self.options.context.as_str() {
            "" => ".",
            c => c,
        }
    }
}

/// Why an app's build could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("App/{app} ({}:{}): {message}", origin.file, origin.line)]
pub struct BuildError {
    /// The app.
    pub app: String,
    /// Where it is declared.
    pub origin: Origin,
    /// What is wrong.
    pub message: String,
}

/// The build of every app that declares one. An app whose context cannot be read is
/// returned as an error, with where it is declared.
pub fn expand(manifests: &Manifests) -> (BTreeMap<String, DesiredBuild>, Vec<BuildError>) {
    let mut builds = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, app) in &manifests.apps {
        let Some(build) = &app.spec.build else {
            continue;
        };
        let error = |message: String| BuildError {
            app: name.clone(),
            origin: app.origin.clone(),
            message,
        };
        let Some(tree) = &manifests.tree else {
            errors.push(error(
                "the manifests were not read from a folder or a commit: there is no build \
                 context to read"
                    .to_owned(),
            ));
            continue;
        };
        match desired_build(name, build, tree) {
            Ok(b) => {
                builds.insert(name.clone(), b);
            }
            Err(e) => errors.push(error(e.to_string())),
        }
    }
    (builds, errors)
}

fn desired_build(
    app: &str,
    build: &Build,
    tree: &SourceTree,
) -> Result<DesiredBuild, ContextError> {
    let folder = syntax::normalize_relative(&build.context);
    let dockerfile =
        syntax::normalize_relative(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let mut entries = context::list(tree, &folder)?;
    if let Some(ignore) = entries.iter().find(|e| e.path == ".dockerignore") {
        let text = context::read(tree, &folder, ignore)?;
        let ignore = DockerIgnore::parse(&String::from_utf8_lossy(&text));
        entries.retain(|e| {
            e.path == dockerfile || e.path == ".dockerignore" || !ignore.excludes(&e.path)
        });
    }
    let found = entries
        .iter()
        .any(|e| e.path == dockerfile && matches!(e.kind, EntryKind::File { .. }));
    if !found {
        return Err(ContextError::Read {
            folder: folder.clone(),
            path: dockerfile.clone(),
            message: "no such file; add it, or name another with `dockerfile`".to_owned(),
        });
    }
    context::check_limits(&folder, &entries)?;
    let options = BuildOptions {
        context: folder,
        dockerfile,
        target: build.target.clone(),
        args: build
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        secret_args: build.secret_args.clone(),
    };
    let hash = hash(&options, &entries);
    Ok(DesiredBuild {
        app: app.to_owned(),
        tag: format!("berth/{app}:{}", &hash[..12]),
        hash,
        options,
        timeout: build.timeout.get(),
        tree: tree.clone(),
        entries,
        secrets: BTreeMap::new(),
    })
}

/// The hash of a build: a version line, every entry, then the options as JSON.
fn hash(options: &BuildOptions, entries: &[ContextEntry]) -> String {
    let mut h = Sha256::new();
    h.update(b"berth-build-v1\n");
    for e in entries {
        let kind = match e.kind {
            EntryKind::File { executable: true } => "x",
            EntryKind::File { executable: false } => "f",
            EntryKind::Symlink => "l",
        };
        h.update(e.path.as_bytes());
        h.update(format!("\0{kind}\0{}\n", e.digest).as_bytes());
    }
    h.update(
        serde_json::to_string(options)
            .unwrap_or_default()
            .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// How the files of a build differ from those of the last one: the number of paths
/// added, removed or changed.
pub fn files_changed(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> usize {
    let changed = now
        .iter()
        .filter(|(p, d)| before.get(*p) != Some(*d))
        .count();
    let removed = before.keys().filter(|p| !now.contains_key(*p)).count();
    changed + removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests(dir: &std::path::Path, build: &str) -> Manifests {
        std::fs::write(
            dir.join("app.yaml"),
            format!(
                "apiVersion: berth/v1\nkind: App\nmetadata: {{name: web}}\nspec:\n  build: {build}\n"
            ),
        )
        .unwrap();
        crate::manifest::load_dir(dir).expect("valid")
    }

    #[test]
    fn the_tag_follows_the_context_and_options_and_ignores_what_dockerignore_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("apps/web");
        std::fs::create_dir_all(web.join("target")).unwrap();
        std::fs::write(web.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        std::fs::write(web.join("index.html"), "one").unwrap();
        std::fs::write(web.join("target/big.bin"), "x").unwrap();
        std::fs::write(web.join(".dockerignore"), "target\nDockerfile\n").unwrap();
        let m = manifests(dir.path(), "{context: ./apps/web/}");
        let (builds, errors) = expand(&m);
        assert!(errors.is_empty(), "{errors:?}");
        let b = &builds["web"];
        assert!(
            b.tag.starts_with("berth/web:") && b.tag.len() == 22,
            "{}",
            b.tag
        );
        assert_eq!(b.context_shown(), "apps/web");
        let paths: Vec<&str> = b.entries.iter().map(|e| e.path.as_str()).collect();
        // The Dockerfile and .dockerignore are always sent, as the Docker CLI does.
        assert_eq!(paths, [".dockerignore", "Dockerfile", "index.html"]);
        let first = b.tag.clone();

        // An ignored file changes nothing; a sent one, or an option, changes the tag.
        std::fs::write(web.join("target/big.bin"), "y").unwrap();
        assert_eq!(expand(&m).0["web"].tag, first);
        std::fs::write(web.join("index.html"), "two").unwrap();
        let second = expand(&m).0["web"].clone();
        assert_ne!(second.tag, first);
        assert_eq!(files_changed(&b.files(), &second.files()), 1);
        let m = manifests(dir.path(), "{context: apps/web, args: {MODE: prod}}");
        assert_ne!(expand(&m).0["web"].tag, second.tag);

        // A context that is not there, or has no Dockerfile, names the app and its file.
        let m = manifests(dir.path(), "{context: apps/api}");
        let (_, errors) = expand(&m);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "App/web (app.yaml:1): build context `apps/api` is not a folder of {}",
                dir.path().display()
            )
        );
        let m = manifests(
            dir.path(),
            "{context: apps/web, dockerfile: web.Dockerfile}",
        );
        assert_eq!(
            expand(&m).1[0].to_string(),
            "App/web (app.yaml:1): failed to read web.Dockerfile of build context `apps/web`: \
             no such file; add it, or name another with `dockerfile`"
        );
    }
}
