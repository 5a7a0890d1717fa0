//! The lifecycle inventory in the store: clusters, with their hosts and
//! DPUs, by name.

use super::{Store, StoreError, append_audit, decode, encode, now_ms, re};
use crate::lifecycle::Cluster;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// Cluster name -> [`Cluster`] (MessagePack with field names).
pub(super) const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");

fn read_all<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
) -> Result<Vec<Cluster>, StoreError> {
    t.iter()
        .map_err(re("reading clusters"))?
        .map(|e| {
            let (k, v) = e.map_err(re("reading clusters"))?;
            decode("clusters", k.value(), v.value())
        })
        .collect()
}

impl Store {
    /// Every cluster, by name.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        let tx = self.db.begin_read().map_err(re("reading"))?;
        read_all(&tx.open_table(CLUSTERS).map_err(re("reading clusters"))?)
    }

    /// Changes the clusters with `change` in one durable transaction, by
    /// `who`, recorded in the audit log as `what` (with the error if
    /// `change` refuses: then no cluster changes).
    ///
    /// # Errors
    /// What `change` returns; [`StoreError`] (as `E`) if the store fails.
    pub fn update_clusters<T, E: From<StoreError> + std::fmt::Display>(
        &self,
        who: &str,
        what: &str,
        change: impl FnOnce(&mut Vec<Cluster>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.committer.durable(|tx, current| {
            let mut t = tx.open_table(CLUSTERS).map_err(re("writing clusters"))?;
            let before = read_all(&t)?;
            let mut after = before.clone();
            let changed = change(&mut after);
            let result = match &changed {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            if changed.is_ok() {
                for gone in before
                    .iter()
                    .filter(|b| !after.iter().any(|a| a.name == b.name))
                {
                    t.remove(gone.name.as_str())
                        .map_err(re("writing clusters"))?;
                }
                for c in after.iter().filter(|a| !before.contains(a)) {
                    t.insert(c.name.as_str(), encode(c).as_slice())
                        .map_err(re("writing clusters"))?;
                }
            }
            drop(t);
            append_audit(tx, now_ms(), who, what, &result)?;
            Ok((changed, current))
        })?
    }
}
