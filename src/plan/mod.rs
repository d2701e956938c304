//! The planner: `plan(&Desired, &Observed) -> Plan`, pure and deterministic.
//!
//! Each declared or owned resource gets one [`Action`] saying what happens to it and
//! why, with the concrete [`Step`]s that apply executes, the [`Phase`] it runs in and
//! the actions it needs. Every write berth makes — a generated secret, a TLS file, a
//! proxy file — is a step of the plan. The same value feeds `apply --dry-run`, `apply`,
//! the status API and notifications; apply decides nothing of its own.

mod app;
pub mod certificate;
mod database;
mod diff;
mod domain;
pub mod hold;
mod order;
pub mod ports;
mod render;
pub mod resolve;
mod service;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

pub use app::handover_name;
pub use certificate::{expiring, renewal_time};
pub use diff::{spec_changes, unified_diff};
pub use order::rounds;
pub use render::render_text;

use crate::desired::{Desired, MountSource, ObjectKind};
use crate::manifest::model::{DatabaseMode, DeletionPolicy, Runtime};
use crate::observe::swarm::{ObservedService, ObservedSwarm};
use crate::observe::{Observed, ObservedContainer};
use crate::resource::{ResourceId, ResourceKind};
use crate::source::RevisionId;
use crate::state::history::PinnedBy;
use crate::state::records::SharedRecord;

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
    /// A secret berth generates into the secret store.
    Secret,
    /// A file berth writes for the proxy (a certificate or key kept as a secret).
    File,
    /// A Domain's certificate from berth's ACME client.
    Certificate,
}

