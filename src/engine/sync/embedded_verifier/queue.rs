//! The documents waiting to be compared again, in memory, saved to disk at checkpoints.
//!
//! Writing every change to a queue on the destination would cost the destination several
//! writes per change the sync applies (measured: change application fell to a quarter of its
//! rate). Most entries live for a second or two, so the queue is kept in memory and saved
//! every few seconds, with the change streams' resume tokens saved after it: a restart
//! resumes both streams from their last checkpoint and replays what came after, so nothing is
//! lost, and only the entries that outlive a checkpoint are ever written.

use std::collections::{HashMap, HashSet};

use bson::{Bson, DateTime, Document, RawBson, Timestamp};

use crate::engine::sync::embedded_verifier::store::{key, Queued, Recheck, RecheckKey};
use crate::verify::walk::id_key;

/// An entry's identity: namespace and `_id` bytes.
type Key = (String, Vec<u8>);

fn key_of(ns: &str, id: &Bson) -> Key {
    let bytes = RawBson::try_from(id.clone())
        .map(|id| id_key(&id))
        .unwrap_or_default();
    (ns.to_string(), bytes)
}

/// Beyond this many entries the verifier stops reading its change streams until rechecks
/// have drained some (its lag then grows, and holds `canCommit` back past 30 s).
pub const MAX_PENDING: usize = 100_000;

#[derive(Default)]
pub struct Queue {
    pending: HashMap<Key, Recheck>,
    /// Entries as last written to disk: what a checkpoint must delete or rewrite.
    on_disk: HashSet<Key>,
    /// Entries changed since the last checkpoint.
    changed: HashSet<Key>,
    /// Keys on disk whose entries left the queue since the last checkpoint.
    removed: HashMap<Key, Document>,
}

