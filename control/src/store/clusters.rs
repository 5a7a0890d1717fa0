//! The lifecycle inventory in the store: clusters, with their hosts and
//! DPUs, by name.

use super::{Store, StoreError, append_audit, encode, named_records, now_ms, re};
use crate::lifecycle::Cluster;
use redb::TableDefinition;

/// Cluster name -> [`Cluster`] (MessagePack with field names).
pub(super) const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");

impl Store {
    /// Every cluster, by name.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        self.read_named(CLUSTERS, "clusters")
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
            let before: Vec<Cluster> = named_records(&t, "clusters")?;
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
