//! The secrets one pass uses: read from the store, or — for the secrets berth generates
//! (database passwords, private URL tokens) — generated in memory, so that the plan
//! can name each one it will write and only apply writes them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::state::secrets::{Secret, SecretError, SecretSource, SecretStore};

/// Whether missing generated secrets get a value in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// A pass that will apply: each missing generated secret gets a new value, which
    /// the plan's `GenerateSecret` step writes to the store.
    Generate,
    /// A dry run: a missing generated secret stays missing and shows as "to be generated".
    Preview,
}

/// The secret store as one pass sees it. It never writes.
#[derive(Debug)]
pub struct PassSecrets {
    store: SecretStore,
    generation: Generation,
    generated: Mutex<BTreeMap<String, Option<Secret>>>,
}

impl PassSecrets {
    /// A view of `store`.
    pub fn new(store: SecretStore, generation: Generation) -> PassSecrets {
        PassSecrets {
            store,
            generation,
            generated: Mutex::new(BTreeMap::new()),
        }
    }

    /// Secret `name`: one generated in this pass, or the store's.
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        if let Some(Some(s)) = self.lock().get(name) {
            return Ok(s.clone());
        }
        self.store.get(name)
    }

    /// Secret `name`, generated (in memory) when the store lacks it and this pass may
    /// generate; `Ok(None)` in a dry run when it does not exist yet.
    pub fn generated(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        self.generated_with(name, |store| store.generate(name))
    }

    /// Like [`PassSecrets::generated`], with the value made by `make` (an ACME
    /// account's key rather than a random token).
    pub fn generated_with(
        &self,
        name: &str,
        make: impl FnOnce(&SecretStore) -> Result<Secret, SecretError>,
    ) -> Result<Option<Secret>, SecretError> {
        match self.get(name) {
            Ok(s) => Ok(Some(s)),
            Err(SecretError::Missing { .. }) if self.generation == Generation::Generate => {
                let secret = make(&self.store)?;
                self.lock().insert(name.to_owned(), Some(secret.clone()));
                Ok(Some(secret))
            }
            Err(SecretError::Missing { .. }) => {
                self.lock().insert(name.to_owned(), None);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The secrets this pass generates, by name: what apply will write. A dry run
    /// names them without values.
    pub fn new_secrets(&self) -> BTreeMap<String, Option<Secret>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Secret>>> {
        self.generated.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SecretSource for PassSecrets {
    fn get(&self, name: &str) -> Result<Secret, SecretError> {
        PassSecrets::get(self, name)
    }
}
