//! The planner: `plan(&Desired, &Observed) -> Plan`, pure and deterministic.
//!
//! Each declared or owned resource gets one [`Action`] saying what happens to it and
//! why, with the concrete [`Step`]s that apply executes. The same value feeds
//! `apply --dry-run`, `apply`, the status API and notifications.

mod diff;
mod order;
mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

pub use diff::{spec_changes, unified_diff};
pub use order::rounds;
pub use render::render_text;

use crate::databases::DesiredDatabase;
use crate::desired::{Desired, DesiredApp, container_name};
use crate::manifest::model::{DatabaseMode, DeletionPolicy, UpdateStrategy};
use crate::observe::{Observed, ObservedContainer};
use crate::routes::FileState;

/// What kind of object an action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The shared network.
    Network,
    /// A named volume.
    Volume,
    /// A database: a managed one's container, a shared one's database and user.
    Database,
    /// An app's containers.
    App,
    /// A domain's proxy file.
    Domain,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Network => "network",
            Target::Volume => "volume",
            Target::Database => "database",
            Target::App => "app",
            Target::Domain => "domain",
        })
    }
}

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// It is created.
    Create,
    /// It is changed.
    Update,
    /// It is removed.
    Delete,
    /// It is as it should be.
    Noop,
    /// An object berth does not own is in the way; nothing is done.
    Conflict,
}

/// One concrete change, executed by apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "step",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Step {
    /// Create the shared network (or the databases' internal one).
    CreateNetwork {
        /// Its name.
        name: String,
        /// No route out of it (the managed databases' network).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        internal: bool,
    },
    /// Create a shared database and its user, or put them back as declared.
    EnsureDatabase {
        /// The Database resource.
        name: String,
    },
    /// Remember a shared database berth owns (and its deletion policy).
    RecordDatabase {
        /// The Database resource.
        name: String,
    },
    /// Drop a shared database and its user.
    DropDatabase {
        /// The Database resource.
        name: String,
    },
    /// Forget a shared database (its data stays on the server).
    ForgetDatabase {
        /// The Database resource.
        name: String,
    },
    /// Remove a network berth created.
    RemoveNetwork {
        /// Its name.
        name: String,
    },
    /// Create a named volume.
    CreateVolume {
        /// The Docker name.
        name: String,
        /// The owning app.
        app: String,
        /// The volume's name in the manifest.
        volume: String,
        /// `retain` or `delete`.
        delete_on_prune: bool,
    },
    /// Remove a named volume (and its data).
    RemoveVolume {
        /// The Docker name.
        name: String,
    },
    /// Create and start a replica's container.
    Run {
        /// The app.
        app: String,
        /// The replica (1-based).
        replica: u32,
    },
    /// Replace a replica's container with one of the new spec.
    Replace {
        /// The app.
        app: String,
        /// The replica.
        replica: u32,
        /// The container replaced.
        old_id: String,
        /// Its name.
        old_name: String,
        /// Start the new one first, or stop the old one first.
        start_first: bool,
    },
    /// Start a stopped container that is otherwise right.
    Start {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
    /// Give a container its canonical name.
    Rename {
        /// Its id.
        id: String,
        /// Its name now.
        from: String,
        /// Its name after.
        to: String,
    },
    /// Stop and remove a container.
    Remove {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
    /// Write a domain's proxy file (checked first, then moved into place).
    WriteProxyFile {
        /// The domain.
        domain: String,
    },
    /// Remove a domain's proxy file.
    RemoveProxyFile {
        /// The domain.
        domain: String,
    },
}

/// What happens to one resource, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// The kind of object.
    pub target: Target,
    /// Its name.
    pub name: String,
    /// What happens.
    pub op: Op,
    /// Why, in words: "image ghost:5.1 → ghost:5.2", "container missing (drift)".
    pub reasons: Vec<String>,
    /// Whether this puts back something changed outside berth.
    pub drift: bool,
    /// A unified diff of the current and desired spec (updates only; secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The dependency round (apps only): round N starts after round N-1 finished.
    pub round: usize,
    /// The changes apply makes.
    pub steps: Vec<Step>,
}

