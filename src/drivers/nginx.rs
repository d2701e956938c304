//! The nginx driver: one `berth-<domain>.conf` per domain in the config directory.
//!
//! A change is staged in a copy of the config directory, checked with `nginx -t`
//! against a copy of the main config that includes the staged directory, and only
//! then renamed into place; nginx is reloaded once at the end. Each domain is checked
//! on its own, so one rejected domain leaves the others converging, and a rejected
//! file never reaches the live directory.
//!
//! Every pass stages in a folder of its own, `<configDir>/.berth-staging-<instance>-
//! <pid>-<n>` (beside the live files, so the copy sees them all, and outside nginx's
//! `*.conf` pattern), with its test config `.berth-test-<same>.conf` beside the main
//! config; both are removed when the pass's changes are done. The pass holds a
//! `flock` on its folder while it lives: a folder nobody holds is a leftover of a
//! killed pass, removed by the next one, and a live pass's folder is never touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{FlockOperation, flock};

use crate::desired::routes::{self, FileState, Route, RouteTls, Upstream};
use crate::drivers::batch::{Batch, Change, ProxyError};
use crate::state::atomic;

/// The comment marker of nginx files.
const COMMENT: &str = "#";

/// The name of every staging folder starts with this.
const STAGING: &str = ".berth-staging";

/// How old an unlocked staging folder or temporary file must be to be a leftover:
/// covers the moment between a pass creating its folder and locking it.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Where nginx is and how it is driven.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The berth instance whose files these are (named in each file's header).
    pub instance: String,
    /// The directory nginx includes `*.conf` from.
    pub config_dir: PathBuf,
    /// The main configuration file (the one that includes `config_dir`).
    pub main_config: PathBuf,
    /// The check command; `-c <file>` is appended.
    pub test: Vec<String>,
    /// The reload command.
    pub reload: Vec<String>,
    /// Ports to listen on.
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
}

impl Nginx {
    /// The file of a domain.
    pub fn file_name(domain: &str) -> String {
        format!("berth-{domain}.conf")
    }

    /// Renders one route as an nginx config file (header line included).
    pub fn render(&self, route: &Route) -> Result<String, ProxyError> {
        self.render_site(&[route])
    }

    /// Renders the routes of one site (Domains sharing hosts, see [`routes::sites`]) as
    /// one file, named after the first: a server block per set of hosts the same
    /// Domains serve, a location per Domain.
    pub fn render_site(&self, site: &[&Route]) -> Result<String, ProxyError> {
        for route in site {
            route.check().map_err(ProxyError::Render)?;
        }
        let Some(first) = site.first() else {
            return Err(ProxyError::Render("a site without a Domain".into()));
        };
        let body = site_body(site, self.http_port, self.https_port)?;
        Ok(routes::with_header(
            COMMENT,
            &first.domain,
            &self.instance,
            &body,
        ))
    }

