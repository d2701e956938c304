//! Apps a rollback pinned: while an app's declared spec is the one it was pinned
//! against, the held spec is planned in its place; a revision that changes the declared
//! spec (or `berth rollback --release`) releases the pin. Writing and removing a pin
//! are steps of the app's action, so a dry run writes nothing.

use std::collections::BTreeMap;

use super::{Action, Held, Op, Step};
use crate::desired::{Desired, DesiredApp, Hold, MissingSecret, ObjectKind, Release};
use crate::source::RevisionId;
use crate::state::history::{AppliedSpec, KEPT, Pin, PinnedBy};
use crate::state::secrets::SecretSource;

/// A change to the pins a pass makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinChange {
    /// Pin `app` to its previous spec (the newest applied one that differs from the
    /// declared one), or to the one applied at the revision `to` starts.
    Pin {
        /// The app.
        app: String,
        /// A revision id or its prefix.
        to: Option<String>,
        /// Who asks.
        by: PinnedBy,
    },
    /// Release `app`'s pin.
    Release {
        /// The app.
        app: String,
    },
}

/// Why a pin cannot be made or released.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The history holds no spec other than the declared one.
    #[error(
        "app {app} has no earlier deployment to roll back to (berth keeps the last {KEPT} \
         applied specs per app)"
    )]
    NoEarlierDeployment {
        /// The app.
        app: String,
    },
    /// No applied spec of that revision.
    #[error("app {app} was never deployed at a revision {to}…; the revisions it ran: {known}")]
    UnknownRevision {
        /// The app.
        app: String,
        /// The revision asked for.
        to: String,
        /// The revisions in its history, newest first.
        known: String,
    },
    /// Not a declared app (a managed database, or nothing).
    #[error("{name} is not an app of these manifests; only apps can be rolled back")]
    NotAnApp {
        /// The name given.
        name: String,
    },
    /// The held spec in the pins file is not a spec this berth reads.
    #[error(
        "the spec app {app} is held at cannot be read ({why}); release the hold with \
         `berth rollback --release {app}`"
    )]
    Unreadable {
        /// The app.
        app: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--release` of an app that is not pinned.
    #[error("app {app} is not pinned: there is no rollback to release")]
    NotPinned {
        /// The app.
        app: String,
    },
}

/// Puts each pin (and `change`) into `desired`: a held app's spec, hash and secrets
/// become the pinned ones, and `desired.holds` says what each pin does. `now` dates a
/// new pin. Returns the secrets a held spec names that the store does not have.
pub fn hold(
    desired: &mut Desired,
    pins: BTreeMap<String, Pin>,
    change: Option<&PinChange>,
    history: &BTreeMap<String, Vec<AppliedSpec>>,
    secrets: &dyn SecretSource,
    now: &str,
) -> Result<Vec<MissingSecret>, PinError> {
    let mut pins = pins;
    let mut new = None;
    match change {
        None => {}
        Some(PinChange::Pin { app, to, by }) => {
            let declared = desired
                .apps
                .get(app)
                .filter(|a| a.kind == ObjectKind::App)
                .ok_or_else(|| PinError::NotAnApp { name: app.clone() })?;
            let entries = history.get(app).map(Vec::as_slice).unwrap_or_default();
            let held = choose(app, entries, &declared.hash, to.as_deref())?;
            let pin = Pin {
                held: held.clone(),
                declared_hash: declared_hash(declared),
                by: by.clone(),
                at: now.to_owned(),
            };
            pins.insert(app.clone(), pin);
            new = Some(app.as_str());
        }
        Some(PinChange::Release { app }) => {
            if pins.remove(app).is_none() {
                return Err(PinError::NotPinned { app: app.clone() });
            }
            if desired.apps.contains_key(app) {
                desired
                    .holds
                    .insert(app.clone(), Hold::Released(Release::Asked));
            }
        }
    }
    let mut missing = Vec::new();
    for (name, pin) in pins {
        // A pin of an app no longer declared holds nothing: nothing of it is planned.
        let Some(app) = desired
            .apps
            .get_mut(&name)
            .filter(|a| a.kind == ObjectKind::App)
        else {
            continue;
        };
        if declared_hash(app) != pin.declared_hash {
            desired
                .holds
                .insert(name, Hold::Released(Release::DeclaredChanged));
            continue;
        }
        // The held spec's secrets are injected as they are now (their values were never
        // kept): the declared app's, when it has the same secret (a linked database's URL
        // is made in the pass, not kept in the store), else the store's.
        let mut spec: crate::desired::ContainerSpec = serde_json::from_value(pin.held.spec.clone())
            .map_err(|e| PinError::Unreadable {
                app: name.clone(),
                why: e.to_string(),
            })?;
        let mut values = BTreeMap::new();
        for (variable, secret) in &pin.held.secrets {
            let current = app
                .secrets
                .values()
                .find(|s| s.name() == secret)
                .cloned()
                .ok_or(())
                .or_else(|()| secrets.get(secret));
            match current {
                Ok(s) => {
                    spec.secret_env.insert(variable.clone(), s.redacted());
                    values.insert(variable.clone(), s);
                }
                Err(source) => {
                    spec.secret_env
                        .insert(variable.clone(), format!("<secret:{secret} unavailable>"));
                    missing.push(MissingSecret {
                        resource: format!("App/{name}"),
                        variable: Some(variable.clone()),
                        source,
                    });
                }
            }
        }
        app.hash = spec.hash();
        app.spec = spec;
        app.secrets = values;
        let new = new == Some(name.as_str());
        desired.holds.insert(
            name,
            Hold::Held {
                pin: Box::new(pin),
                new,
            },
        );
    }
    Ok(missing)
}

/// What a pin compares: the hash of the declared spec with each secret by its name, so
/// that a new value of a secret (a rotated password) does not release the pin; only a
/// revision that changes the app does.
pub fn declared_hash(app: &DesiredApp) -> String {
    let mut spec = app.spec.clone();
    for (variable, secret) in &app.secrets {
        spec.secret_env
            .insert(variable.clone(), format!("<secret:{}>", secret.name()));
    }
    spec.hash()
}

/// The entry a rollback goes back to.
fn choose<'a>(
    app: &str,
    entries: &'a [AppliedSpec],
    declared_hash: &str,
    to: Option<&str>,
) -> Result<&'a AppliedSpec, PinError> {
    let found = match to {
        None => entries.iter().rev().find(|e| e.hash != declared_hash),
        Some(to) => entries.iter().rev().find(|e| e.revision.starts_with(to)),
    };
    match (found, to) {
        (Some(e), _) => Ok(e),
        (None, Some(to)) if !entries.is_empty() => {
            let mut known: Vec<String> = Vec::new();
            for e in entries.iter().rev() {
                let short = short(&e.revision);
                if !known.contains(&short) {
                    known.push(short);
                }
            }
            Err(PinError::UnknownRevision {
                app: app.to_owned(),
                to: to.to_owned(),
                known: known.join(", "),
            })
        }
        (None, _) => Err(PinError::NoEarlierDeployment {
            app: app.to_owned(),
        }),
    }
}

/// A revision as people read it.
fn short(revision: &str) -> String {
    RevisionId::read(revision).short().to_owned()
}

/// Marks an app's action with what its pin does: held (and the pin written when it is
/// new), or released (the pin removed before the declared spec is deployed).
pub(super) fn mark(a: &mut Action, hold: Option<&Hold>) {
    let Some(hold) = hold else {
        return;
    };
    if a.op == Op::Conflict {
        return;
    }
    match hold {
        Hold::Held { pin, new } => {
            let held = Held {
                revision: pin.held.revision.clone(),
                by: pin.by.clone(),
            };
            let what = if a.op == Op::Noop {
                format!("hold at {} (rolled back {})", held.short(), held.by)
            } else {
                format!("rolled back to {} {}", held.short(), held.by)
            };
            a.reasons.insert(0, what);
            if *new {
                a.steps.insert(
                    0,
                    Step::PinApp {
                        app: a.name.clone(),
                        revision: pin.held.revision.clone(),
                    },
                );
            }
            a.held = Some(held);
        }
        Hold::Released(why) => {
            a.reasons.insert(
                0,
                match why {
                    Release::DeclaredChanged => "pin released: the declared spec changed",
                    Release::Asked => "pin released by berth rollback --release",
                }
                .to_owned(),
            );
            a.steps.insert(
                0,
                Step::UnpinApp {
                    app: a.name.clone(),
                },
            );
        }
    }
    if a.op == Op::Noop && !a.steps.is_empty() {
        a.op = Op::Update;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{Observed, ObservedContainer};
    use crate::plan::{Plan, PlanOptions, plan, render_text};
    use crate::state::secrets::{Secret, SecretStore};

    const REV1: &str = "1111111111111111111111111111111111111111";
    const REV2: &str = "2222222222222222222222222222222222222222";
    const REV3: &str = "3333333333333333333333333333333333333333";

    /// The desired state of one app `blog` whose env says `version`, with a secret env.
    fn desired(version: &str, store: &SecretStore, revision: &str) -> Desired {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("blog.yaml"),
            format!(
                "apiVersion: berth/v1\nkind: App\nmetadata: {{name: blog}}\nspec:\n  image: \
                 busybox:1\n  env: {{VERSION: {version}}}\n  secretEnv: {{TOKEN: blog-token}}\n"
            ),
        )
        .unwrap();
        let manifests = crate::manifest::load_dir(dir.path()).expect("valid");
        let (desired, missing) = crate::desired::build_lenient(&manifests, store, revision);
        assert!(missing.is_empty(), "{missing:?}");
        desired
    }

    fn applied(app: &DesiredApp, revision: &str) -> AppliedSpec {
        AppliedSpec {
            revision: revision.into(),
            spec: serde_json::to_value(&app.spec).unwrap(),
            hash: app.hash.clone(),
            secrets: app
                .secrets
                .iter()
                .map(|(v, s)| (v.clone(), s.name().to_owned()))
                .collect(),
            at: "2026-12-01T00:00:00Z".into(),
        }
    }

    /// A host whose container `blog` runs `app`.
    fn running(app: &DesiredApp) -> Observed {
        let mut observed = Observed::default();
        observed.networks.insert("berth".into());
        observed.applied_apps.insert("blog".into());
        observed.containers.push(ObservedContainer {
            id: format!("id-{}", &app.hash[..8]),
            name: "blog".into(),
            app: "blog".into(),
            replica: 1,
            hash: app.hash.clone(),
            spec: Some(app.spec.clone()),
            state: "running".into(),
            deletion_policy: Default::default(),
            kind: ObjectKind::App,
            host_port: None,
        });
        observed
    }

    struct Case {
        store: SecretStore,
        _dir: tempfile::TempDir,
        v1: DesiredApp,
        v2: DesiredApp,
        history: BTreeMap<String, Vec<AppliedSpec>>,
    }

    fn case() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::new(dir.path());
        store.put(&Secret::new("blog-token", "hunter2")).unwrap();
        let v1 = desired("v1", &store, REV1).apps["blog"].clone();
        let v2 = desired("v2", &store, REV2).apps["blog"].clone();
        let history = [(
            "blog".to_owned(),
            vec![applied(&v1, REV1), applied(&v2, REV2)],
        )]
        .into();
        Case {
            store,
            _dir: dir,
            v1,
            v2,
            history,
        }
    }

    fn pin_of(case: &Case, by: PinnedBy) -> BTreeMap<String, Pin> {
        let pin = Pin {
            held: applied(&case.v1, REV1),
            declared_hash: declared_hash(&case.v2),
            by,
            at: "2026-12-01T00:00:00Z".into(),
        };
        [("blog".to_owned(), pin)].into()
    }

    fn planned(desired: &Desired, observed: &Observed) -> Plan {
        plan(
            desired,
            observed,
            PlanOptions {
                prune: true,
                now: 0,
            },
        )
    }

    fn blog(plan: &Plan) -> &Action {
        plan.actions.iter().find(|a| a.name == "blog").unwrap()
    }

    #[test]
    fn a_rollback_pins_the_previous_spec_and_replaces_the_container_with_it() {
        let c = case();
        let mut d = desired("v2", &c.store, REV3);
        let change = PinChange::Pin {
            app: "blog".into(),
            to: None,
            by: PinnedBy::Hand,
        };
        let missing = hold(
            &mut d,
            BTreeMap::new(),
            Some(&change),
            &c.history,
            &c.store,
            "t",
        )
        .expect("pinned");
        assert!(missing.is_empty());
        assert_eq!(d.apps["blog"].hash, c.v1.hash, "the held spec is planned");
        assert_eq!(d.apps["blog"].secrets["TOKEN"].expose(), "hunter2");
        let plan = planned(&d, &running(&c.v2));
        let a = blog(&plan);
        assert_eq!(a.op, Op::Update);
        assert_eq!(a.reasons[0], "rolled back to 1111111 by berth rollback");
        assert_eq!(a.reasons[1..], ["env VERSION changed"]);
        assert!(matches!(
            &a.steps[..],
            [Step::PinApp { app, revision }, Step::Replace { .. }] if app == "blog" && revision == REV1
        ));
    }

    #[test]
    fn a_pinned_app_is_held_while_its_declared_spec_is_unchanged() {
        let c = case();
        let mut d = desired("v2", &c.store, REV3);
        let pins = pin_of(&c, PinnedBy::Workflow("deploy-check".into()));
        hold(&mut d, pins, None, &BTreeMap::new(), &c.store, "t").unwrap();
        let plan = planned(&d, &running(&c.v1));
        let a = blog(&plan);
        assert_eq!(a.op, Op::Noop, "{a:?}");
        assert!(a.steps.is_empty());
        assert_eq!(
            a.reasons,
            ["hold at 1111111 (rolled back by workflow deploy-check)"]
        );
        let text = render_text(&plan, false);
        assert!(
            text.contains(
                "\n  = hold app blog at 1111111 (rolled back by workflow deploy-check)\n"
            ),
            "{text}"
        );
        assert!(text.contains("the host is in sync"), "{text}");
        let json = serde_json::to_value(&plan).unwrap();
        let blog = json["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "blog")
            .unwrap();
        assert_eq!(
            blog["held"],
            serde_json::json!({"revision": REV1, "by": {"workflow": "deploy-check"}})
        );
    }

    #[test]
    fn a_revision_that_changes_the_declared_spec_releases_the_pin() {
        let c = case();
        let mut d = desired("v3", &c.store, REV3);
        hold(
            &mut d,
            pin_of(&c, PinnedBy::Hand),
            None,
            &BTreeMap::new(),
            &c.store,
            "t",
        )
        .unwrap();
        assert_eq!(d.holds["blog"], Hold::Released(Release::DeclaredChanged));
        assert_eq!(d.apps["blog"].spec.env["VERSION"], "v3");
        let plan = planned(&d, &running(&c.v1));
        let a = blog(&plan);
        assert_eq!(a.reasons[0], "pin released: the declared spec changed");
        assert!(a.held.is_none());
        assert!(matches!(
            &a.steps[..],
            [Step::UnpinApp { app }, Step::Replace { .. }] if app == "blog"
        ));
    }

    #[test]
    fn a_release_removes_the_pin_even_when_the_container_needs_no_change() {
        let c = case();
        let mut d = desired("v2", &c.store, REV3);
        let change = PinChange::Release { app: "blog".into() };
        hold(
            &mut d,
            pin_of(&c, PinnedBy::Hand),
            Some(&change),
            &BTreeMap::new(),
            &c.store,
            "t",
        )
        .unwrap();
        let plan = planned(&d, &running(&c.v2));
        let a = blog(&plan);
        assert_eq!(a.op, Op::Update);
        assert_eq!(a.reasons, ["pin released by berth rollback --release"]);
        assert!(matches!(&a.steps[..], [Step::UnpinApp { .. }]));

        let mut d = desired("v2", &c.store, REV3);
        let e = hold(
            &mut d,
            BTreeMap::new(),
            Some(&change),
            &BTreeMap::new(),
            &c.store,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app blog is not pinned: there is no rollback to release"
        );
    }

    #[test]
    fn a_rollback_without_an_earlier_spec_or_of_an_unknown_revision_says_so() {
        let c = case();
        let pin = |to: Option<&str>| PinChange::Pin {
            app: "blog".into(),
            to: to.map(str::to_owned),
            by: PinnedBy::Hand,
        };
        let only_v2: BTreeMap<String, Vec<AppliedSpec>> =
            [("blog".to_owned(), vec![applied(&c.v2, REV2)])].into();
        for history in [&BTreeMap::new(), &only_v2] {
            let mut d = desired("v2", &c.store, REV3);
            let e = hold(
                &mut d,
                BTreeMap::new(),
                Some(&pin(None)),
                history,
                &c.store,
                "t",
            )
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                "app blog has no earlier deployment to roll back to (berth keeps the last 10 \
                 applied specs per app)"
            );
        }
        let mut d = desired("v2", &c.store, REV3);
        let e = hold(
            &mut d,
            BTreeMap::new(),
            Some(&pin(Some("abc"))),
            &c.history,
            &c.store,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app blog was never deployed at a revision abc…; the revisions it ran: 2222222, 1111111"
        );
        let mut d = desired("v2", &c.store, REV3);
        hold(
            &mut d,
            BTreeMap::new(),
            Some(&pin(Some("2222"))),
            &c.history,
            &c.store,
            "t",
        )
        .unwrap();
        assert!(
            matches!(&d.holds["blog"], Hold::Held { pin, new: true } if pin.held.revision == REV2)
        );
        let mut d = desired("v2", &c.store, REV3);
        let e = hold(
            &mut d,
            BTreeMap::new(),
            Some(&PinChange::Pin {
                app: "shop".into(),
                to: None,
                by: PinnedBy::Hand,
            }),
            &c.history,
            &c.store,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "shop is not an app of these manifests; only apps can be rolled back"
        );
    }

    #[test]
    fn a_held_spec_takes_its_secrets_from_the_store_as_they_are_now() {
        let c = case();
        c.store.put(&Secret::new("blog-token", "rotated")).unwrap();
        let mut d = desired("v2", &c.store, REV3);
        assert_ne!(
            d.apps["blog"].hash, c.v2.hash,
            "the secret's value is in the hash"
        );
        hold(
            &mut d,
            pin_of(&c, PinnedBy::Hand),
            None,
            &BTreeMap::new(),
            &c.store,
            "t",
        )
        .unwrap();
        let app = &d.apps["blog"];
        assert_eq!(app.secrets["TOKEN"].expose(), "rotated");
        assert_eq!(
            app.spec.secret_env["TOKEN"],
            c.store.get("blog-token").unwrap().redacted()
        );
        assert_ne!(app.hash, c.v1.hash, "the container gets the value in use");
        assert!(
            matches!(&d.holds["blog"], Hold::Held { new: false, .. }),
            "a rotated secret does not release the pin"
        );

        // A secret only the held spec names, gone from the store, is missing.
        let mut d = desired("v2", &c.store, REV3);
        let mut pins = pin_of(&c, PinnedBy::Hand);
        let held = &mut pins.get_mut("blog").unwrap().held;
        held.secrets.insert("OLD".into(), "gone-token".into());
        held.spec["secretEnv"]["OLD"] = "<secret:gone-token sha256:0123abcd>".into();
        let missing = hold(&mut d, pins, None, &BTreeMap::new(), &c.store, "t").unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].resource, "App/blog");
        assert_eq!(missing[0].variable.as_deref(), Some("OLD"));
        assert_eq!(
            d.apps["blog"].spec.secret_env["OLD"],
            "<secret:gone-token unavailable>"
        );
    }
}
