//! Shared databases: created, put back or adopted while declared; dropped or forgotten,
//! as their recorded deletion policy says, once their manifest is gone.

use super::{Action, Op, PlanOptions, Step, Target};
use crate::expand::databases::DesiredDatabase;
use crate::manifest::model::DeletionPolicy;
use crate::observe::Observed;
use crate::state::records::SharedRecord;

/// A shared database: created when missing, put back when its user cannot log in or
/// lost its rights, adopted (recorded) when it exists already as declared.
pub(super) fn plan_shared(db: &DesiredDatabase, observed: &Observed) -> Action {
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
                crate::expand::databases::password_secret(&db.name)
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
                a.steps.extend(record_step(db));
            }
            Some(r) if r.deletion_policy != db.deletion_policy => {
                a.op = Op::Update;
                a.reasons.push(format!(
                    "deletionPolicy {} → {}",
                    policy_word(r.deletion_policy),
                    policy_word(db.deletion_policy)
                ));
                a.steps.extend(record_step(db));
            }
            Some(_) => a.reasons.push(on.clone()),
        },
    }
    if matches!(a.op, Op::Create | Op::Update)
        && a.steps
            .iter()
            .any(|s| matches!(s, Step::EnsureDatabase { .. }))
    {
        a.steps.extend(record_step(db));
    }
    a
}

fn policy_word(p: DeletionPolicy) -> &'static str {
    match p {
        DeletionPolicy::Retain => "retain",
        DeletionPolicy::Delete => "delete",
    }
}

/// The step that records what berth owns on the server, carrying the record itself.
fn record_step(db: &DesiredDatabase) -> Option<Step> {
    // Without the server's admin password nothing was ensured: the ensure step fails
    // first and says why.
    let engine = db.server.as_ref()?.engine;
    Some(Step::RecordDatabase {
        name: db.name.clone(),
        record: SharedRecord {
            server: db.server_name.clone().unwrap_or_default(),
            engine,
            database: db.database.clone(),
            user: db.user.clone(),
            deletion_policy: db.deletion_policy,
        },
    })
}

/// Shared databases berth recorded whose manifest is gone: dropped (deletionPolicy:
/// delete) or forgotten with their data kept; kept as they are when pruning is off.
pub(super) fn plan_removed(
    declared: &std::collections::BTreeMap<String, DesiredDatabase>,
    observed: &Observed,
    options: PlanOptions,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, o) in &observed.databases {
        if declared.contains_key(name) {
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
            a.steps.push(Step::DropDatabase {
                name: name.clone(),
                record: r.clone(),
            });
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
    actions
}