impl Action {
    fn new(target: Target, name: &str, op: Op) -> Action {
        Action {
            target,
            name: name.to_owned(),
            op,
            reasons: Vec::new(),
            drift: false,
            diff: None,
            round: 0,
            steps: Vec::new(),
        }
    }
}

/// How many actions of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Resources created.
    pub create: usize,
    /// Resources updated.
    pub update: usize,
    /// Resources removed.
    pub delete: usize,
    /// Resources unchanged.
    pub unchanged: usize,
    /// Resources blocked by objects berth does not own.
    pub conflicts: usize,
}

impl Summary {
    /// Whether anything would change (or is blocked).
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete + self.conflicts > 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
            self.create, self.update, self.delete, self.unchanged
        )?;
        if self.conflicts > 0 {
            write!(
                f,
                " {} conflict{} with objects berth does not own.",
                self.conflicts,
                if self.conflicts == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// An ordered list of actions: infrastructure, apps by dependency round, then prunes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The revision planned.
    pub revision: String,
    /// The actions, in the order they run.
    pub actions: Vec<Action>,
    /// Counts.
    pub summary: Summary,
}

impl Plan {
    /// The actions that change something.
    pub fn changes(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.op != Op::Noop)
    }
}

/// Options that change what is planned without changing the manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Remove owned objects that are no longer declared (the manifests' `prune`, unless
    /// `--no-prune`).
    pub prune: bool,
}

