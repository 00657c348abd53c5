//! Generations of the read models: each read model lives in a tree of the projection's
//! database, and a rebuild fills a new tree beside it, then switches queries and the projector
//! over in one step ([`crate::rebuild`]).
//!
//! The tree `generations` says which tree each read model answers from, and which one a
//! rebuild is filling:
//!
//! | key | value |
//! |---|---|
//! | `live/{model}` | the tree of the live generation |
//! | `rebuild/{model}` | the tree a rebuild is filling; present from its start to its switch |
//! | `next` | the number of the next generation (u64 BE) |
//!
//! A database from before generations has no entry: its trees (`cases`, `accounts`, `deals`)
//! are then the live generations. A read model with neither an entry nor a tree with data is
//! new (a new database, files deleted, or a read model added to the code): it starts empty
//! and is built from the stream's record.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{Mutex, MutexGuard};

use crate::kernel::ReadModelError;

/// The read models a rebuild can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModelName {
    Cases,
    Accounts,
    Deals,
}

impl ReadModelName {
    pub const ALL: [ReadModelName; 3] = [
        ReadModelName::Cases,
        ReadModelName::Accounts,
        ReadModelName::Deals,
    ];

    /// The name on the command line and in the API, and the tree of the first generation.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadModelName::Cases => "cases",
            ReadModelName::Accounts => "accounts",
            ReadModelName::Deals => "deals",
        }
    }

    /// The topic the read model is fed from.
    pub fn topic(self) -> &'static str {
        use event_backbone::topics::{COLLECTIONS_DEALS, DEBT_CASES, PAYGO_SNAPSHOTS};
        match self {
            ReadModelName::Cases => DEBT_CASES.name,
            ReadModelName::Accounts => PAYGO_SNAPSHOTS.name,
            ReadModelName::Deals => COLLECTIONS_DEALS.name,
        }
    }
}

impl std::fmt::Display for ReadModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReadModelName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown read model {s:?} (cases, accounts or deals)"))
    }
}

/// Where the live generation of one read model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTree {
    pub tree: String,
    /// No generation was ever built: the read model starts empty and must be built.
    pub fresh: bool,
    /// A rebuild was filling this tree when the process stopped: it starts again.
    pub interrupted: Option<String>,
}

/// The projection database's generations.
#[derive(Clone)]
pub struct Generations {
    db: sled::Db,
    meta: sled::Tree,
}

fn live_key(model: ReadModelName) -> String {
    format!("live/{model}")
}