impl Target {
    /// The kind of resource (or write) an action on this target is about.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Target::Network => ResourceKind::Network,
            Target::Volume => ResourceKind::Volume,
            Target::Database => ResourceKind::Database,
            Target::App => ResourceKind::App,
            Target::Domain => ResourceKind::Domain,
            Target::Secret => ResourceKind::Secret,
            Target::File => ResourceKind::File,
            Target::Certificate => ResourceKind::Certificate,
        }
    }

    /// Whether the target is a write into the state dir rather than a resource.
    pub fn is_write(self) -> bool {
        matches!(self, Target::Secret | Target::File)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Network => "network",
            Target::Volume => "volume",
            Target::Database => "database",
            Target::App => "app",
            Target::Domain => "domain",
            Target::Secret => "secret",
            Target::File => "file",
            Target::Certificate => "certificate",
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

impl Op {
    /// The verb a change line starts with: `create`, `update`, `delete`, `conflict`, `keep`.
    pub fn verb(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Conflict => "conflict",
            Op::Noop => "keep",
        }
    }
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
        /// An attachable overlay network every node of the swarm shares (`runtime:
        /// swarm`), not a bridge of one daemon.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overlay: bool,
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
        /// What is recorded.
        record: SharedRecord,
    },
    /// Drop a shared database and its user.
    DropDatabase {
        /// The Database resource.
        name: String,
        /// What berth recorded of it: the server, database and user to drop.
        record: SharedRecord,
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
        /// Start-first behind a proxy on the host: the new container (named
        /// `<name>-<hash>`, on a host port of its own) is started and ready, and the
        /// old one keeps serving until the proxy has switched: the action of the
        /// Domain routing to it removes the old one and renames the new one then.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        handover: bool,
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
    /// Write a secret generated for this pass into the secret store (mode 0600).
    GenerateSecret {
        /// The secret's name.
        name: String,
    },
    /// Write the pin that holds an app at an earlier spec (`berth rollback`).
    PinApp {
        /// The app.
        app: String,
        /// The revision whose spec it holds.
        revision: String,
    },
    /// Remove an app's pin: its declared spec is deployed again.
    UnpinApp {
        /// The app.
        app: String,
    },
    /// Build an app's image from its context, before its containers run.
    Build {
        /// The app.
        app: String,
        /// The image's tag.
        tag: String,
        /// The context folder (`.` for the root of the revision).
        context: String,
        /// How many files the context sends.
        files: usize,
        /// How many differ from the last build berth recorded (`None`: no earlier build).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed: Option<usize>,
    },
    /// Write a secret's value to a file the proxy reads (mode 0600).
    WriteFile {
        /// The file.
        path: String,
        /// The secret it holds.
        secret: String,
    },
    /// Order a certificate for a Domain's hosts from the ACME CA (HTTP-01, answered
    /// by the Domain's proxy file) and store it (mode 0600).
    IssueCertificate {
        /// The Domain.
        domain: String,
        /// Its hosts.
        hosts: Vec<String>,
    },
    /// Serve a Domain's new certificate: write the proxy file with its HTTPS server
    /// (when it changes) and reload the proxy.
    ServeCertificate {
        /// The Domain the proxy file is named after.
        file: String,
    },
    /// Remove a certificate berth's ACME client kept for a Domain no longer declared.
    RemoveCertificate {
        /// The Domain.
        domain: String,
    },
    /// Create an app's Swarm service and wait until its tasks run.
    CreateService {
        /// The app.
        app: String,
    },
    /// Give an app's service the desired spec and wait until Swarm has rolled its tasks
    /// over (or rolled the update back).
    UpdateService {
        /// The app.
        app: String,
        /// The service's id.
        id: String,
        /// The service's version the update is made against.
        version: u64,
        /// Whether Swarm starts each new task before it stops the old one.
        start_first: bool,
    },
    /// Remove a service; Swarm stops its tasks.
    RemoveService {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
    /// Create the Swarm secret that carries an app's secret variable.
    CreateSwarmSecret {
        /// The app.
        app: String,
        /// The variable.
        variable: String,
        /// The secret's name (`<app>.<VARIABLE>.<hash>`).
        name: String,
    },
    /// Remove a Swarm secret that no service uses any more.
    RemoveSwarmSecret {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
}

/// When an action runs. Apply runs the phases in this order; within `Containers`, the
/// dependency rounds in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Generated secrets and files, before anything uses them.
    Write,
    /// Networks and volumes.
    Infrastructure,
    /// Shared and external databases.
    Databases,
    /// Apps' and managed databases' containers, round by round.
    Containers,
    /// Proxy files, written and checked in one batch, then one reload.
    Proxy,
    /// Certificates ordered from the ACME CA (their challenges answered by the proxy
    /// files just written), then served.
    Certificates,
    /// Removals of what is no longer declared: containers, databases, volumes,
    /// networks, in that order.
    Prune,
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
    /// When it runs.
    pub phase: Phase,
    /// The actions that must succeed first: when one of them fails, this one is
    /// skipped (an app whose database or volume could not be made).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Need>,
    /// The changes apply makes.
    pub steps: Vec<Step>,
    /// The earlier spec a rollback holds the app at, in place of the declared one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Nothing is done now although the resource is not as declared: a certificate
    /// whose last order failed waits for its backoff, a Domain is served over plain
    /// HTTP until its certificate exists. Status shows it not ready, with the reasons.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// A Swarm service's tasks as observed (`runtime: swarm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Tasks>,
}

/// A service's tasks, as observed before the pass: how many run, where, and what is
/// wrong when not all of them do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tasks {
    /// Tasks running (healthy, for a service with a health check).
    pub running: u64,
    /// Tasks the service asks for.
    pub desired: u64,
    /// The nodes they run on (host names), with how many on each.
    pub nodes: BTreeMap<String, u64>,
    /// What keeps the service from running as declared: a failing task's error, an
    /// update Swarm rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Tasks {
    /// `2/3 tasks running on node-1, node-2 (2)`.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(n, c)| {
                if *c > 1 {
                    format!("{n} ({c})")
                } else {
                    n.clone()
                }
            })
            .collect();
        let on = if nodes.is_empty() {
            String::new()
        } else {
            format!(" on {}", nodes.join(", "))
        };
        format!("{}/{} tasks running{on}", self.running, self.desired)
    }
}

/// The spec a rollback holds an app at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The revision whose spec runs (`RevisionId` text).
    pub revision: String,
    /// Who pinned it.
    pub by: PinnedBy,
}

impl Held {
    /// The revision held, as people read it.
    pub fn short(&self) -> String {
        RevisionId::read(&self.revision).short().to_owned()
    }