/// Computes the plan that takes `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &Observed, options: PlanOptions) -> Plan {
    let mut actions = Vec::new();

    // The shared network.
    let mut network = Action::new(Target::Network, &desired.network, Op::Noop);
    if !observed.networks.contains(&desired.network) {
        if observed.foreign_networks.contains(&desired.network) {
            // A network someone else made (often the proxy's): joined, never changed.
            network
                .reasons
                .push("exists, not managed by berth: apps join it as it is".into());
        } else {
            network.op = Op::Create;
            network.reasons.push("new network".into());
            network.steps.push(Step::CreateNetwork {
                name: desired.network.clone(),
                internal: false,
            });
        }
    }
    actions.push(network);
    if let Some(name) = &desired.db_network {
        let mut a = Action::new(Target::Network, name, Op::Noop);
        if !observed.networks.contains(name) && !observed.foreign_networks.contains(name) {
            a.op = Op::Create;
            a.reasons
                .push("new internal network for managed databases".into());
            a.steps.push(Step::CreateNetwork {
                name: name.clone(),
                internal: true,
            });
        }
        actions.push(a);
    }

    // Named volumes.
    let owned_volumes: BTreeSet<&str> = observed.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut conflicted_apps = BTreeSet::new();
    for app in desired.apps.values() {
        for v in &app.volumes {
            let mut a = Action::new(Target::Volume, &v.docker_name, Op::Noop);
            if owned_volumes.contains(v.docker_name.as_str()) {
            } else if observed.foreign_volumes.contains(&v.docker_name) {
                a.op = Op::Conflict;
                a.reasons.push(format!(
                    "volume `{}` exists and is not managed by berth; remove it, or rename the \
                     volume in App `{}`",
                    v.docker_name, app.name
                ));
                conflicted_apps.insert(app.name.clone());
            } else {
                a.op = Op::Create;
                let owner = if app.kind == "database" {
                    "database"
                } else {
                    "app"
                };
                a.reasons
                    .push(format!("new volume for {owner} {}", app.name));
                a.steps.push(Step::CreateVolume {
                    name: v.docker_name.clone(),
                    app: app.name.clone(),
                    volume: v.volume.clone(),
                    delete_on_prune: v.deletion_policy == DeletionPolicy::Delete,
                });
            }
            actions.push(a);
        }
    }

    // Shared and external databases, before the apps that link them.
    for db in desired.databases.values() {
        match db.mode {
            DatabaseMode::Shared => actions.push(plan_shared(db, observed)),
            DatabaseMode::External => {
                let mut a = Action::new(Target::Database, &db.name, Op::Noop);
                a.reasons
                    .push(format!("external {}: linked only", db.engine.as_str()));
                actions.push(a);
            }
            DatabaseMode::Managed => {}
        }
    }

    // Apps, by dependency round.
    let mut by_app: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in &observed.containers {
        by_app.entry(&c.app).or_default().push(c);
    }
    for (round, names) in rounds(desired).into_iter().enumerate() {
        for name in names {
            let app = &desired.apps[&name];
            let current = by_app.remove(name.as_str()).unwrap_or_default();
            let mut a = plan_app(app, &current, observed);
            if app.kind == "database" {
                a.target = Target::Database;
                for r in &mut a.reasons {
                    if let Some(rest) = r.strip_prefix("new app (") {
                        *r = format!("new managed database ({rest}");
                    }
                }
            }
            if conflicted_apps.contains(&name) && a.op != Op::Conflict {
                a.op = Op::Conflict;
                a.steps.clear();
                a.diff = None;
                a.reasons =
                    vec!["blocked: one of its volumes exists and is not managed by berth".into()];
            }
            a.round = round;
            actions.push(a);
        }
    }

    // Proxy files, after the apps they route to.
    let last_round = actions.iter().map(|a| a.round).max().unwrap_or(0);
    for (domain, content) in &desired.proxy_files {
        let mut a = Action::new(Target::Domain, domain, Op::Noop);
        a.round = last_round + 1;
        let route = desired.routes.get(domain);
        match observed.proxy_files.get(domain) {
            None => {
                a.op = Op::Create;
                if let Some(r) = route {
                    a.reasons.push(format!(
                        "new route {} at {} → {}",
                        r.hosts.join(", "),
                        r.public_path(),
                        r.upstream.address()
                    ));
                }
            }
            Some((FileState::Foreign, _)) => {
                a.op = Op::Conflict;
                a.reasons.push(
                    "its proxy file exists and was not written by berth (no berth header); \
                     move it away or rename the domain"
                        .into(),
                );
            }
            Some((FileState::OtherInstance(owner), _)) => {
                a.op = Op::Conflict;
                a.reasons.push(format!(
                    "its proxy file belongs to berth instance `{owner}`; one domain name \
                     cannot be declared by two instances: rename it in one of them"
                ));
            }
            Some((state, current)) if current != content || *state == FileState::Edited => {
                a.op = Op::Update;
                if *state == FileState::Legacy {
                    a.reasons.push(
                        "proxy file of an earlier berth (no instance in its header): taken over"
                            .into(),
                    );
                } else if *state == FileState::Edited {
                    a.drift = true;
                    a.reasons.push("proxy file edited by hand (drift)".into());
                } else {
                    a.reasons.push("proxy config changed".into());
                }
                a.diff = Some(unified_diff(current, content));
            }
            Some(_) => {}
        }
        if matches!(a.op, Op::Create | Op::Update) {
            a.steps.push(Step::WriteProxyFile {
                domain: domain.clone(),
            });
        }
        actions.push(a);
    }

    // Shared databases berth created whose manifest is gone.
    for (name, o) in &observed.databases {
        if desired.databases.contains_key(name) {
            continue;
        }
        let Some(r) = &o.record else { continue };
        let on = format!(
            "database {} and user {} on {}",
            r.database, r.user, r.server
        );
        if !options.prune {
            let mut a = Action::new(Target::Database, name, Op::Noop);
            a.reasons
                .push(format!("no longer declared; {on} kept (pruning is off)"));
            actions.push(a);
        } else if r.deletion_policy == DeletionPolicy::Delete {
            let mut a = Action::new(Target::Database, name, Op::Delete);
            a.reasons.push(format!(
                "no longer declared; drop {on} (deletionPolicy: delete): THE DATA IS DELETED"
            ));
            a.steps.push(Step::DropDatabase { name: name.clone() });
            a.steps.push(Step::ForgetDatabase { name: name.clone() });
            actions.push(a);
        } else {
            let mut a = Action::new(Target::Database, name, Op::Delete);
            a.reasons.push(format!(
                "no longer declared; {on} kept with its data (deletionPolicy: retain), \
                 berth stops managing it"
            ));
            a.steps.push(Step::ForgetDatabase { name: name.clone() });
            actions.push(a);
        }
    }

    // Prune what is owned but no longer declared.
    let kind_of = |name: &str| {
        let database = observed
            .containers
            .iter()
            .any(|c| c.app == name && c.kind == "database");
        if database {
            Target::Database
        } else {
            Target::App
        }
    };
    if !options.prune {
        for name in by_app.keys() {
            let mut a = Action::new(kind_of(name), name, Op::Noop);
            a.reasons
                .push("no longer declared; kept (pruning is off)".into());
            actions.push(a);
        }
    } else {
        for (name, containers) in by_app {
            let mut a = Action::new(kind_of(name), name, Op::Delete);
            a.reasons.push("no longer declared".into());
            for c in containers {
                a.steps.push(Step::Remove {
                    id: c.id.clone(),
                    name: c.name.clone(),
                });
            }
            actions.push(a);
        }
        let declared: BTreeSet<&str> = desired
            .apps
            .values()
            .flat_map(|a| a.volumes.iter().map(|v| v.docker_name.as_str()))
            .collect();
        for v in &observed.volumes {
            if declared.contains(v.name.as_str()) {
                continue;
            }
            // The policy in force is the app's, as recorded on its containers; the
            // volume's own label covers apps whose containers are already gone.
            let policy = observed
                .containers
                .iter()
                .find(|c| c.app == v.app)
                .map_or(v.deletion_policy, |c| c.deletion_policy);
            if policy == DeletionPolicy::Delete {
                let mut a = Action::new(Target::Volume, &v.name, Op::Delete);
                a.reasons.push(format!(
                    "no longer declared; app {} says deletionPolicy: delete",
                    v.app
                ));
                a.steps.push(Step::RemoveVolume {
                    name: v.name.clone(),
                });
                actions.push(a);
            } else {
                let mut a = Action::new(Target::Volume, &v.name, Op::Noop);
                a.reasons
                    .push("no longer declared; data kept (deletionPolicy: retain)".into());
                actions.push(a);
            }
        }
        for (domain, (state, _)) in &observed.proxy_files {
            let ours = matches!(state, FileState::Intact | FileState::Edited);
            if ours && !desired.proxy_files.contains_key(domain) {
                let mut a = Action::new(Target::Domain, domain, Op::Delete);
                a.reasons.push("no longer declared".into());
                a.steps.push(Step::RemoveProxyFile {
                    domain: domain.clone(),
                });
                actions.push(a);
            }
        }
        for n in &observed.networks {
            if *n != desired.network && desired.db_network.as_ref() != Some(n) {
                let mut a = Action::new(Target::Network, n, Op::Delete);
                a.reasons.push("no longer declared".into());
                a.steps.push(Step::RemoveNetwork { name: n.clone() });
                actions.push(a);
            }
        }
    }

    let mut summary = Summary::default();
    for a in &actions {
        match a.op {
            Op::Create => summary.create += 1,
            Op::Update => summary.update += 1,
            Op::Delete => summary.delete += 1,
            Op::Noop => summary.unchanged += 1,
            Op::Conflict => summary.conflicts += 1,
        }
    }
    Plan {
        revision: desired.revision.clone(),
        actions,
        summary,
    }
}