    /// Applies a batch of file changes (keyed by the Domain each file is named after):
    /// each change is checked with nginx's own test against the files known to be good,
    /// the accepted ones go live, and nginx is reloaded once and asked whether it took
    /// the new configuration. `reload` forces the reload when no file changes (a renewed
    /// certificate behind an unchanged file).
    ///
    /// One of berth's live files that nginx refuses (its certificate was removed, say)
    /// is taken out of the live configuration so that the others can load; it is
    /// reported in [`Batch::broken`]. A reload that does not take puts the live files
    /// back as they were, so that the next pass plans the same changes again.
    pub fn apply(&self, changes: &BTreeMap<String, Change>, reload: bool) -> Batch {
        let mut batch = Batch::default();
        if changes.is_empty() && !reload {
            return batch;
        }
        remove_stale_staging(&self.config_dir, &self.main_config);
        atomic::remove_stale_temporaries(&self.config_dir, "berth-", STALE_AFTER);
        let fail_all = |batch: &mut Batch, e: ProxyError| {
            for domain in changes.keys() {
                batch.files.insert(domain.clone(), Err(e.clone()));
            }
        };
        let live = match read_live(&self.config_dir) {
            Ok(live) => live,
            Err(e) => {
                let e = format!("failed to read {}: {e}", self.config_dir.display());
                fail_all(&mut batch, ProxyError::Change(e));
                return batch;
            }
        };
        let mut target = live.clone();
        for (domain, change) in changes {
            apply_change(&mut target, domain, change);
        }
        if target != live {
            let staging = match Staging::create(&self.config_dir, &self.main_config, &self.instance)
            {
                Ok(staging) => staging,
                Err(e) => {
                    fail_all(&mut batch, ProxyError::Stage(e));
                    return batch;
                }
            };
            let tester = Tester {
                nginx: self,
                staging: &staging,
            };
            // Usually every change is right: one check for the whole batch.
            if tester.check(&target).is_err() {
                target = self.isolate(&tester, &live, changes, &mut batch);
            }
        }
        for domain in changes.keys() {
            batch.files.entry(domain.clone()).or_insert(Ok(()));
        }
        let written = match write_live(&self.config_dir, &live, &target) {
            Ok(written) => written,
            Err(e) => {
                // Whatever was written goes back; nothing is reloaded.
                let _ = write_live(&self.config_dir, &target, &live);
                fail_all(&mut batch, ProxyError::Change(e));
                return batch;
            }
        };
        if !written && !reload {
            return batch;
        }
        match self.reload_verified() {
            Ok(warning) => batch.warnings.extend(warning),
            Err(e) => {
                // nginx runs the configuration it had: so do the files again.
                if let Err(back) = write_live(&self.config_dir, &target, &live) {
                    batch.warnings.push(format!(
                        "the files of the refused configuration could not all be put back: {back}"
                    ));
                }
                batch.broken.clear();
                for result in batch.files.values_mut() {
                    if result.is_ok() {
                        *result = Err(e.clone());
                    }
                }
                batch.reload_failed = Some(e);
            }
        }
        batch
    }

    /// The batch failed nginx's test as a whole: finds berth's broken live files (taken
    /// out), then checks each change on its own against the files known to be good.
    /// Returns the files that go live.
    fn isolate(
        &self,
        tester: &Tester<'_>,
        live: &BTreeMap<String, String>,
        changes: &BTreeMap<String, Change>,
        batch: &mut Batch,
    ) -> BTreeMap<String, String> {
        let mut good = live.clone();
        let mut refusal = tester.check(&good).err();
        // Take out berth's own live files that nginx refuses, one at a time.
        while let Some(message) = refusal.take() {
            let Some(culprit) = self.culprit(tester, &good, &message) else {
                // A file berth does not own breaks the live configuration: nothing
                // can go live until it is mended.
                let e = ProxyError::Change(format!(
                    "nginx refuses the live configuration, and not because of a file of \
                     berth's: {message}"
                ));
                for domain in changes.keys() {
                    batch.files.insert(domain.clone(), Err(e.clone()));
                }
                return live.clone();
            };
            good.remove(&culprit);
            let domain = domain_of(&culprit).unwrap_or_default().to_owned();
            batch
                .broken
                .insert(domain, format!("nginx rejected the config: {message}"));
            refusal = tester.check(&good).err();
        }
        for (domain, change) in changes {
            let mut candidate = good.clone();
            apply_change(&mut candidate, domain, change);
            if candidate == good {
                continue;
            }
            match tester.check(&candidate) {
                Ok(()) => {
                    good = candidate;
                    batch.broken.remove(domain);
                }
                Err(e) => {
                    batch.files.insert(
                        domain.clone(),
                        Err(ProxyError::Change(format!(
                            "nginx rejected the config: {e}"
                        ))),
                    );
                }
            }
        }
        good
    }