fn rebuild_key(model: ReadModelName) -> String {
    format!("rebuild/{model}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Generations {
    pub fn open(db: &sled::Db) -> Result<Self, ReadModelError> {
        Ok(Self {
            db: db.clone(),
            meta: db.open_tree("generations")?,
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The live tree of `model`, recorded the first time it is asked for.
    pub fn live(&self, model: ReadModelName) -> Result<LiveTree, ReadModelError> {
        let interrupted = self.meta.get(rebuild_key(model))?.map(|t| text(&t));
        if let Some(tree) = self.meta.get(live_key(model))? {
            return Ok(LiveTree {
                tree: text(&tree),
                fresh: false,
                interrupted,
            });
        }
        let base = model.as_str();
        let existing = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == base.as_bytes())
            && !self.db.open_tree(base)?.is_empty();
        self.meta.insert(live_key(model), base)?;
        self.meta.flush()?;
        Ok(LiveTree {
            tree: base.to_owned(),
            fresh: !existing,
            interrupted,
        })
    }

    /// Starts a generation of `model`: a new, empty tree, recorded as being filled. A tree left
    /// by an interrupted rebuild is dropped first.
    pub fn begin(&self, model: ReadModelName) -> Result<String, ReadModelError> {
        self.abandon(model)?;
        let number = self
            .meta
            .update_and_fetch("next", |n| {
                let n = n
                    .and_then(|b| b.try_into().ok())
                    .map_or(2, u64::from_be_bytes);
                Some((n + 1).to_be_bytes().to_vec())
            })?
            .and_then(|b| b.as_ref().try_into().ok())
            .map_or(2, |b| u64::from_be_bytes(b) - 1);
        let tree = format!("{model}.{number}");
        self.db.drop_tree(&tree)?;
        self.meta.insert(rebuild_key(model), tree.as_str())?;
        self.meta.flush()?;
        Ok(tree)
    }

    /// Drops the tree a rebuild of `model` was filling, if any.
    pub fn abandon(&self, model: ReadModelName) -> Result<(), ReadModelError> {
        if let Some(tree) = self.meta.get(rebuild_key(model))? {
            self.db.drop_tree(&tree)?;
            self.meta.remove(rebuild_key(model))?;
            self.meta.flush()?;
        }
        Ok(())
    }

    /// Makes `tree` the live generation of `model`, durably (everything written to it first).
    pub fn switch(&self, model: ReadModelName, tree: &str) -> Result<(), ReadModelError> {
        self.db.flush()?;
        let mut batch = sled::Batch::default();
        batch.insert(live_key(model).as_bytes(), tree);
        batch.remove(rebuild_key(model).as_bytes());
        self.meta.apply_batch(batch)?;
        self.meta.flush()?;
        Ok(())
    }

    /// Drops the trees of generations neither live nor being built (one replaced by a rebuild
    /// whose process stopped before it dropped it); returns their names.
    pub fn drop_orphans(&self) -> Result<Vec<String>, ReadModelError> {
        let mut kept = Vec::new();
        for entry in self.meta.iter() {
            let (key, tree) = entry?;
            if key.starts_with(b"live/") || key.starts_with(b"rebuild/") {
                kept.push(text(&tree));
            }
        }
        let mut dropped = Vec::new();
        for name in self.db.tree_names() {
            let name = text(&name);
            let generation = ReadModelName::ALL.iter().any(|m| {
                name == m.as_str()
                    || name
                        .strip_prefix(m.as_str())
                        .and_then(|n| n.strip_prefix('.'))
                        .is_some_and(|n| n.parse::<u64>().is_ok())
            });
            // A model's first tree is only an orphan once that model has an entry.
            let recorded = ReadModelName::ALL
                .iter()
                .filter(|m| name.starts_with(m.as_str()))
                .all(|m| self.meta.contains_key(live_key(*m)).unwrap_or(false));
            if generation && recorded && !kept.contains(&name) {
                self.db.drop_tree(name.as_bytes())?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    /// Drops a generation no longer live.
    pub fn drop_generation(&self, tree: &str) -> Result<(), ReadModelError> {
        self.db.drop_tree(tree)?;
        Ok(())
    }
}

/// The live generation of a read model, which a rebuild replaces: queries take the current one
/// per request, the projector per batch, under its turn.
pub struct Live<M> {
    inner: Arc<Inner<M>>,
}

struct Inner<M> {
    model: RwLock<M>,
    /// Held by the projector while it applies a batch, and by a rebuild while it switches:
    /// a switch falls between two batches.
    turn: Mutex<()>,
}

impl<M> Clone for Live<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Clone> Live<M> {
    pub fn new(model: M) -> Self {
        Self {
            inner: Arc::new(Inner {
                model: RwLock::new(model),
                turn: Mutex::new(()),
            }),
        }
    }

    /// The generation answering now.
    pub fn current(&self) -> M {
        self.inner
            .model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until no batch is being applied, and holds off the next one.
    pub async fn turn(&self) -> MutexGuard<'_, ()> {
        self.inner.turn.lock().await
    }

    /// Puts `model` in place of the current generation, which is returned. Call it holding
    /// the turn.
    pub(crate) fn replace(&self, model: M) -> M {
        std::mem::replace(
            &mut *self
                .inner
                .model
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            model,
        )
    }
}

impl<M: Clone> From<M> for Live<M> {
    fn from(model: M) -> Self {
        Live::new(model)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names(db: &sled::Db) -> Vec<String> {
        let mut names: Vec<String> = db
            .tree_names()
            .iter()
            .map(|n| text(n))
            .filter(|n| n.starts_with("cases"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_generation_is_begun_interrupted_begun_again_switched_and_the_old_one_dropped() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let generations = Generations::open(&db).unwrap();
        let first = generations.live(ReadModelName::Cases).unwrap();
        assert_eq!((first.tree.as_str(), first.fresh), ("cases", true));
        db.open_tree("cases").unwrap().insert("c", "1").unwrap();

        let target = generations.begin(ReadModelName::Cases).unwrap();
        assert_eq!(target, "cases.2");
        db.open_tree(&target)
            .unwrap()
            .insert("half", "built")
            .unwrap();
        // A stop: the live generation is as it was, the half-built one is named.
        let live = generations.live(ReadModelName::Cases).unwrap();
        assert_eq!(live.tree, "cases");
        assert!(!live.fresh);
        assert_eq!(live.interrupted.as_deref(), Some("cases.2"));

        let target = generations.begin(ReadModelName::Cases).unwrap();
        assert_eq!(target, "cases.3");
        assert_eq!(names(&db), ["cases"], "the half-built tree is gone");
        db.open_tree(&target).unwrap().insert("c", "1").unwrap();
        generations.switch(ReadModelName::Cases, &target).unwrap();
        let live = generations.live(ReadModelName::Cases).unwrap();
        assert_eq!((live.tree.as_str(), live.interrupted), ("cases.3", None));
        assert_eq!(generations.drop_orphans().unwrap(), ["cases"]);
        assert_eq!(names(&db), ["cases.3"]);
    }

    #[test]
    fn trees_of_a_database_from_before_generations_are_the_live_ones() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("deals").unwrap().insert("d", "1").unwrap();
        let generations = Generations::open(&db).unwrap();
        let live = generations.live(ReadModelName::Deals).unwrap();
        assert_eq!((live.tree.as_str(), live.fresh), ("deals", false));
        // The other models have no entry yet: their first trees are not orphans.
        db.open_tree("cases").unwrap();
        assert!(generations.drop_orphans().unwrap().is_empty());
        assert!("cases".parse::<ReadModelName>().is_ok());
        assert!("casez".parse::<ReadModelName>().is_err());
    }
}