/// Plans one app's replicas.
/// A shared database: created when missing, put back when its user cannot log in or
/// lost its rights, adopted (recorded) when it exists already as declared.
fn plan_shared(db: &DesiredDatabase, observed: &Observed) -> Action {
    let mut a = Action::new(Target::Database, &db.name, Op::Noop);
    let server = db.server_name.as_deref().unwrap_or("?");
    let on = format!("database {} on {server} with user {}", db.database, db.user);
    let ensure = Step::EnsureDatabase {
        name: db.name.clone(),
    };
    let o = observed.databases.get(&db.name);
    let record = o.and_then(|o| o.record.as_ref());
    match o.map(|o| &o.state) {
        None => {
            a.op = Op::Create;
            a.reasons.push(format!("create {on}"));
            a.steps.push(ensure);
        }
        Some(Err(e)) => {
            a.op = Op::Update;
            a.reasons
                .push(format!("ensure {on} (its state could not be read: {e})"));
            a.steps.push(ensure);
        }
        Some(Ok(state)) if !state.database_exists || !state.user_exists => {
            a.op = if record.is_some() {
                Op::Update
            } else {
                Op::Create
            };
            if record.is_some() {
                a.drift = true;
                a.reasons.push(format!(
                    "{on}: {} missing (drift)",
                    match (state.database_exists, state.user_exists) {
                        (false, false) => "database and user",
                        (false, true) => "database",
                        _ => "user",
                    }
                ));
            } else {
                a.reasons.push(format!("create {on}"));
            }
            a.steps.push(ensure);
        }
        Some(Ok(state)) if !state.login_ok => {
            a.op = Op::Update;
            a.drift = record.is_some();
            a.reasons.push(format!(
                "user {} cannot log in with the password in secret {}: reset",
                db.user,
                crate::databases::password_secret(&db.name)
            ));
            a.steps.push(ensure);
        }
        Some(Ok(state)) if !state.grants_ok => {
            a.op = Op::Update;
            a.drift = true;
            a.reasons.push(format!(
                "user {} lost its rights on {} (drift)",
                db.user, db.database
            ));
            a.steps.push(ensure);
        }
        Some(Ok(_)) => match record {
            None => {
                a.op = Op::Update;
                a.reasons.push(format!("adopt the existing {on}"));
                a.steps.push(Step::RecordDatabase {
                    name: db.name.clone(),
                });
            }
            Some(r) if r.deletion_policy != db.deletion_policy => {
                a.op = Op::Update;
                a.reasons.push(format!(
                    "deletionPolicy {} → {}",
                    policy_word(r.deletion_policy),
                    policy_word(db.deletion_policy)
                ));
                a.steps.push(Step::RecordDatabase {
                    name: db.name.clone(),
                });
            }
            Some(_) => a.reasons.push(on.clone()),
        },
    }
    if matches!(a.op, Op::Create | Op::Update)
        && a.steps
            .iter()
            .any(|s| matches!(s, Step::EnsureDatabase { .. }))
    {
        a.steps.push(Step::RecordDatabase {
            name: db.name.clone(),
        });
    }
    a
}