    /// Which of berth's files in `files` makes nginx refuse them with `message`: the file
    /// nginx names, the one that names the file nginx could not load, or the one whose
    /// removal makes the rest pass.
    fn culprit(
        &self,
        tester: &Tester<'_>,
        files: &BTreeMap<String, String>,
        message: &str,
    ) -> Option<String> {
        let ours = |name: &str| {
            domain_of(name).is_some_and(|domain| {
                matches!(
                    routes::file_state(COMMENT, domain, &self.instance, &files[name]),
                    FileState::Intact | FileState::Edited | FileState::Legacy
                )
            })
        };
        let live_dir = self.config_dir.to_string_lossy().into_owned();
        // `… in /etc/nginx/conf.d/berth-blog.conf:12`
        if let Some(name) = message
            .rsplit_once(" in ")
            .and_then(|(_, at)| at.rsplit_once(':'))
            .and_then(|(path, _)| path.strip_prefix(&live_dir))
            .map(|name| name.trim_start_matches('/'))
        {
            return (files.contains_key(name) && ours(name)).then(|| name.to_owned());
        }
        // `cannot load certificate "/var/lib/berth/certs/blog/certificate.pem": …`
        let quoted: Vec<&str> = message.split('"').skip(1).step_by(2).collect();
        if let Some(name) = files.iter().find_map(|(name, text)| {
            (ours(name) && quoted.iter().any(|q| q.len() > 1 && text.contains(q)))
                .then(|| name.clone())
        }) {
            return Some(name);
        }
        files
            .keys()
            .filter(|name| ours(name))
            .find(|name| {
                let mut without = files.clone();
                without.remove(*name);
                tester.check(&without).is_ok()
            })
            .cloned()
    }

