//! The daemon's state and every change it makes: the desired rules, the
//! running datapath instances, and the store that makes both durable.
//!
//! Changes are serialised. A rule change is applied to the running
//! datapaths first (each backend compiles it, atomically: a refusal
//! changes nothing), then committed to the store, then made the desired
//! state in memory. A crash between the datapath and the store leaves the
//! datapath one generation ahead; the next start adopts it and converges
//! it back to the store's generation, so the two again hold one whole
//! generation.

mod bond;
mod error;
mod instances;
mod lifecycle_ops;

pub use crate::lifecycle::compliance::Precheck;
pub use bond::{BondError, active as bond_active, announce, make_active as steer_bond};
pub use error::ControlError;
pub use instances::{InstanceStatus, Running};
pub use lifecycle_ops::Remediate;
pub(crate) use lifecycle_ops::{busy, unsupported};

use crate::desired::{Desired, Summary};
use crate::lifecycle::depot::{self, DepotConfig, Imported, Manifest, TrustedKeys};
use crate::lifecycle::{self, Cluster, Host};
use crate::reconcile::Diff;
use crate::store::{Change, DatapathInstance, Store, StoreError};
use dse_datapath::datapath::{Datapath, DatapathError, Transaction};
use dse_datapath::pipeline::{Count, Stats};
use dse_datapath::rule::{Packed, Rule, RuleSet};
use dse_datapath::xdp::XdpLimits;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Which desired rules to read ([`Daemon::rules_page`]).
#[derive(Debug, Clone, Default)]
pub struct RulesPage {
    /// Only rules with a greater id.
    pub after: Option<u32>,
    /// At most this many.
    pub limit: usize,
    /// Only these ids (then `after` and `limit` do not apply).
    pub ids: Option<Vec<u32>>,
}

impl RulesPage {
    /// This page of `set`: its ports and meters, and the rules it selects
    /// in id order (those of `ids` in their order).
    pub fn of(&self, mut set: RuleSet) -> RuleSet {
        set.rules.sort_by_key(|r| r.id);
        set.rules = match &self.ids {
            Some(ids) => ids
                .iter()
                .filter_map(|id| {
                    let i = set.rules.binary_search_by_key(id, |r| r.id).ok()?;
                    Some(set.rules[i].clone())
                })
                .collect(),
            None => std::mem::take(&mut set.rules)
                .into_iter()
                .filter(|r| self.after.is_none_or(|a| r.id > a))
                .take(self.limit)
                .collect(),
        };
        set
    }
}

/// The audit result of a change that changes nothing.
const NO_CHANGE: &str = "no change";

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The store's database file.
    pub db: PathBuf,
    /// The bpffs directory under which each XDP instance pins its maps and
    /// links (in a directory named after the instance).
    pub bpffs: PathBuf,
    /// Worker threads of each host-path (emu) instance.
    pub emu_workers: usize,
    /// Map sizes of each XDP instance.
    pub xdp_limits: XdpLimits,
    /// Attach XDP in generic (skb) mode.
    pub xdp_skb_mode: bool,
    /// What the lifecycle depot trusts and accepts.
    pub depot: DepotConfig,
}

/// What a rule change did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The generation now desired (unchanged by a dry run).
    pub generation: u64,
    /// Whether this was only a dry run.
    pub dry_run: bool,
    /// Rules added.
    pub added: usize,
    /// Rules whose contents changed.
    pub changed: usize,
    /// Rules removed.
    pub removed: usize,
    /// Whether ports or meters changed.
    pub ports_or_meters: bool,
    /// The full difference (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// Each running datapath's own generation afterwards.
    pub datapaths: BTreeMap<String, u64>,
}

impl Applied {
    fn of(generation: u64, summary: Summary, diff: Option<Diff>) -> Applied {
        Applied {
            generation,
            dry_run: diff.is_some(),
            added: summary.added,
            changed: summary.changed,
            removed: summary.removed,
            ports_or_meters: summary.ports_or_meters,
            diff,
            datapaths: BTreeMap::new(),
        }
    }
}

/// Puts the first `n` of `running` back with `undo()`, to desired
/// generation `generation`.
fn put_back(
    running: &[(&String, &dyn Datapath)],
    n: usize,
    undo: &dyn Fn() -> Transaction,
    generation: u64,
) {
    for (name, dp) in &running[..n] {
        if let Err(e) = dp.apply_as(undo(), generation) {
            tracing::error!("datapath {name}: putting the rules back: {e}");
        }
    }
}

