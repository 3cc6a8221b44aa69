//! The run's user ids, as the pipeline writes them: which users a merge replaces, and which
//! rows of a user_id the run holds more than once must go ("the last item wins").
//!
//! A `KeyTracker` wraps the writer of one item table. Every batch of items reaches the three
//! tables' writers in item order, and each [`ColumnBatch`] says where each item's rows end
//! (`item_ends`), so each tracker numbers items the same way: the users tracker records each
//! user's last item, the grants and attributes trackers the last item in which the user had
//! rows and how many. After the pipeline, a repeated user keeps only the rows of its last item.
//! Memory: one small entry per distinct user_id of the run (SPEC section 7 allows the set).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::{Array, StringArray};

use zephr_core::schema::Table;
use zephr_core::table::ColumnBatch;
use zephr_sink::{TableWriter, WriteError, WrittenFile};

/// What the run holds of one user_id.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyInfo {
    /// Items of this user in the run (users rows).
    pub items: u32,
    /// The number (from 0, run-wide) of the user's last item.
    pub last_item: u64,
    /// Per child table (grants, attributes): the last item with rows of this user, and its rows.
    pub child_last: [(u64, u32); 2],
}

/// The run's user ids, filled by the [`KeyTracker`]s.
#[derive(Debug, Default)]
pub(crate) struct RunKeys {
    keys: Mutex<HashMap<Box<str>, KeyInfo>>,
    /// Items seen so far by each table's tracker (the next item's number).
    items: [AtomicU64; 3],
}

impl RunKeys {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, KeyInfo>> {
        // Every change is one insert or field update: a panicked writer leaves nothing half-done.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the run holds `user_id`.
    pub fn contains(&self, user_id: &str) -> bool {
        self.lock().contains_key(user_id)
    }

    /// Distinct user ids of the run.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Items whose user_id an earlier item of the run already had (dropped: the last wins).
    pub fn repeated_items(&self) -> u64 {
        self.lock()
            .values()
            .map(|k| u64::from(k.items.saturating_sub(1)))
            .sum()
    }

    /// For every repeated user_id: how many of its rows in `table` (in the run's order) come
    /// from its last item, the rows to keep at the end of its rows. Empty when nothing repeats.
    pub(crate) fn keep_last(&self, table: Table) -> HashMap<Box<str>, u32> {
        self.lock()
            .iter()
            .filter(|(_, k)| k.items > 1)
            .map(|(id, k)| {
                let keep = match child_index(table) {
                    None => 1,
                    Some(i) => {
                        let (item, rows) = k.child_last[i];
                        if item == k.last_item { rows } else { 0 }
                    }
                };
                (id.clone(), keep)
            })
            .collect()
    }

    /// Records one batch of `table` (its rows' user_id column and item ends).
    fn record(&self, table: Table, batch: &ColumnBatch) {
        let Some(arrow) = &batch.arrow else { return };
        let Some(ids) = arrow.column(0).as_any().downcast_ref::<StringArray>() else {
            return;
        };
        let counter = &self.items[table as usize];
        let first = counter.fetch_add(batch.item_ends.len() as u64, Ordering::SeqCst);
        let mut keys = self.lock();
        let mut start = 0usize;
        for (i, &end) in batch.item_ends.iter().enumerate() {
            let end = end as usize;
            if end > start && end <= ids.len() && !ids.is_null(start) {
                let item = first + i as u64;
                let id = ids.value(start);
                match child_index(table) {
                    None => {
                        let info = keys.entry(Box::from(id)).or_default();
                        info.items += 1;
                        info.last_item = item;
                    }
                    Some(c) => {
                        let info = keys.entry(Box::from(id)).or_default();
                        info.child_last[c] = (item, (end - start) as u32);
                    }
                }
            }
            start = end;
        }
    }
}

/// Grants and attributes: their slot in [`KeyInfo::child_last`]; users: none.
fn child_index(table: Table) -> Option<usize> {
    match table {
        Table::Users => None,
        Table::Grants => Some(0),
        Table::Attributes => Some(1),
    }
}

/// Records the user ids of one item table's batches in [`RunKeys`], then hands them on.
pub(crate) struct KeyTracker {
    table: Table,
    keys: Arc<RunKeys>,
    inner: Box<dyn TableWriter>,
}

impl KeyTracker {
    /// Wraps `inner`, the writer of `table`.
    pub fn new(table: Table, keys: Arc<RunKeys>, inner: Box<dyn TableWriter>) -> KeyTracker {
        KeyTracker { table, keys, inner }
    }
}

impl TableWriter for KeyTracker {
    fn write(&mut self, batch: &ColumnBatch) -> Result<(), WriteError> {
        self.keys.record(self.table, batch);
        self.inner.write(batch)
    }

    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Schema};

    fn batch(ids: &[&str], item_ends: &[u32]) -> ColumnBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )]));
        let array = Arc::new(StringArray::from(ids.to_vec()));
        ColumnBatch {
            rows: ids.len(),
            csv: Vec::new(),
            arrow: Some(RecordBatch::try_new(schema, vec![array]).unwrap()),
            item_ends: item_ends.to_vec(),
        }
    }

    #[test]
    fn the_last_item_of_a_user_wins_in_every_table() {
        let keys = RunKeys::default();
        // Items: a (2 grants), b (1 grant), a again (no grant), c, then a third a (3 grants).
        keys.record(Table::Users, &batch(&["a", "b", "a"], &[1, 2, 3]));
        keys.record(Table::Users, &batch(&["c", "a"], &[1, 2]));
        keys.record(Table::Grants, &batch(&["a", "a", "b"], &[2, 3, 3]));
        keys.record(Table::Grants, &batch(&["a", "a", "a"], &[0, 3]));
        // Attributes: a has one in its first item only.
        keys.record(Table::Attributes, &batch(&["a"], &[1, 1, 1]));
        keys.record(Table::Attributes, &batch(&[], &[0, 0]));
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.repeated_items(), 2);
        assert!(keys.contains("b") && !keys.contains("d"));
        let users = keys.keep_last(Table::Users);
        assert_eq!(users.len(), 1);
        assert_eq!(users["a"], 1);
        assert_eq!(keys.keep_last(Table::Grants)["a"], 3);
        assert_eq!(keys.keep_last(Table::Attributes)["a"], 0);
    }

    #[test]
    fn nothing_to_drop_without_repeats() {
        let keys = RunKeys::default();
        keys.record(Table::Users, &batch(&["a", "b"], &[1, 2]));
        assert_eq!(keys.repeated_items(), 0);
        assert!(keys.keep_last(Table::Grants).is_empty());
    }
}
