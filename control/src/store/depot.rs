//! The lifecycle depot's imported manifests in the store, by kind, name
//! and version.

use super::{Store, StoreError, append_audit, decode, encode, now_ms, re};
use crate::lifecycle::depot::Imported;
use redb::{ReadableTable, TableDefinition};

/// `Kind/name/version` -> [`Imported`] (MessagePack with field names).
pub(super) const DEPOT: TableDefinition<&str, &[u8]> = TableDefinition::new("depot");

/// A manifest whose kind, name and version are imported already, with
/// other content.
#[derive(Debug, thiserror::Error)]
#[error("{key} is in the depot already with other content: publish it under a new version")]
pub struct Clash {
    /// Its kind, name and version.
    pub key: String,
}

impl Store {
    /// Every imported manifest, by kind, name and version.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn depot(&self) -> Result<Vec<Imported>, StoreError> {
        self.read_named(DEPOT, "depot")
    }

    /// Records `imported` (by `who`) in one durable transaction; one
    /// already there with the same content is kept as it is. Returns how
    /// many were new.
    ///
    /// # Errors
    /// [`Clash`] (inside `Ok`) if one is there with other content: then
    /// nothing is recorded; [`StoreError`] if the store fails.
    pub fn record_depot(
        &self,
        imported: &[Imported],
        who: &str,
    ) -> Result<Result<usize, Clash>, StoreError> {
        let what = format!("import {} manifests into the depot", imported.len());
        self.committer.durable(|tx, current| {
            let mut t = tx.open_table(DEPOT).map_err(re("writing the depot"))?;
            let mut new = Vec::new();
            let mut clash = None;
            for i in imported {
                let key = i.key();
                let there = t.get(key.as_str()).map_err(re("writing the depot"))?;
                let there = there
                    .map(|v| decode::<Imported>("depot", &key, v.value()))
                    .transpose()?;
                match there {
                    None => new.push((key, i)),
                    Some(there) if there.manifest == i.manifest => {}
                    Some(_) => {
                        clash = Some(Clash { key });
                        break;
                    }
                }
            }
            let result = match &clash {
                Some(c) => c.to_string(),
                None => {
                    for (key, i) in &new {
                        t.insert(key.as_str(), encode(*i).as_slice())
                            .map_err(re("writing the depot"))?;
                    }
                    "ok".to_string()
                }
            };
            drop(t);
            append_audit(tx, now_ms(), who, &what, &result)?;
            Ok((clash.map_or(Ok(new.len()), Err), current))
        })
    }
}