/// Returns the heap's free pages to the system. After a large change the
/// allocator keeps what the parse, the compile and the old generation
/// freed (on glibc, in each thread's arena), as resident memory no rule
/// uses: at a million rules, more than the rules themselves.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The control plane's state.
pub struct Daemon {
    store: Store,
    config: DaemonConfig,
    /// Held through every change, so that changes never interleave.
    changes: Mutex<()>,
    desired: RwLock<Desired>,
    instances: RwLock<BTreeMap<String, Running>>,
    /// The emulated DPUs opened so far, by serial.
    devices: Mutex<BTreeMap<String, std::sync::Arc<crate::lifecycle::device::EmulatedDpu>>>,
    /// The remediation under way, if one.
    remediating: Mutex<Option<u64>>,
}

impl Daemon {
    /// Opens the store, takes the desired state from it, and brings up
    /// every datapath instance it records: an XDP datapath still pinned
    /// from an earlier run is adopted (its traffic never stops) and
    /// converged to the desired rules; others are started. An instance
    /// that cannot come up is kept with its error (see
    /// [`Daemon::datapaths`]); the daemon still serves.
    ///
    /// # Errors
    /// [`ControlError::Store`] if the store cannot be opened or read.
    pub fn open(config: DaemonConfig) -> Result<Daemon, ControlError> {
        let store = Store::open(&config.db)?;
        let desired = match store.current()? {
            Some(g) => Desired::new(g.generation, &g.rules),
            None => Desired::default(),
        };
        let set = desired.rule_set();
        let mut instances = BTreeMap::new();
        for record in store.datapaths()? {
            let running = Running::bring_up(&config, record, &set, desired.generation);
            if let Some(e) = &running.error {
                tracing::error!("datapath {}: {e}", running.record.name);
            }
            instances.insert(running.record.name.clone(), running);
        }
        Ok(Daemon {
            store,
            config,
            changes: Mutex::new(()),
            desired: RwLock::new(desired),
            instances: RwLock::new(instances),
            devices: Mutex::new(BTreeMap::new()),
            remediating: Mutex::new(None),
        })
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_desired(&self) -> std::sync::RwLockReadGuard<'_, Desired> {
        self.desired.read().unwrap_or_else(|p| p.into_inner())
    }

