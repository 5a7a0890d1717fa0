//! The remediation journal in the store: each remediation's record, written
//! durably before each step acts.

use super::{Store, StoreError, encode, re};
use crate::lifecycle::remediation::Remediation;
use redb::TableDefinition;

/// Zero-padded id -> [`Remediation`] (MessagePack with field names).
pub(super) const REMEDIATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("remediations");

fn key(id: u64) -> String {
    format!("{id:016}")
}

impl Store {
    /// Every remediation, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn remediations(&self) -> Result<Vec<Remediation>, StoreError> {
        self.read_named(REMEDIATIONS, "remediations")
    }

    /// Records `r` (new or changed) in one durable transaction: once this
    /// returns, a crash cannot lose it.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn put_remediation(&self, r: &Remediation) -> Result<(), StoreError> {
        self.committer.durable(|tx, current| {
            tx.open_table(REMEDIATIONS)
                .map_err(re("writing the remediation journal"))?
                .insert(key(r.id).as_str(), encode(r).as_slice())
                .map_err(re("writing the remediation journal"))?;
            Ok(((), current))
        })
    }
}