    /// Runs the reload command and checks that nginx took the new configuration: its
    /// master started new worker processes. On success, waits (up to 10 s) for the old
    /// workers to finish the requests they were serving. `Ok(Some(_))` says why the
    /// reload could not be verified.
    fn reload_verified(&self) -> Result<Option<String>, ProxyError> {
        let master = self.master();
        let before = master.map(children).unwrap_or_default();
        let log = self.error_log();
        let mark = log
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        run(&self.reload).map_err(ProxyError::Reload)?;
        let Some(master) = master else {
            return Ok(Some(format!(
                "nginx's reload is not verified: no nginx master process found through {}",
                self.pid_file().display()
            )));
        };
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        loop {
            let now = children(master);
            if now.iter().any(|c| !before.contains(c)) {
                // The new workers serve; the old ones finish their requests and exit.
                let drained = Instant::now() + Duration::from_secs(10);
                while before.iter().any(|c| alive(*c)) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(None);
            }
            if !alive(master) {
                return Err(ProxyError::Reload(format!(
                    "the nginx master (pid {master}) exited during the reload{}",
                    log_lines(log.as_deref(), mark)
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                )));
            }
            if let Some(lines) = log_lines(log.as_deref(), mark) {
                return Err(ProxyError::Reload(lines));
            }
            if Instant::now() > deadline {
                return Err(ProxyError::Reload(format!(
                    "nginx did not start new worker processes within {}s: it did not take \
                     the new configuration{}",
                    RELOAD_TIMEOUT.as_secs(),
                    match &log {
                        Some(p) => format!(" (nothing in {})", p.display()),
                        None => " (its error log is not a file berth can read)".into(),
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The master's pid file: the main config's `pid`, else nginx's built-in path.
    fn pid_file(&self) -> PathBuf {
        let main = std::fs::read_to_string(&self.main_config).unwrap_or_default();
        let path = top_level_directive(&main, "pid").unwrap_or_else(|| {
            built_in(&self.test, "--pid-path=").unwrap_or("/run/nginx.pid".into())
        });
        self.resolve(&path)
    }

    /// The running master, if the pid file names an nginx master process.
    fn master(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("nginx: master process")
            .then_some(pid)
    }

    /// The error log nginx writes reload failures to, when it is a file.
    fn error_log(&self) -> Option<PathBuf> {
        let main = std::fs::read_to_string(&self.main_config).unwrap_or_default();
        let path = top_level_directive(&main, "error_log")
            .or_else(|| built_in(&self.test, "--error-log-path="))?;
        (path != "stderr" && !path.starts_with("syslog:")).then(|| self.resolve(&path))
    }

    /// A path of the main config, relative ones from nginx's prefix (`-p` in the reload
    /// command, else the built-in prefix).
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        let prefix = self
            .reload
            .iter()
            .position(|w| w == "-p")
            .and_then(|i| self.reload.get(i + 1).cloned())
            .or_else(|| built_in(&self.test, "--prefix="))
            .unwrap_or_else(|| "/usr/share/nginx".into());
        Path::new(&prefix).join(path)
    }
}

/// How long nginx may take to start new workers after a reload.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks sets of files with nginx's test, in the pass's staging folder.
struct Tester<'a> {
    nginx: &'a Nginx,
    staging: &'a Staging,
}

impl Tester<'_> {
    /// Runs the check command on a main config that includes exactly `files`.
    fn check(&self, files: &BTreeMap<String, String>) -> Result<(), String> {
        let n = self.nginx;
        let staging = self.staging;
        staging
            .fill(files)
            .map_err(|e| format!("failed to stage in {}: {e}", staging.dir.display()))?;
        let main = std::fs::read_to_string(&n.main_config)
            .map_err(|e| format!("failed to read {}: {e}", n.main_config.display()))?;
        let live_dir = n.config_dir.to_string_lossy().into_owned();
        let staged_dir = staging.dir.to_string_lossy().into_owned();
        let test_main = main.replace(&live_dir, &staged_dir);
        if test_main == main {
            return Err(format!(
                "{} does not include {live_dir}: set proxy.mainConfig to the file that does",
                n.main_config.display()
            ));
        }
        std::fs::write(&staging.test_main, test_main)
            .map_err(|e| format!("failed to write {}: {e}", staging.test_main.display()))?;
        let mut cmd = n.test.clone();
        cmd.push("-c".into());
        cmd.push(staging.test_main.to_string_lossy().into_owned());
        // Point at the live names, not the staged copies, in nginx's message.
        run(&cmd).map_err(|e| e.replace(&staged_dir, &live_dir))
    }
}

/// The Domain a live file is named after (`berth-<domain>.conf`).
fn domain_of(file: &str) -> Option<&str> {
    file.strip_prefix("berth-")?.strip_suffix(".conf")
}

fn apply_change(files: &mut BTreeMap<String, String>, domain: &str, change: &Change) {
    let name = Nginx::file_name(domain);
    match change {
        Change::Write(content) => {
            files.insert(name, content.clone());
        }
        Change::Remove => {
            files.remove(&name);
        }
    }
}

/// The live `*.conf` files, by name.
fn read_live(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".conf") || !entry.file_type()?.is_file() {
            continue;
        }
        match std::fs::read_to_string(entry.path()) {
            Ok(text) => {
                out.insert(name, text);
            }
            // Removed since it was listed (another instance's prune).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Makes the live directory hold `to` where it holds `from`: files written (atomically)
/// or removed. Only berth's own file names (`berth-*.conf`) are ever touched; whether
/// anything changed.
fn write_live(
    dir: &Path,
    from: &BTreeMap<String, String>,
    to: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut changed = false;
    for (name, content) in to {
        if from.get(name) != Some(content) && domain_of(name).is_some() {
            let path = dir.join(name);
            atomic::write_atomic(&path, content.as_bytes())
                .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
            changed = true;
        }
    }
    for name in from.keys() {
        if !to.contains_key(name) && domain_of(name).is_some() {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("failed to remove {}: {e}", path.display()));
                }
                _ => changed = true,
            }
        }
    }
    Ok(changed)
}

/// The value of a top-level directive of an nginx main config (`pid`, `error_log`).
fn top_level_directive(config: &str, name: &str) -> Option<String> {
    let mut depth = 0usize;
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or("");
        for statement in line.split_inclusive([';', '{', '}']) {
            let words: Vec<&str> = statement
                .trim_end_matches([';', '{', '}'])
                .split_whitespace()
                .collect();
            if depth == 0 && statement.ends_with(';') && words.first() == Some(&name) {
                return words.get(1).map(|w| w.trim_matches(['"', '\'']).to_owned());
            }
            if statement.ends_with('{') {
                depth += 1;
            } else if statement.ends_with('}') {
                depth = depth.saturating_sub(1);
            }
        }
    }
    None
}

/// A value nginx was built with (`nginx -V`: `--pid-path=…`), asked of the program of
/// the test command when it is nginx itself.
fn built_in(test: &[String], option: &str) -> Option<String> {
    let program = test.first()?;
    if !Path::new(program)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("nginx"))
    {
        return None;
    }
    let out = std::process::Command::new(program)
        .arg("-V")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(option))
        .map(str::to_owned)
}