    fn read_instances(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Running>> {
        self.instances.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The desired generation.
    pub fn generation(&self) -> u64 {
        self.read_desired().generation
    }

    /// The SHA-256, in hex, of the desired rule set's JSON as the API
    /// answers it: the digest a fleet agent reports of what it applied.
    pub fn rules_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let (_, set) = self.rules();
        let mut hasher = Sha256::new();
        serde_json::to_writer(&mut hasher, &set).expect("a rule set serializes");
        hex::encode(hasher.finalize())
    }

    /// The desired rule set and its generation.
    pub fn rules(&self) -> (u64, RuleSet) {
        let d = self.read_desired();
        (d.generation, d.rule_set())
    }

    /// A page of the desired rules: at most `limit` of those with an id
    /// above `after` (from the first without it), or only those of `ids`
    /// that exist, in id order, with the generation they are of and the
    /// ports and meters. Holds the desired state only while it copies
    /// them, so that paging through a million rules never blocks a change
    /// for long.
    pub fn rules_page(&self, page: &RulesPage) -> (u64, RuleSet) {
        let d = self.read_desired();
        let rules = match &page.ids {
            Some(ids) => ids
                .iter()
                .filter_map(|id| d.rules.get(id))
                .map(Packed::unpack)
                .collect(),
            None => {
                let from = page
                    .after
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                d.rules
                    .range((from, std::ops::Bound::Unbounded))
                    .take(page.limit)
                    .map(|(_, r)| r.unpack())
                    .collect()
            }
        };
        (
            d.generation,
            RuleSet {
                ports: d.ports.clone(),
                meters: d.meters.clone(),
                rules,
            },
        )
    }

    /// Refuses a change based on another generation than the desired one,
    /// recording the refusal.
    fn check_expected(
        &self,
        expected: Option<u64>,
        who: &str,
        what: &str,
    ) -> Result<(), ControlError> {
        let current = self.generation();
        match expected {
            Some(expected) if expected != current => {
                let err = ControlError::Conflict { expected, current };
                self.store.audit_only(who, what, &err.to_string())?;
                Err(err)
            }
            _ => Ok(()),
        }
    }

    /// Makes `set` the desired rule set, based on generation `expected`
    /// if given, and applies it to every running datapath. With `dry_run`,
    /// validates it and returns the difference without changing anything.
    ///
    /// # Errors
    /// [`ControlError::Conflict`] for a stale `expected`;
    /// [`ControlError::Rules`] naming the rule and field of invalid rules;
    /// [`ControlError::Datapath`] if a datapath fails (the others are put
    /// back; nothing is committed).
    pub fn apply(
        &self,
        set: RuleSet,
        expected: Option<u64>,
        dry_run: bool,
        who: &str,
    ) -> Result<Applied, ControlError> {
        let _changing = self.lock_changes();
        let what = Change::Replace(&set).describe();
        self.check_expected(expected, who, &what)?;
        let started = std::time::Instant::now();
        let instances = self.read_instances();
        let running: Vec<(&String, &dyn Datapath)> = instances
            .iter()
            .filter_map(|(n, r)| Some((n, r.datapath()?)))
            .collect();
        if (dry_run || running.is_empty())
            && let Err(e) = dse_datapath::compile(&set)
        {
            self.store.audit_only(who, &what, &e.to_string())?;
            return Err(e.into());
        }
        if dry_run {
            let d = self.read_desired();
            return Ok(Applied::of(
                d.generation,
                d.diff_summary(&set),
                Some(d.diff_to(&set)),
            ));
        }
        {
            let d = self.read_desired();
            let summary = d.diff_summary(&set);
            if summary == Summary::default() && set.rules.len() == d.rules.len() {
                self.store.audit_only(who, &what, NO_CHANGE)?;
                return Ok(self.unchanged(d.generation, summary));
            }
        }
        // Each backend gets the whole set and patches what differs itself
        // (or compiles afresh, for a large change), while the store
        // commits: the daemon computes no diff on the way.
        let undo = || Transaction::Replace(Arc::new(self.read_desired().rule_set()));
        let rules = set.rules.len();
        let set = Arc::new(set);
        let ((summary, generation), datapaths) = self.apply_and_commit(
            &running,
            || Transaction::Replace(Arc::clone(&set)),
            &undo,
            || {
                let summary = self.read_desired().diff_summary(&set);
                let g = self.store.commit(Change::Replace(&set), None, who)?;
                Ok((summary, g))
            },
            || {
                let old = self.read_desired().rule_set();
                self.store
                    .commit(Change::Replace(&old), None, "dse serve (roll back)")
            },
            who,
            &what,
        )?;
        let desired = Desired::new(generation, &set);
        let old = std::mem::replace(
            &mut *self.desired.write().unwrap_or_else(|p| p.into_inner()),
            desired,
        );
        // A million rules take a while to free; not on the caller's time.
        std::thread::spawn(move || {
            drop((old, set));
            give_back_freed_memory();
        });
        tracing::info!(generation, rules, took = ?started.elapsed(), "applied");
        let mut applied = Applied::of(generation, summary, None);
        applied.datapaths = datapaths;
        Ok(applied)
    }

    /// Adds (or replaces, by id) `upsert` and deletes `remove`, based on
    /// generation `expected` if given, keeping ports and meters.
    ///
    /// # Errors
    /// As [`Daemon::apply`]; [`ControlError::Rules`] also for deleting a
    /// rule that does not exist or naming a rule twice.
    pub fn patch(
        &self,
        upsert: Vec<Rule>,
        remove: Vec<u32>,
        expected: Option<u64>,
        who: &str,
    ) -> Result<Applied, ControlError> {
        let _changing = self.lock_changes();
        let what = Change::Patch {
            upsert: &upsert,
            remove: &remove,
        }
        .describe();
        self.check_expected(expected, who, &what)?;
        let diff = {
            let d = self.read_desired();
            if let Err(e) = d.check_batch(&upsert, &remove) {
                self.store.audit_only(who, &what, &e.to_string())?;
                return Err(e.into());
            }
            let (added, changed): (Vec<Rule>, Vec<Rule>) = upsert
                .iter()
                .filter(|r| !d.holds(r))
                .cloned()
                .partition(|r| !d.rules.contains_key(&r.id));
            if added.is_empty() && changed.is_empty() && remove.is_empty() {
                self.store.audit_only(who, &what, NO_CHANGE)?;
                return Ok(self.unchanged(d.generation, Summary::default()));
            }
            Diff {
                added,
                changed,
                removed: remove.clone(),
                ports_or_meters: false,
            }
        };
        let instances = self.read_instances();
        let running: Vec<(&String, &dyn Datapath)> = instances
            .iter()
            .filter_map(|(n, r)| Some((n, r.datapath()?)))
            .collect();
        let txn = Transaction::Patch {
            upsert: upsert.clone(),
            remove: remove.clone(),
        };
        // What puts a datapath back: the rules this patch replaces or
        // deletes, and the removal of those it adds.
        let undo = || {
            let d = self.read_desired();
            Transaction::Patch {
                upsert: upsert
                    .iter()
                    .filter_map(|r| d.rules.get(&r.id))
                    .chain(remove.iter().filter_map(|id| d.rules.get(id)))
                    .map(Packed::unpack)
                    .collect(),
                remove: diff.added.iter().map(|r| r.id).collect(),
            }
        };
        let (generation, datapaths) = self.apply_and_commit(
            &running,
            || txn,
            &undo,
            || {
                let patch = Change::Patch {
                    upsert: &upsert,
                    remove: &remove,
                };
                self.store.commit(patch, None, who)
            },
            || {
                let Transaction::Patch { upsert, remove } = undo() else {
                    unreachable!("the undo of a patch is a patch")
                };
                let back = Change::Patch {
                    upsert: &upsert,
                    remove: &remove,
                };
                self.store.commit(back, None, "dse serve (roll back)")
            },
            who,
            &what,
        )?;
        self.desired
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .patch(upsert, &remove, generation);
        let mut applied = Applied::of(generation, diff.summary(), None);
        applied.datapaths = datapaths;
        Ok(applied)
    }

    /// Applies `txn` to the running datapaths while `commit` commits the
    /// change to the store on another thread: the two take about as long
    /// for large changes, so they overlap. If a datapath fails, the others
    /// are put back and a committed change is rolled back with
    /// `roll_back` (a generation of its own, in the audit log); if the
    /// store fails, the datapaths are put back.
    #[allow(clippy::too_many_arguments)]
    fn apply_and_commit<T: Send>(
        &self,
        running: &[(&String, &dyn Datapath)],
        txn: impl FnOnce() -> Transaction,
        undo: &dyn Fn() -> Transaction,
        commit: impl FnOnce() -> Result<T, StoreError> + Send,
        roll_back: impl FnOnce() -> Result<u64, StoreError>,
        who: &str,
        what: &str,
    ) -> Result<(T, BTreeMap<String, u64>), ControlError> {
        let started = std::time::Instant::now();
        let (in_datapaths, in_store) = std::thread::scope(|s| {
            let store = s.spawn(|| {
                let r = commit();
                (r, started.elapsed())
            });
            let applied = if running.is_empty() {
                Ok(BTreeMap::new())
            } else {
                self.apply_all(running, txn(), undo, who, what)
            };
            let applied_in = started.elapsed();
            let (committed, committed_in) = store.join().expect("committing does not panic");
            tracing::debug!(?applied_in, ?committed_in, "{what}");
            (applied, committed)
        });
        match (in_datapaths, in_store) {
            (Ok(d), Ok(t)) => Ok((t, d)),
            (Err(e), Ok(_)) => {
                if let Err(r) = roll_back() {
                    tracing::error!("rolling the store back after {e}: {r}");
                }
                Err(e)
            }
            (Ok(_), Err(e)) => {
                put_back(running, running.len(), undo, self.generation());
                Err(e.into())
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Applies `txn` to each running datapath in turn. If one fails, those
    /// before it get `undo()` (the change that puts them back).
    fn apply_all(
        &self,
        running: &[(&String, &dyn Datapath)],
        txn: Transaction,
        undo: &dyn Fn() -> Transaction,
        who: &str,
        what: &str,
    ) -> Result<BTreeMap<String, u64>, ControlError> {
        // Changes are serialised and the store numbers each one the
        // generation after the current one.
        let current = self.generation();
        let next = current + 1;
        let mut done = BTreeMap::new();
        for (i, (name, dp)) in running.iter().enumerate() {
            match dp.apply_as(txn.clone(), next) {
                Ok(()) => {
                    done.insert((*name).clone(), next);
                }
                Err(e) => {
                    put_back(running, i, undo, current);
                    self.store.audit_only(who, what, &e.to_string())?;
                    return Err(match e {
                        DatapathError::Rules(r) if i == 0 => ControlError::Rules(r),
                        source => ControlError::Datapath {
                            name: (*name).clone(),
                            source,
                        },
                    });
                }
            }
        }
        Ok(done)
    }

    /// What a change that changes nothing returns: the generation stays.
    fn unchanged(&self, generation: u64, summary: Summary) -> Applied {
        let mut applied = Applied::of(generation, summary, None);
        applied.datapaths = self
            .read_instances()
            .iter()
            .filter_map(|(n, r)| Some((n.clone(), r.datapath()?.generation())))
            .collect();
        applied
    }

    /// Every cluster of the lifecycle inventory.
    ///
    /// # Errors
    /// [`ControlError::Store`].
    pub fn clusters(&self) -> Result<Vec<Cluster>, ControlError> {
        Ok(self.store.clusters()?)
    }

    /// Adds `cluster` to the inventory (see [`lifecycle::create_cluster`]).
    ///
    /// # Errors
    /// [`ControlError::Exists`], [`ControlError::ClusterRules`],
    /// [`ControlError::Store`].
    pub fn create_cluster(&self, cluster: Cluster, who: &str) -> Result<(), ControlError> {
        Ok(lifecycle::create_cluster(&self.store, cluster, who)?)
    }

    /// Makes `clusters` the whole inventory: a fleet agent's, its host's
    /// cluster as the controller wrote it. Unchanged, it writes nothing.
    ///
    /// # Errors
    /// [`ControlError::Store`].
    pub fn replace_inventory(&self, clusters: Vec<Cluster>, who: &str) -> Result<(), ControlError> {
        if self.store.clusters()? == clusters {
            return Ok(());
        }
        Ok(self.store.update_clusters(
            who,
            "take the fleet's inventory",
            |all| -> Result<(), lifecycle::InventoryError> {
                *all = clusters;
                Ok(())
            },
        )?)
    }

    /// Adds `host` to cluster `cluster` (see [`lifecycle::add_host`]).
    ///
    /// # Errors
    /// [`ControlError::NotFound`], [`ControlError::ClusterRules`],
    /// [`ControlError::Store`].
    pub fn add_host(&self, cluster: &str, host: Host, who: &str) -> Result<(), ControlError> {
        Ok(lifecycle::add_host(&self.store, cluster, host, who)?)
    }

    /// The manifests imported into the depot.
    ///
    /// # Errors
    /// [`ControlError::Store`].
    pub fn depot(&self) -> Result<Vec<Imported>, ControlError> {
        Ok(self.store.depot()?)
    }

    /// Imports the depot at `from` (a directory on this machine): every
    /// manifest is checked (see [`depot::verify`]) before anything is
    /// copied, into a directory of its own beside the store.
    ///
    /// # Errors
    /// [`ControlError::Refused`] without trusted keys;
    /// [`ControlError::Depot`] naming every refused manifest;
    /// [`ControlError::Exists`] for a version imported before with other
    /// content; [`ControlError::Store`]. Nothing is imported on an error.
    pub fn depot_import(
        &self,
        from: &std::path::Path,
        who: &str,
    ) -> Result<Vec<Manifest>, ControlError> {
        let config = &self.config.depot;
        let keys = config.trusted_keys.as_ref().ok_or_else(|| {
            ControlError::Refused(
                "dse serve trusts no keys, so it imports nothing: start it with --trusted-keys FILE".into(),
            )
        })?;
        let keys = TrustedKeys::load(keys).map_err(|e| ControlError::Depot(vec![e]))?;
        let _changing = self.lock_changes();
        let root = self
            .config
            .db
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("depot");
        std::fs::create_dir_all(&root).map_err(|e| {
            ControlError::BadRequest(format!("creating the depot {}: {e}", root.display()))
        })?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let into = root.join(format!("import-{stamp}"));
        let manifests = depot::import(from, &into, &keys, config.lowest_acceptance)
            .map_err(ControlError::Depot)?;
        let imported: Vec<Imported> = manifests
            .iter()
            .map(|m| Imported {
                manifest: m.clone(),
                dir: into.clone(),
            })
            .collect();
        let recorded = self.store.record_depot(&imported, who);
        // Kept only if it holds a manifest recorded now (one imported
        // before keeps the directory it came with).
        if !matches!(recorded, Ok(Ok(new)) if new > 0) {
            let _ = std::fs::remove_dir_all(&into);
        }
        recorded?.map_err(|c| ControlError::Exists(c.to_string()))?;
        Ok(manifests)
    }

    /// Every datapath instance and how it is doing, each compared with
    /// the desired generation.
    pub fn datapaths(&self) -> Vec<InstanceStatus> {
        let desired = self.generation();
        self.read_instances()
            .values()
            .map(|r| r.status(desired))
            .collect()
    }

    /// Statistics of each running datapath, by instance name.
    pub fn stats(&self) -> BTreeMap<String, Stats> {
        self.read_instances()
            .iter()
            .filter_map(|(n, r)| Some((n.clone(), r.datapath()?.stats())))
            .collect()
    }

    /// Per-rule counters of each running datapath (or only `name`'s), by
    /// instance name and rule id.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] if `name` is given and not an instance.
    pub fn counters(
        &self,
        name: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<u32, Count>>, ControlError> {
        let instances = self.read_instances();
        if let Some(n) = name.filter(|n| !instances.contains_key(*n)) {
            return Err(ControlError::NotFound {
                what: format!("datapath {n:?}"),
            });
        }
        Ok(instances
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .filter_map(|(n, r)| Some((n.clone(), r.datapath()?.rule_counters())))
            .collect())
    }

    /// What the flow caches of datapath `name` hold for `key` (see
    /// [`Datapath::cached`]).
    ///
    /// # Errors
    /// [`ControlError::NotFound`] if there is no such instance or it is
    /// not running; [`ControlError::Datapath`] if its caches cannot be read.
    pub fn cached(
        &self,
        name: &str,
        key: &dse_datapath::compile::FlowKey,
    ) -> Result<Vec<dse_datapath::pipeline::Cached>, ControlError> {
        let instances = self.read_instances();
        let Some(datapath) = instances.get(name).and_then(|r| r.datapath()) else {
            return Err(ControlError::NotFound {
                what: format!("running datapath {name:?}"),
            });
        };
        datapath
            .cached(key)
            .map_err(|source| ControlError::Datapath {
                name: name.to_string(),
                source,
            })
    }

    /// Brings up datapath instance `record` on the desired rules and
    /// records it.
    ///
    /// # Errors
    /// [`ControlError::BadRequest`] for a bad name; [`ControlError::Refused`]
    /// for a port the rules do not define or an interface that does not
    /// exist; [`ControlError::Exists`]
    /// for a name or interface already in use; [`ControlError::Datapath`] if
    /// the backend cannot start. Nothing is recorded or left running then.
    pub fn attach(
        &self,
        record: DatapathInstance,
        who: &str,
    ) -> Result<InstanceStatus, ControlError> {
        let _changing = self.lock_changes();
        let what = format!("attach datapath {}", record.name);
        let checked = instances::check(&record, &self.read_desired(), &self.read_instances());
        if let Err(e) = checked {
            self.store.audit_only(who, &what, &e.to_string())?;
            return Err(e);
        }
        let asked = record.clone();
        let (generation, rules) = self.rules();
        let running = match Running::start(&self.config, record, &rules, generation) {
            Ok(r) => r,
            Err(source) => {
                self.store.audit_only(who, &what, &source.to_string())?;
                // A failed XDP start may have pinned maps already.
                instances::remove_pins(&self.config, &asked);
                return Err(ControlError::Datapath {
                    name: asked.name,
                    source,
                });
            }
        };
        if let Err(e) = self.store.put_datapath(&running.record, who) {
            running.tear_down(&self.config);
            return Err(e.into());
        }
        let status = running.status(generation);
        self.instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(running.record.name.clone(), running);
        // The rule set it started from, and its compile, are freed.
        give_back_freed_memory();
        Ok(status)
    }

    /// Stops datapath instance `name` (an XDP one detaches from its
    /// interfaces and unpins its maps) and forgets it.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] if there is no such instance.
    pub fn detach(&self, name: &str, who: &str) -> Result<(), ControlError> {
        let _changing = self.lock_changes();
        let removed = self
            .instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let Some(running) = removed else {
            self.store
                .audit_only(who, &format!("detach datapath {name}"), "no such datapath")?;
            return Err(ControlError::NotFound {
                what: format!("datapath {name:?}"),
            });
        };
        self.store.remove_datapath(name, who)?;
        running.tear_down(&self.config);
        Ok(())
    }

    /// The audit log, oldest first: the entries after sequence number
    /// `after`, at most `limit` of them, or with `last`, the newest `last`.
    ///
    /// # Errors
    /// [`ControlError::Store`].
    pub fn audit(
        &self,
        after: u64,
        limit: usize,
        last: Option<usize>,
    ) -> Result<Vec<crate::store::AuditEntry>, ControlError> {
        Ok(match last {
            Some(n) => self.store.audit_last(n.min(limit))?,
            None => self.store.audit(after, limit)?,
        })
    }
}