impl Queue {
    /// The queue as saved at the last checkpoint.
    pub fn from_saved(entries: Vec<Recheck>) -> Self {
        let mut q = Queue::default();
        for e in entries {
            let k = key_of(&e.key.ns, &e.key.id);
            q.on_disk.insert(k.clone());
            q.pending.insert(k, e);
        }
        q
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// Queues documents for a comparison. One already queued keeps its place; its due time
    /// only moves later, and a change on the source voids its streak of differences.
    pub fn add(&mut self, items: &[Queued]) {
        for q in items {
            let k = key_of(&q.ns, &q.id);
            let e = self.pending.entry(k.clone()).or_insert_with(|| Recheck {
                key: RecheckKey {
                    ns: q.ns.clone(),
                    id: q.id.clone(),
                },
                due: q.due,
                after: DateTime::from_millis(0),
                attempts: 0,
                source_hash: None,
                confirmed: false,
                kind: None,
                detail: None,
            });
            e.due = e.due.max(q.due);
            if q.source_changed {
                e.attempts = 0;
                e.confirmed = false;
                e.after = DateTime::from_millis(0);
            }
            self.changed.insert(k);
        }
    }

    /// Marks entries as written to disk already (by the initial pass, which saves what it
    /// finds before recording a collection as compared).
    pub fn saved(&mut self, items: &[Queued]) {
        for q in items {
            let k = key_of(&q.ns, &q.id);
            if self.pending.contains_key(&k) {
                self.on_disk.insert(k);
            }
        }
    }

    /// Up to `limit` entries that are due: the applier has applied the source up to
    /// `applied` (all entries, when `None`), and their back-off is over.
    pub fn due(&self, applied: Option<Timestamp>, limit: usize) -> Vec<Recheck> {
        let now = DateTime::now();
        self.pending
            .values()
            .filter(|e| applied.is_none_or(|a| e.due <= a && e.after <= now))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Up to `limit` entries not (yet) confirmed different.
    pub fn unconfirmed(&self, limit: usize) -> Vec<Recheck> {
        self.pending
            .values()
            .filter(|e| !e.confirmed)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The first `limit` confirmed differences (in a stable order), and how many there are.
    pub fn confirmed(&self, limit: usize) -> (Vec<Recheck>, u64) {
        let mut all: Vec<&Recheck> = self.pending.values().filter(|e| e.confirmed).collect();
        let count = all.len() as u64;
        all.sort_by(|a, b| {
            (&a.key.ns, a.key.id.to_string()).cmp(&(&b.key.ns, b.key.id.to_string()))
        });
        (all.into_iter().take(limit).cloned().collect(), count)
    }

    /// Every entry, confirmed differences first (at commit, once all were compared, each one
    /// left differs).
    pub fn differing(&self, limit: usize) -> (Vec<Recheck>, u64) {
        let (mut first, _) = self.confirmed(limit);
        if first.len() < limit {
            first.extend(
                self.pending
                    .values()
                    .filter(|e| !e.confirmed)
                    .take(limit - first.len())
                    .cloned(),
            );
        }
        (first, self.pending.len() as u64)
    }

    /// Records a comparison: `equal` keys leave the queue, `different` entries are updated.
    pub fn compared(&mut self, equal: &[Document], different: Vec<Recheck>) {
        for k in equal {
            let (Ok(ns), Some(id)) = (k.get_str("ns"), k.get("id")) else {
                continue;
            };
            let k = key_of(ns, id);
            if self.pending.remove(&k).is_some() && self.on_disk.contains(&k) {
                self.removed.insert(k.clone(), key(ns, id));
            }
            self.changed.insert(k);
        }
        for e in different {
            let k = key_of(&e.key.ns, &e.key.id);
            self.changed.insert(k.clone());
            self.pending.insert(k, e);
        }
    }

    /// What a checkpoint must write: entries to save, keys to delete. Marks them written.
    pub fn take_changes(&mut self) -> (Vec<Recheck>, Vec<Document>) {
        let mut save = Vec::new();
        let mut delete = Vec::new();
        for k in self.changed.drain() {
            match self.pending.get(&k) {
                Some(e) => {
                    save.push(e.clone());
                    self.on_disk.insert(k);
                }
                None => {
                    if let Some(doc) = self.removed.remove(&k) {
                        self.on_disk.remove(&k);
                        delete.push(doc);
                    }
                }
            }
        }
        self.removed.clear();
        (save, delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: i32, time: u32, source_changed: bool) -> Queued {
        Queued {
            ns: "a.b".into(),
            id: Bson::Int32(id),
            due: Timestamp { time, increment: 0 },
            source_changed,
        }
    }

    #[test]
    fn entries_merge_fall_due_and_only_changes_reach_the_checkpoint() {
        let mut queue = Queue::default();
        queue.add(&[q(1, 10, true), q(2, 20, false), q(1, 5, false)]);
        assert_eq!(queue.len(), 2);
        let t = |time| Some(Timestamp { time, increment: 0 });
        // Due once the applier passes the latest time it was queued at.
        assert_eq!(queue.due(t(9), 10).len(), 0);
        assert_eq!(queue.due(t(10), 10).len(), 1);
        assert_eq!(queue.due(None, 10).len(), 2);
        let (save, delete) = queue.take_changes();
        assert_eq!((save.len(), delete.len()), (2, 0));
        assert_eq!(queue.take_changes().0.len(), 0, "nothing changed since");
        // 1 compares equal and leaves; 2 differs and is rewritten.
        let mut two = queue
            .due(None, 10)
            .into_iter()
            .find(|e| e.key.id == Bson::Int32(2))
            .unwrap();
        two.attempts = 1;
        two.confirmed = true;
        queue.compared(&[key("a.b", &Bson::Int32(1))], vec![two]);
        assert_eq!(queue.confirmed(10).1, 1);
        let (save, delete) = queue.take_changes();
        assert_eq!(save.len(), 1);
        assert_eq!(delete, vec![key("a.b", &Bson::Int32(1))]);
        // A change on the source voids the streak.
        queue.add(&[q(2, 30, true)]);
        assert_eq!(queue.confirmed(10).1, 0);
        assert_eq!(queue.unconfirmed(10).len(), 1);
    }
}
