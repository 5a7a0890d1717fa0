//! The lifecycle depot's imported manifests in the store, by kind, name
//! and version.

use super::{Store, StoreError, append_audit, decode, encode, now_ms, re};
use crate::lifecycle::depot::Imported;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

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
        let tx = self.db.begin_read().map_err(re("reading"))?;
        let t = tx.open_table(DEPOT).map_err(re("reading the depot"))?;
        t.iter()
            .map_err(re("reading the depot"))?
            .map(|e| {
                let (k, v) = e.map_err(re("reading the depot"))?;
                decode("depot", k.value(), v.value())
            })
            .collect()
    }

    /// Records `imported` (by `who`) in one durable transaction; one
    /// already there with the same content is kept as it is.
    ///
    /// # Errors
    /// [`Clash`] (inside `Ok`) if one is there with other content: then
    /// nothing is recorded; [`StoreError`] if the store fails.
    pub fn record_depot(
        &self,
        imported: &[Imported],
        who: &str,
    ) -> Result<Result<(), Clash>, StoreError> {
        let what = format!("import {} manifests into the depot", imported.len());
        self.committer.durable(|tx, current| {
            let mut t = tx.open_table(DEPOT).map_err(re("writing the depot"))?;
            let mut clash = None;
            for i in imported {
                let key = i.key();
                if let Some(v) = t.get(key.as_str()).map_err(re("writing the depot"))? {
                    let there: Imported = decode("depot", &key, v.value())?;
                    if there.manifest != i.manifest {
                        clash = Some(Clash { key });
                        break;
                    }
                }
            }
            let result = match &clash {
                Some(c) => c.to_string(),
                None => {
                    for i in imported {
                        let key = i.key();
                        if t.get(key.as_str())
                            .map_err(re("writing the depot"))?
                            .is_none()
                        {
                            t.insert(key.as_str(), encode(i).as_slice())
                                .map_err(re("writing the depot"))?;
                        }
                    }
                    "ok".to_string()
                }
            };
            drop(t);
            append_audit(tx, now_ms(), who, &what, &result)?;
            Ok((clash.map_or(Ok(()), Err), current))
        })
    }
}