/// The `[emerg]`, `[alert]` and `[crit]` lines written to `log` past `mark`, joined.
fn log_lines(log: Option<&Path>, mark: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(log?).ok()?;
    file.seek(SeekFrom::Start(mark)).ok()?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
        .map(message_of)
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// The message of one of nginx's lines, without its time, level and pid:
/// `2026/12/04 21:31:30 [emerg] 2135#2135: cannot load …` and `nginx: [emerg] cannot
/// load …` both say `cannot load …`.
fn message_of(line: &str) -> &str {
    let Some((head, rest)) = line.split_once("] ") else {
        return line;
    };
    if !head.contains('[') {
        return line;
    }
    match rest.split_once(": ") {
        Some((pid, message))
            if pid.contains('#') && pid.chars().all(|c| c.is_ascii_digit() || c == '#') =>
        {
            message
        }
        _ => rest,
    }
}

/// The pids whose parent is `pid` (a master's workers and cache processes).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| parent(*child) == Some(pid))
        .collect()
}

/// `/proc/<pid>/stat`: "pid (comm) state ppid …"; comm may hold spaces.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` still runs (a zombie has stopped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// One pass's staging folder and test config, locked while they live and removed
/// when dropped.
#[derive(Debug)]
struct Staging {
    dir: PathBuf,
    test_main: PathBuf,
    /// The folder, open and `flock`ed: the sign that the pass is alive.
    _held: File,
}