fn policy_word(p: DeletionPolicy) -> &'static str {
    match p {
        DeletionPolicy::Retain => "retain",
        DeletionPolicy::Delete => "delete",
    }
}

fn plan_app(app: &DesiredApp, current: &[&ObservedContainer], observed: &Observed) -> Action {
    let mut a = Action::new(Target::App, &app.name, Op::Noop);
    // Canonical names held by objects berth does not own block the app.
    for replica in 1..=app.replicas {
        let name = app.container_name(replica);
        if observed.foreign_containers.contains(&name) {
            a.op = Op::Conflict;
            a.reasons.push(format!(
                "container `{name}` exists and is not managed by berth; remove or rename it, \
                 or rename the app"
            ));
        }
    }
    if a.op == Op::Conflict {
        return a;
    }
    if current.is_empty() {
        if app.replicas == 0 {
            return a;
        }
        if observed.applied_apps.contains(&app.name) {
            a.op = Op::Update;
            a.drift = true;
            a.reasons.push("container missing (drift)".into());
        } else {
            a.op = Op::Create;
            a.reasons.push(format!("new app ({})", app.spec.image));
        }
        a.steps = (1..=app.replicas)
            .map(|replica| Step::Run {
                app: app.name.clone(),
                replica,
            })
            .collect();
        return a;
    }

    // Start-first needs two containers side by side: impossible with fixed host ports.
    let start_first = app.update == UpdateStrategy::StartFirst && app.spec.ports.is_empty();
    let max_current = current.iter().map(|c| c.replica).max().unwrap_or(0);
    let mut reasons: Vec<String> = Vec::new();
    if max_current != app.replicas {
        reasons.push(format!("replicas {max_current} → {}", app.replicas));
    }
    let mut diff_from = None;
    for replica in 1..=app.replicas.max(max_current) {
        let mut mine: Vec<&ObservedContainer> = current
            .iter()
            .copied()
            .filter(|c| c.replica == replica)
            .collect();
        if replica > app.replicas {
            for c in mine {
                a.steps.push(Step::Remove {
                    id: c.id.clone(),
                    name: c.name.clone(),
                });
            }
            continue;
        }
        // Keep the best candidate: the right spec, running, with the right name.
        let canonical = container_name(&app.name, replica);
        mine.sort_by_key(|c| {
            (
                c.hash != app.hash,
                !is_up(&c.state),
                c.name != canonical,
                c.name.clone(),
            )
        });
        let Some((keep, extra)) = mine.split_first() else {
            a.steps.push(Step::Run {
                app: app.name.clone(),
                replica,
            });
            // Beyond the highest replica running it is a scale-up; below, a hole.
            if replica <= max_current {
                a.drift = true;
                reasons.push(format!("container {canonical} missing (drift)"));
            }
            continue;
        };
        for c in extra {
            a.steps.push(Step::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
            });
            reasons.push(format!("container {} is a leftover", c.name));
        }
        if keep.hash != app.hash {
            a.steps.push(Step::Replace {
                app: app.name.clone(),
                replica,
                old_id: keep.id.clone(),
                old_name: keep.name.clone(),
                start_first,
            });
            match &keep.spec {
                Some(old) => {
                    for r in spec_changes(old, &app.spec) {
                        if !reasons.contains(&r) {
                            reasons.push(r);
                        }
                    }
                    diff_from.get_or_insert(old);
                }
                None => {
                    a.drift = true;
                    reasons.push(format!(
                        "container {} has no readable spec (drift)",
                        keep.name
                    ));
                }
            }
            continue;
        }
        if keep.name != canonical {
            a.steps.push(Step::Rename {
                id: keep.id.clone(),
                from: keep.name.clone(),
                to: canonical.clone(),
            });
            reasons.push(format!("container {} renamed to {canonical}", keep.name));
        }
        if !is_up(&keep.state) {
            a.drift = true;
            if matches!(keep.state.as_str(), "exited" | "created") {
                a.steps.push(Step::Start {
                    id: keep.id.clone(),
                    name: canonical.clone(),
                });
            } else {
                a.steps.push(Step::Replace {
                    app: app.name.clone(),
                    replica,
                    old_id: keep.id.clone(),
                    old_name: keep.name.clone(),
                    start_first: false,
                });
            }
            reasons.push(format!("container {canonical} is {} (drift)", keep.state));
        }
    }
    let replaces = a.steps.iter().any(|s| matches!(s, Step::Replace { .. }));
    if app.update == UpdateStrategy::StartFirst && !start_first && replaces {
        reasons.push("stop-first: its host ports cannot be bound twice".into());
    }
    if !a.steps.is_empty() {
        a.op = Op::Update;
        a.reasons = reasons;
        a.diff = diff_from.map(|old| unified_diff(&old.to_yaml(), &app.spec.to_yaml()));
    }
    a
}

fn is_up(state: &str) -> bool {
    matches!(state, "running" | "restarting")
}