    /// What status says of the app, `declared` being the revision planned.
    pub fn message(&self, app: &str, declared: &str) -> String {
        format!(
            "rolled back {}: runs the spec of revision {}, not the one revision {} declares; \
             a revision that changes app {app} releases it, or `berth rollback --release {app}`",
            self.by,
            self.short(),
            RevisionId::read(declared).short(),
        )
    }
}

/// An action another one needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Need {
    /// The kind of object.
    pub target: Target,
    /// Its name.
    pub name: String,
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
            phase: Phase::Infrastructure,
            needs: Vec::new(),
            steps: Vec::new(),
            held: None,
            waiting: false,
            tasks: None,
        }
    }

    /// The resource (or the secret or file written) this action is about.
    pub fn resource(&self) -> ResourceId {
        ResourceId::new(self.target.resource_kind(), &self.name)
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
    /// Secrets to generate and files to write into the state dir.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Whether anything would change (or is blocked).
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete + self.conflicts + self.writes > 0
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
        if self.writes > 0 {
            write!(
                f,
                " {} write{} into the state dir.",
                self.writes,
                if self.writes == 1 { "" } else { "s" }
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
    /// The time of the pass (Unix seconds): whether a certificate is due.
    pub now: u64,
}

/// Computes the plan that takes `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &Observed, options: PlanOptions) -> Plan {
    let mut actions = writes(desired, observed);

    // The shared network.
    let swarm = desired.runtime == Runtime::Swarm;
    let mut network = Action::new(Target::Network, &desired.network, Op::Noop);
    if !observed.networks.contains(&desired.network) {
        if observed.foreign_networks.contains(&desired.network) {
            // A network someone else made (often the proxy's): joined, never changed.
            network
                .reasons
                .push("exists, not managed by berth: apps join it as it is".into());
        } else {
            network.op = Op::Create;
            network.reasons.push(if swarm {
                "new attachable overlay network".into()
            } else {
                "new network".into()
            });
            network.steps.push(Step::CreateNetwork {
                name: desired.network.clone(),
                internal: false,
                overlay: swarm,
            });
        }
    }
    actions.push(network);
    if let Some(name) = &desired.db_network {
        let mut a = Action::new(Target::Network, name, Op::Noop);
        if !observed.networks.contains(name) && !observed.foreign_networks.contains(name) {
            a.op = Op::Create;
            a.reasons.push(if swarm {
                "new internal attachable overlay network for managed databases".into()
            } else {
                "new internal network for managed databases".into()
            });
            a.steps.push(Step::CreateNetwork {
                name: name.clone(),
                internal: true,
                overlay: swarm,
            });
        }
        actions.push(a);
    }
    if swarm {
        // A network of one daemon (made for `runtime: docker`) cannot carry services.
        for a in actions.iter_mut().filter(|a| a.target == Target::Network) {
            let exists =
                observed.networks.contains(&a.name) || observed.foreign_networks.contains(&a.name);
            if exists && !observed.swarm_networks.contains(&a.name) {
                a.op = Op::Conflict;
                a.reasons = vec![format!(
                    "network `{}` is a network of this daemon only (made for `runtime: \
                     docker`), and Swarm services need an overlay network: remove it once \
                     no container uses it (`docker network rm {}`), or name another network \
                     in Settings",
                    a.name, a.name
                )];
            }
        }
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
                let owner = match app.kind {
                    ObjectKind::Database => "database",
                    _ => "app",
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
        let mut a = match db.mode {
            DatabaseMode::Shared => database::plan_shared(db, observed),
            DatabaseMode::External => {
                let mut a = Action::new(Target::Database, &db.name, Op::Noop);
                a.reasons
                    .push(format!("external {}: linked only", db.engine.as_str()));
                a
            }
            DatabaseMode::Managed => continue,
        };
        a.phase = Phase::Databases;
        actions.push(a);
    }

    // Apps, by dependency round.
    let mut by_app: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in &observed.containers {
        by_app.entry(&c.app).or_default().push(c);
    }
    let mut after_switch = BTreeMap::new();
    let no_swarm = ObservedSwarm::default();
    let observed_swarm = observed.swarm.as_ref().unwrap_or(&no_swarm);
    let mut services: BTreeMap<&str, &ObservedService> = observed_swarm
        .services
        .iter()
        .map(|s| (s.app.as_str(), s))
        .collect();
    for (round, names) in rounds(desired).into_iter().enumerate() {
        for name in names {
            let app = &desired.apps[&name];
            let current = by_app.remove(name.as_str()).unwrap_or_default();
            let (mut a, switched) = if swarm {
                let service = services.remove(name.as_str());
                let a = service::plan_service(app, service, &current, observed_swarm, observed);
                (a, Vec::new())
            } else {
                app::plan_app(app, &current, observed)
            };
            // A held app runs the image of its earlier spec: nothing of today's is built.
            if !matches!(
                desired.holds.get(&name),
                Some(crate::desired::Hold::Held { .. })
            ) {
                app::plan_build(&mut a, desired.builds.get(&name), observed);
            }
            if conflicted_apps.contains(&name) && a.op != Op::Conflict {
                a.op = Op::Conflict;
                a.steps.clear();
                a.diff = None;
                a.reasons =
                    vec!["blocked: one of its volumes exists and is not managed by berth".into()];
            } else if !switched.is_empty() {
                after_switch.insert(name.clone(), switched);
            }
            hold::mark(&mut a, desired.holds.get(&name));
            a.round = round;
            a.phase = Phase::Containers;
            a.needs = needs(desired, app);
            actions.push(a);
        }
    }

    // Proxy files, after the apps they route to; then the certificates their challenge
    // locations answer for.
    let last_round = actions.iter().map(|a| a.round).max().unwrap_or(0);
    let (domains, pruned_files) = domain::plan_domains(desired, observed, &after_switch, options);
    for mut a in domains {
        a.round = last_round + 1;
        actions.push(a);
    }
    for mut a in certificate::plan_certificates(desired, options) {
        a.round = last_round + 1;
        actions.push(a);
    }

    // Prune what is owned but no longer declared: containers, then databases, then
    // volumes, proxy files and networks.
    let mut prune = Vec::new();
    let kind_of = |name: &str| {
        let database = observed
            .containers
            .iter()
            .any(|c| c.app == name && c.kind == ObjectKind::Database)
            || services
                .get(name)
                .is_some_and(|s| s.kind == ObjectKind::Database);
        if database {
            Target::Database
        } else {
            Target::App
        }
    };
    // Undeclared: apps with containers, services, or Swarm secrets left.
    let mut undeclared: BTreeSet<&str> = by_app.keys().copied().collect();
    undeclared.extend(services.keys().copied());
    undeclared.extend(
        observed_swarm
            .secrets
            .iter()
            .map(|s| s.app.as_str())
            .filter(|a| !desired.apps.contains_key(*a)),
    );
    for name in undeclared {
        if !options.prune {
            let mut a = Action::new(kind_of(name), name, Op::Noop);
            a.reasons
                .push("no longer declared; kept (pruning is off)".into());
            prune.push(a);
            continue;
        }
        let mut a = Action::new(kind_of(name), name, Op::Delete);
        a.reasons.push("no longer declared".into());
        if let Some(s) = services.get(name) {
            a.steps.push(Step::RemoveService {
                id: s.id.clone(),
                name: s.name.clone(),
            });
        }
        for c in by_app.get(name).into_iter().flatten() {
            a.steps.push(Step::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
            });
        }
        for s in observed_swarm.secrets.iter().filter(|s| s.app == name) {
            a.steps.push(Step::RemoveSwarmSecret {
                id: s.id.clone(),
                name: s.name.clone(),
            });
        }
        prune.push(a);
    }
    prune.extend(database::plan_removed(
        &desired.databases,
        observed,
        options,
    ));
    prune.extend(certificate::prune_certificates(desired, observed, options));
    if options.prune {
        prune.extend(prune_volumes(desired, observed));
        prune.extend(pruned_files);
        for n in &observed.networks {
            if *n != desired.network && desired.db_network.as_ref() != Some(n) {
                let mut a = Action::new(Target::Network, n, Op::Delete);
                a.reasons.push("no longer declared".into());
                a.steps.push(Step::RemoveNetwork { name: n.clone() });
                prune.push(a);
            }
        }
    }
    for mut a in prune {
        match (a.op, a.target) {
            (Op::Delete, Target::Domain) => a.phase = Phase::Proxy,
            (Op::Delete, _) => a.phase = Phase::Prune,
            _ => {}
        }
        actions.push(a);
    }

    let mut summary = Summary::default();
    for a in &actions {
        if a.target.is_write() {
            summary.writes += 1;
            continue;
        }
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

/// What an app's containers need to have succeeded: the networks it joins, its volumes,
/// and the apps and databases it depends on.
fn needs(desired: &Desired, app: &crate::desired::DesiredApp) -> Vec<Need> {
    let mut out: Vec<Need> = std::iter::once(&app.spec.network)
        .chain(&app.spec.networks)
        .map(|n| Need {
            target: Target::Network,
            name: n.clone(),
        })
        .collect();
    out.extend(app.volumes.iter().map(|v| Need {
        target: Target::Volume,
        name: v.docker_name.clone(),
    }));
    for d in &app.depends_on {
        let target = match desired.apps.get(d) {
            Some(a) if a.kind == ObjectKind::App => Target::App,
            Some(_) => Target::Database,
            None if desired.databases.contains_key(d) => Target::Database,
            None => continue,
        };
        out.push(Need {
            target,
            name: d.clone(),
        });
    }
    out
}

/// The secrets generated for this pass and the files to write, each its own action:
/// a dry run lists them, and only apply writes them.
fn writes(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    for name in desired.new_secrets.keys() {
        let mut a = Action::new(Target::Secret, name, Op::Create);
        a.reasons
            .push("generated once into the secret store (mode 0600)".into());
        a.phase = Phase::Write;
        a.steps.push(Step::GenerateSecret { name: name.clone() });
        out.push(a);
    }
    for (path, file) in &desired.files {
        let current = observed.files.get(path);
        if current == Some(&file.hash()) {
            continue;
        }
        let op = if current.is_some() {
            Op::Update
        } else {
            Op::Create
        };
        let mut a = Action::new(Target::File, path, op);
        a.reasons.push(format!(
            "TLS file from secret {} (mode 0600)",
            file.secret.name()
        ));
        a.phase = Phase::Write;
        a.steps.push(Step::WriteFile {
            path: path.clone(),
            secret: file.secret.name().to_owned(),
        });
        out.push(a);
    }
    out
}

/// Volumes no longer declared: removed when their app said `deletionPolicy: delete`,
/// kept otherwise.
fn prune_volumes(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let declared: BTreeSet<&str> = desired
        .apps
        .values()
        .flat_map(|a| a.volumes.iter().map(|v| v.docker_name.as_str()))
        .collect();
    // What runs the apps: containers, or services under `runtime: swarm`.
    let runners: Vec<(
        &str,
        ObjectKind,
        DeletionPolicy,
        Option<&crate::desired::ContainerSpec>,
    )> = observed
        .containers
        .iter()
        .map(|c| (c.app.as_str(), c.kind, c.deletion_policy, c.spec.as_ref()))
        .chain(observed.swarm.iter().flat_map(|sw| {
            sw.services
                .iter()
                .map(|s| (s.app.as_str(), s.kind, s.deletion_policy, s.spec.as_ref()))
        }))
        .collect();
    let mut out = Vec::new();
    for v in &observed.volumes {
        if declared.contains(v.name.as_str()) {
            continue;
        }
        // The policy in force is the app's, as recorded on its containers (or its
        // service); the volume's own label covers apps whose containers are gone.
        let policy = runners
            .iter()
            .find(|r| r.0 == v.app)
            .map_or(v.deletion_policy, |r| r.2);
        // A volume another resource mounts holds its data too (names that clashed
        // before validation refused them): its own policy never deletes it.
        let other = runners.iter().find(|r| {
            r.0 != v.app
                && r.3.is_some_and(|s| {
                    s.volumes
                        .iter()
                        .any(|m| m.source == MountSource::Volume(v.name.clone()))
                })
        });
        if let (DeletionPolicy::Delete, Some(r)) = (policy, other) {
            let kind = match r.1 {
                ObjectKind::Database => "database",
                _ => "app",
            };
            let mut a = Action::new(Target::Volume, &v.name, Op::Noop);
            a.reasons.push(format!(
                "no longer declared by app {}; kept: {kind} {} mounts it too \
                 (deletionPolicy: {})",
                v.app,
                r.0,
                policy_name(r.2)
            ));
            out.push(a);
        } else if policy == DeletionPolicy::Delete {
            let mut a = Action::new(Target::Volume, &v.name, Op::Delete);
            a.reasons.push(format!(
                "no longer declared; app {} says deletionPolicy: delete",
                v.app
            ));
            a.steps.push(Step::RemoveVolume {
                name: v.name.clone(),
            });
            out.push(a);
        } else {
            let mut a = Action::new(Target::Volume, &v.name, Op::Noop);
            a.reasons
                .push("no longer declared; data kept (deletionPolicy: retain)".into());
            out.push(a);
        }
    }
    out
}

fn policy_name(policy: DeletionPolicy) -> &'static str {
    match policy {
        DeletionPolicy::Retain => "retain",
        DeletionPolicy::Delete => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ContainerSpec, Mount};

    fn container(
        app: &str,
        kind: ObjectKind,
        policy: DeletionPolicy,
        volume: &str,
    ) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{app}"),
            name: app.to_owned(),
            app: app.to_owned(),
            replica: 1,
            hash: String::new(),
            spec: Some(ContainerSpec {
                image: "busybox:1.36".into(),
                command: None,
                env: BTreeMap::new(),
                secret_env: BTreeMap::new(),
                port: None,
                ports: Vec::new(),
                volumes: vec![Mount {
                    source: MountSource::Volume(volume.to_owned()),
                    target: "/data".into(),
                    read_only: false,
                }],
                network: "web".into(),
                health: None,
                cpus: None,
                memory: None,
                restart: "unless-stopped".into(),
                labels: BTreeMap::new(),
                user: None,
                init: false,
                networks: Vec::new(),
                build: None,
                service: None,
            }),
            state: "running".into(),
            deletion_policy: policy,
            kind,
            host_port: None,
        }
    }

    /// App `x`'s volume `db-data` and managed Database `x-db`'s data were both the
    /// Docker volume `x-db-data`: pruning the app (`deletionPolicy: delete`) deleted
    /// the database's data although the database said `retain`.
    #[test]
    fn volume_clash_never_deletes_a_volume_another_resource_mounts() {
        let desired = Desired {
            network: "web".into(),
            ..Desired::default()
        };
        let observed = Observed {
            networks: ["web".to_owned()].into(),
            containers: vec![
                container("x", ObjectKind::App, DeletionPolicy::Delete, "x-db-data"),
                container(
                    "x-db",
                    ObjectKind::Database,
                    DeletionPolicy::Retain,
                    "x-db-data",
                ),
            ],
            volumes: vec![crate::observe::ObservedVolume {
                name: "x-db-data".into(),
                app: "x".into(),
                deletion_policy: DeletionPolicy::Delete,
            }],
            ..Observed::default()
        };
        let p = plan(
            &desired,
            &observed,
            PlanOptions {
                prune: true,
                now: 0,
            },
        );
        let volume: Vec<&Action> = p
            .actions
            .iter()
            .filter(|a| a.target == Target::Volume)
            .collect();
        assert_eq!(volume.len(), 1, "{:?}", p.actions);
        assert_eq!(volume[0].op, Op::Noop);
        assert!(volume[0].steps.is_empty());
        assert_eq!(
            volume[0].reasons,
            [
                "no longer declared by app x; kept: database x-db mounts it too (deletionPolicy: retain)"
            ]
        );
        assert!(
            !p.actions
                .iter()
                .flat_map(|a| &a.steps)
                .any(|s| matches!(s, Step::RemoveVolume { .. })),
            "no volume is removed: {:?}",
            p.actions
        );

        // Once only its own app mounts it, its policy applies.
        let observed = Observed {
            containers: observed.containers[..1].to_vec(),
            ..observed
        };
        let p = plan(
            &desired,
            &observed,
            PlanOptions {
                prune: true,
                now: 0,
            },
        );
        assert!(
            p.actions
                .iter()
                .flat_map(|a| &a.steps)
                .any(|s| matches!(s, Step::RemoveVolume { name } if name == "x-db-data"))
        );
    }
}