impl Staging {
    fn create(config_dir: &Path, main_config: &Path, instance: &str) -> Result<Staging, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{instance}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = config_dir.join(format!("{STAGING}-{id}"));
        let held = std::fs::create_dir_all(config_dir)
            .and_then(|()| std::fs::create_dir(&dir))
            .and_then(|()| File::open(&dir))
            .and_then(|f| {
                flock(&f, FlockOperation::NonBlockingLockExclusive)?;
                Ok(f)
            })
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                format!("failed to create {}: {e}", dir.display())
            })?;
        Ok(Staging {
            dir,
            test_main: test_main_of(main_config, &id),
            _held: held,
        })
    }

    /// Makes the folder hold exactly `files`.
    fn fill(&self, files: &BTreeMap<String, String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        for (name, content) in files {
            std::fs::write(self.dir.join(name), content)?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The test config first: a folder may outlive it, never the other way round.
        let _ = std::fs::remove_file(&self.test_main);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test config of the staging folder `id`, beside the main config (nginx
/// resolves the main config's relative paths from its folder).
fn test_main_of(main_config: &Path, id: &str) -> PathBuf {
    main_config.with_file_name(format!(".berth-test-{id}.conf"))
}

/// Removes the staging folders (and test configs) of passes that died: folders no
/// live pass holds a lock on, older than [`STALE_AFTER`].
fn remove_stale_staging(config_dir: &Path, main_config: &Path) {
    let Ok(entries) = std::fs::read_dir(config_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STAGING) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        let Ok(folder) = File::open(entry.path()) else {
            continue;
        };
        if !old || flock(&folder, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        if let Some(id) = name.strip_prefix(&format!("{STAGING}-")) {
            let _ = std::fs::remove_file(test_main_of(main_config, id));
        }
        tracing::info!(
            "removing {}, left by a pass that died",
            entry.path().display()
        );
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// Runs a command; on failure returns what it printed.
fn run(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("failed to run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let text = text
            .lines()
            .filter(|l| !l.contains("test failed") && !l.trim().is_empty())
            .map(message_of)
            .collect::<Vec<_>>()
            .join("; ");
        Err(if text.is_empty() {
            format!("{program} exited with {}", out.status)
        } else {
            text
        })
    }
}

/// Reads `<prefix>*<suffix>` files of a directory whose first line is berth's header.
pub(crate) fn observe_dir(
    dir: &Path,
    comment: &str,
    instance: &str,
    prefix: &str,
    suffix: &str,
) -> std::io::Result<BTreeMap<String, (FileState, String)>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(domain) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let state = routes::file_state(comment, domain, instance, &text);
        out.insert(domain.to_owned(), (state, text));
    }
    Ok(out)
}

/// The server blocks of a site: the hosts that the same Domains serve share a block.
fn site_body(site: &[&Route], http: u16, https: u16) -> Result<String, ProxyError> {
    // Hosts in order of first appearance, grouped by the Domains that list them.
    let mut blocks: Vec<(Vec<usize>, Vec<&str>)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for route in site {
        for host in &route.hosts {
            if !seen.insert(host.as_str()) {
                continue;
            }
            let covering: Vec<usize> = (0..site.len())
                .filter(|&i| site[i].hosts.contains(host))
                .collect();
            match blocks.iter_mut().find(|(c, _)| *c == covering) {
                Some((_, hosts)) => hosts.push(host),
                None => blocks.push((covering, vec![host])),
            }
        }
    }
    let mut out = String::new();
    if site.len() > 1 {
        let names: Vec<&str> = site.iter().map(|r| r.domain.as_str()).collect();
        let _ = writeln!(
            out,
            "# Domains {} share hosts: one server block per set of hosts, a location per Domain.",
            names.join(", ")
        );
    }
    for (covering, hosts) in blocks {
        let routes: Vec<&Route> = covering.iter().map(|&i| site[i]).collect();
        server_blocks(&mut out, &routes, &hosts.join(" "), http, https);
    }
    Ok(out)
}

/// The plain-HTTP server of one set of hosts and, once it has a certificate, its HTTPS
/// server.
fn server_blocks(out: &mut String, routes: &[&Route], names: &str, http: u16, https: u16) {
    // The first Domain with a certificate serves the hosts with it: validation makes
    // Domains sharing a host agree on it (ACME ones each hold one covering the host).
    let tls = routes.iter().find_map(|r| match &r.tls {
        RouteTls::Files { certificate, key } => Some((certificate.as_str(), key.as_str())),
        RouteTls::Acme | RouteTls::Off => None,
    });
    let _ = writeln!(
        out,
        "server {{\n    listen {http};\n    server_name {names};"
    );
    if let Some(thumbprint) = routes.iter().find_map(|r| r.acme_challenge.as_deref()) {
        // HTTP-01: nginx answers every challenge of berth's account itself.
        let _ = writeln!(
            out,
            "    location ~ \"^/\\.well-known/acme-challenge/([-_A-Za-z0-9]+)$\" {{\n        \
             default_type text/plain;\n        return 200 \"$1.{thumbprint}\";\n    }}"
        );
    }
    let port = if https == 443 {
        String::new()
    } else {
        format!(":{https}")
    };
    let redirects = |r: &Route| tls.is_some() && r.redirect_https;
    if routes.iter().all(|r| redirects(r)) {
        let _ = writeln!(
            out,
            "    location / {{\n        return 301 https://$host{port}$request_uri;\n    }}"
        );
    } else {
        resolver(out, routes);
        for r in routes {
            if redirects(r) {
                let _ = writeln!(
                    out,
                    "    location {} {{\n        return 301 https://$host{port}$request_uri;\n    }}",
                    r.public_path()
                );
            } else {
                location(out, r);
            }
        }
        private_catch_all(out, routes);
    }
    out.push_str("}\n");
    if let Some((cert, key)) = tls {
        let _ = writeln!(
            out,
            "server {{\n    listen {https} ssl;\n    server_name {names};\n    ssl_certificate {cert};\n    ssl_certificate_key {key};"
        );
        resolver(out, routes);
        for r in routes {
            location(out, r);
        }
        private_catch_all(out, routes);
        out.push_str("}\n");
    }
}

/// Docker's DNS, re-resolved so that a recreated container is found again, when a
/// route reaches its app by container name.
fn resolver(out: &mut String, routes: &[&Route]) {
    if routes
        .iter()
        .any(|r| matches!(r.upstream, Upstream::Container { .. }))
    {
        out.push_str("    resolver 127.0.0.11 valid=10s ipv6=off;\n");
    }
}

/// Everything outside a private Domain's prefix is not found.
fn private_catch_all(out: &mut String, routes: &[&Route]) {
    if routes.iter().any(|r| r.private_token.is_some()) {
        out.push_str("    location / {\n        return 404;\n    }\n");
    }
}

fn location(out: &mut String, route: &Route) {
    let path = route.public_path();
    let _ = writeln!(out, "    location {path} {{");
    if let Some(token) = &route.private_token {
        let _ = writeln!(out, "        rewrite ^/p/{token}(/.*)$ $1 break;");
    }
    if matches!(route.upstream, Upstream::Container { .. }) {
        let _ = writeln!(
            out,
            "        set $berth_upstream http://{};",
            route.upstream.address()
        );
        out.push_str("        proxy_pass $berth_upstream;\n");
    } else {
        let _ = writeln!(
            out,
            "        proxy_pass http://{};",
            route.upstream.address()
        );
    }
    out.push_str(
        "        proxy_http_version 1.1;\n\
         \x20       proxy_set_header Host $host;\n\
         \x20       proxy_set_header X-Real-IP $remote_addr;\n\
         \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20       proxy_set_header Upgrade $http_upgrade;\n\
         \x20       proxy_set_header Connection $http_connection;\n",
    );
    if let Some(max) = route.max_body {
        let _ = writeln!(out, "        client_max_body_size {max};");
    }
    for (name, value) in &route.headers {
        let _ = writeln!(out, "        add_header {name} \"{value}\" always;");
    }
    out.push_str("    }\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::routes::tests::route;

    fn nginx() -> Nginx {
        Nginx {
            instance: "default".into(),
            config_dir: "/etc/nginx/conf.d".into(),
            main_config: "/etc/nginx/nginx.conf".into(),
            test: vec!["nginx".into(), "-t".into()],
            reload: vec!["nginx".into(), "-s".into(), "reload".into()],
            http_port: 80,
            https_port: 443,
        }
    }

    #[test]
    fn a_plain_route() {
        let text = nginx().render(&route()).unwrap();
        assert!(text.starts_with("# berth: Domain/blog sha256:"));
        assert!(
            text.contains(
                "    listen 80;\n    server_name blog.example.com www.blog.example.com;\n"
            )
        );
        assert!(text.contains("    location / {\n        proxy_pass http://127.0.0.1:8001;\n"));
        assert!(!text.contains("ssl"));
        assert_eq!(
            routes::file_state("#", "blog", "default", &text),
            FileState::Intact
        );
    }

    #[test]
    fn tls_redirect_private_and_container_upstream() {
        let mut r = route();
        r.tls = RouteTls::Files {
            certificate: "/etc/ssl/blog.pem".into(),
            key: "/etc/ssl/blog.key".into(),
        };
        r.redirect_https = true;
        r.private_token = Some("abc123".into());
        r.upstream = Upstream::Container {
            host: "blog".into(),
            port: 2368,
        };
        r.headers.insert("X-Frame-Options".into(), "DENY".into());
        let text = nginx().render(&r).unwrap();
        assert!(text.contains("        return 301 https://$host$request_uri;\n"));
        assert!(text.contains("    listen 443 ssl;\n"));
        assert!(text.contains("    ssl_certificate /etc/ssl/blog.pem;\n"));
        assert!(
            text.contains(
                "    location /p/abc123/ {\n        rewrite ^/p/abc123(/.*)$ $1 break;\n"
            )
        );
        assert!(text.contains("        set $berth_upstream http://blog:2368;\n"));
        assert!(text.contains("        add_header X-Frame-Options \"DENY\" always;\n"));
        assert!(text.contains("    location / {\n        return 404;\n    }\n"));
    }

    #[test]
    fn each_pass_stages_in_a_folder_of_its_own_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let main = dir.path().join("nginx.conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("berth-a.conf"), "a").unwrap();
        let one = Staging::create(&conf, &main, "web").unwrap();
        let two = Staging::create(&conf, &main, "web").unwrap();
        assert_ne!(one.dir, two.dir);
        assert_ne!(one.test_main, two.test_main);
        let name = one.dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!(".berth-staging-web-{}-", std::process::id())),
            "{name}"
        );
        let files = |extra: &str| {
            BTreeMap::from([
                ("berth-a.conf".to_owned(), "a".to_owned()),
                (extra.to_owned(), "x".to_owned()),
            ])
        };
        one.fill(&files("berth-b.conf")).unwrap();
        two.fill(&files("berth-c.conf")).unwrap();
        let staged = |s: &Staging| {
            let mut names: Vec<String> = std::fs::read_dir(&s.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(staged(&one), ["berth-a.conf", "berth-b.conf"]);
        assert_eq!(staged(&two), ["berth-a.conf", "berth-c.conf"]);
        let (dir_one, dir_two) = (one.dir.clone(), two.dir.clone());
        drop(one);
        assert!(!dir_one.exists());
        assert!(dir_two.exists(), "one pass never removes another's folder");
        drop(two);
        assert_eq!(std::fs::read_dir(&conf).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_a_dead_pass_go_and_a_live_passs_folder_stays() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let main = dir.path().join("nginx.conf");
        std::fs::create_dir(&conf).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        let age = |path: &Path| {
            File::open(path).unwrap().set_modified(long_ago).unwrap();
        };
        // A live pass, busy for an hour: locked, so kept however old.
        let live = Staging::create(&conf, &main, "web").unwrap();
        age(&live.dir);
        // A pass killed an hour ago: nobody holds its folder.
        let dead = conf.join(".berth-staging-web-999999-0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("berth-a.conf"), "a").unwrap();
        std::fs::write(test_main_of(&main, "web-999999-0"), "x").unwrap();
        age(&dead);
        // One that was killed just now might be a pass that has not locked yet.
        let young = conf.join(".berth-staging-web-999998-0");
        std::fs::create_dir(&young).unwrap();

        remove_stale_staging(&conf, &main);
        assert!(!dead.exists());
        assert!(!test_main_of(&main, "web-999999-0").exists());
        assert!(live.dir.exists());
        assert!(young.exists());
    }

    #[test]
    fn nginx_lines_are_shown_as_their_message() {
        assert_eq!(
            message_of(
                "2026/12/04 21:31:30 [emerg] 2135#2135: cannot load certificate \"/a.pem\": x"
            ),
            "cannot load certificate \"/a.pem\": x"
        );
        assert_eq!(
            message_of("nginx: [emerg] unknown directive \"x\" in /etc/nginx/conf.d/a.conf:1"),
            "unknown directive \"x\" in /etc/nginx/conf.d/a.conf:1"
        );
        assert_eq!(message_of("plain words"), "plain words");
    }

    #[test]
    fn top_level_directives_are_read_outside_blocks_only() {
        let conf = "user root;\n# pid /commented.pid;\nevents { pid /inner.pid; }\n\
                    pid \"/run/a.pid\";\nerror_log /var/log/x.log warn;\nhttp { error_log /in.log; }\n";
        assert_eq!(
            top_level_directive(conf, "pid").as_deref(),
            Some("/run/a.pid")
        );
        assert_eq!(
            top_level_directive(conf, "error_log").as_deref(),
            Some("/var/log/x.log")
        );
        assert_eq!(top_level_directive(conf, "worker_processes"), None);
    }

    #[test]
    fn hostile_routes_are_not_rendered() {
        let mut r = route();
        r.hosts[0] = "a.com; include /etc/passwd".into();
        assert!(
            nginx()
                .render(&r)
                .unwrap_err()
                .to_string()
                .contains("refusing to render")
        );
    }
}
