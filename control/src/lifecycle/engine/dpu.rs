//! The engine's steps on one DPU: stage, snapshot or fingerprint, fail
//! over, flash, reboot, restore, the hitless swap, verify, roll back.

use super::{Away, Engine, Failure, Partner, write_atomically};
use crate::lifecycle::device::{BootOutcome, SlotImage};
use crate::lifecycle::remediation::{DpuPlan, Step};
use dse_datapath::datapath::Fingerprint;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long frames already on their way to a DPU (sent before the wire
/// learned from the bond's gratuitous ARP that the host moved) get to
/// cross it before its datapath stands down.
const SETTLE: Duration = Duration::from_millis(100);

impl Engine<'_> {
    /// Moves DPU `serial`'s traffic to the host path, or stands its
    /// datapath down (`to` the partner), and saves the datapath's last
    /// state as its snapshot: counted to the last frame it forwarded. A
    /// datapath that a restarted control plane brought up afresh counts
    /// from zero: its counts are added to the saved ones.
    pub(super) fn fail_over(&self, serial: &str, to: Away) -> Result<(), Failure> {
        let saved = self.saved_snapshot(serial)?;
        let Some(mut last) = self
            .datapaths
            .fail_over(serial, &saved.rules, to)
            .map_err(Failure::fatal)?
        else {
            return Ok(());
        };
        let restarted = saved
            .counters
            .iter()
            .any(|(id, c)| last.counters.get(id).is_none_or(|l| l.packets < c.packets));
        if restarted {
            for (id, c) in &saved.counters {
                let l = last.counters.entry(*id).or_default();
                l.packets += c.packets;
                l.bytes += c.bytes;
            }
        }
        let path = self.snapshot_path(serial);
        write_atomically(&path, &last.encode())
            .map_err(|e| Failure::fatal(format!("writing {}: {e}", path.display())))
    }

    /// Copies the image to DPU `d`, and loads its new datapath program
    /// ahead of a hitless swap.
    pub(super) fn stage(&self, d: &DpuPlan) -> Result<String, Failure> {
        let keys: Vec<String> = self.image.manifests.iter().map(|m| m.key()).collect();
        self.up(&d.serial)?;
        self.device(&d.serial)?.stage(&keys)?;
        let mut did = format!("{} depot entries", keys.len());
        if d.has_datapath && d.swaps_datapath() && !d.reboots() {
            let object = d.datapath_to.as_ref().map(|(_, o)| o.as_path());
            self.datapaths
                .prepare(&d.serial, object)
                .map_err(Failure::fatal)?;
            did.push_str("; the new program loaded");
        }
        Ok(did)
    }

    /// Saves what DPU `d`'s datapath must come back to: its whole state
    /// when it reboots, its fingerprint when its program is swapped in place.
    pub(super) fn snapshot(&self, d: &DpuPlan) -> Result<String, Failure> {
        let serial = d.serial.as_str();
        if !d.reboots() {
            let f = self.datapaths.fingerprint(serial).map_err(Failure::fatal)?;
            let path = self.fingerprint_path(serial);
            let bytes = serde_json::to_vec(&f).expect("a fingerprint serialises");
            write_atomically(&path, &bytes)
                .map_err(|e| Failure::fatal(format!("writing {}: {e}", path.display())))?;
            return Ok(format!(
                "fingerprint: generation {}, {} rules, {} packets counted",
                f.generation, f.rules, f.packets
            ));
        }
        let snap = self.datapaths.snapshot(serial).map_err(Failure::fatal)?;
        let path = self.snapshot_path(serial);
        write_atomically(&path, &snap.encode())
            .map_err(|e| Failure::fatal(format!("writing {}: {e}", path.display())))?;
        Ok(format!(
            "generation {}, {} rules, {} packets counted",
            snap.generation,
            snap.rules.rules.len(),
            snap.counters.values().map(|c| c.packets).sum::<u64>()
        ))
    }

    pub(super) fn fingerprint_path(&self, serial: &str) -> PathBuf {
        self.snapshot_path(serial).with_extension("fingerprint")
    }

    /// Upgrades DPU `d`; while it reboots, `partner` carries its traffic
    /// (none: the host path).
    pub(super) fn upgrade_dpu(
        &self,
        h: usize,
        d: &DpuPlan,
        partner: Option<Partner<'_>>,
    ) -> Result<(), Failure> {
        let serial = d.serial.as_str();
        let object = if d.swaps_datapath() {
            d.datapath_to.as_ref().map(|(_, o)| o.clone())
        } else {
            d.object_from.clone()
        };
        if d.reboots() {
            if d.has_datapath {
                self.step(h, Step::FailOver, Some(serial), || {
                    let Some(p) = partner else {
                        self.fail_over(serial, Away::HostPath)?;
                        return Ok("the host path carries its traffic".into());
                    };
                    self.datapaths
                        .steer(p.bond, p.member)
                        .map_err(Failure::fatal)?;
                    std::thread::sleep(SETTLE);
                    self.fail_over(serial, Away::Partner)?;
                    Ok(format!(
                        "the partner DPU {} carries its traffic: {} is bond {}'s active member",
                        p.serial, p.member, p.bond.name
                    ))
                })?;
            }
            self.step(h, Step::Flash, Some(serial), || {
                self.up(serial)?;
                self.device(serial)?.flash(&d.to)?;
                Ok(format!("firmware {}, os {}", d.to.firmware, d.to.os))
            })?;
            self.step(h, Step::Reboot, Some(serial), || {
                self.reboot_into(serial, &d.to)
            })?;
        } else if d.swaps_datapath() && d.has_datapath {
            self.step(h, Step::UpgradeDatapath, Some(serial), || {
                self.datapaths
                    .upgrade(serial, object.as_deref())
                    .map_err(Failure::fatal)?;
                Ok(format!(
                    "program {:?}",
                    object.as_deref().unwrap_or(Path::new("built in"))
                ))
            })?;
        }
        if let Some((v, _)) = d.datapath_to.as_ref().filter(|_| d.swaps_datapath()) {
            self.device(serial)?.set_datapath(v)?;
        }
        if d.has_datapath {
            if d.reboots() {
                self.step(h, Step::Restore, Some(serial), || {
                    let snap = self.saved_snapshot(serial)?;
                    self.datapaths
                        .restore(serial, &snap, object.as_deref())
                        .map_err(Failure::fatal)?;
                    if let Some(p) = partner {
                        self.datapaths
                            .steer(p.bond, p.home)
                            .map_err(Failure::fatal)?;
                        return Ok(format!(
                            "restored; bond {}'s active member is {} again",
                            p.bond.name, p.home
                        ));
                    }
                    Ok("restored; the offload carries its traffic again".into())
                })?;
            }
            self.step(h, Step::Verify, Some(serial), || {
                if d.reboots() {
                    self.verify(serial)
                } else {
                    self.verify_fingerprint(serial)
                }
            })?;
        }
        Ok(())
    }

    /// Boots DPU `serial` into `to`, unless it runs it already.
    pub(super) fn reboot_into(&self, serial: &str, to: &SlotImage) -> Result<String, Failure> {
        let dev = self.device(serial)?;
        let s = self.up(serial)?;
        if s.running() == to {
            return Ok(format!("runs slot {:?} already", s.active));
        }
        if s.slots[s.next_boot as usize].as_ref() != Some(to) {
            return Err(Failure::fatal(match s.fell_back {
                Some(why) => format!("DPU {serial} fell back: {why}"),
                None => format!("DPU {serial}: no slot holds the new image to boot"),
            }));
        }
        let started = Instant::now();
        dev.reboot()?;
        match dev.wait_up(self.boot_timeout())? {
            BootOutcome::Booted { slot } => Ok(format!(
                "up on slot {slot:?} in {} ms",
                started.elapsed().as_millis()
            )),
            BootOutcome::FellBack { reason, .. } => {
                Err(Failure::fatal(format!("DPU {serial} fell back: {reason}")))
            }
        }
    }

    /// Rules equal to the snapshot's, no counter below it.
    pub(super) fn verify(&self, serial: &str) -> Result<String, Failure> {
        let snap = self.saved_snapshot(serial)?;
        let (rules, counters) = self.datapaths.current(serial).map_err(Failure::fatal)?;
        if rules != snap.rules {
            return Err(Failure::fatal(format!(
                "DPU {serial}: the restored rules differ from the snapshot's"
            )));
        }
        for (id, before) in &snap.counters {
            let now = counters.get(id).copied().unwrap_or_default();
            if now.packets < before.packets || now.bytes < before.bytes {
                return Err(Failure::fatal(format!(
                    "DPU {serial}: rule {id} counts {} packets, fewer than the snapshot's {}",
                    now.packets, before.packets
                )));
            }
        }
        Ok(format!(
            "{} rules equal, {} counters kept",
            rules.rules.len(),
            snap.counters.len()
        ))
    }

    /// Same generation and rules as the saved fingerprint, no counter below.
    pub(super) fn verify_fingerprint(&self, serial: &str) -> Result<String, Failure> {
        let path = self.fingerprint_path(serial);
        let before: Fingerprint = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Failure::fatal(format!("reading the fingerprint {}", path.display())))?;
        let now = self.datapaths.fingerprint(serial).map_err(Failure::fatal)?;
        if !now.continues(&before) {
            return Err(Failure::fatal(format!(
                "DPU {serial}: the datapath changed under the swap: before {before:?}, after {now:?}"
            )));
        }
        Ok(format!(
            "generation {} and {} rules kept, counters {} -> {} packets",
            now.generation, now.rules, before.packets, now.packets
        ))
    }

    /// Puts DPU `d` back on the image and program it ran before, its
    /// datapath restored if it was away.
    pub(super) fn roll_back(&self, h: usize, d: &DpuPlan) -> Result<(), Failure> {
        let serial = d.serial.as_str();
        self.step(h, Step::RollBack, Some(serial), || {
            let dev = self.device(serial)?;
            let s = self.up(serial)?;
            let mut did = Vec::new();
            if d.has_datapath {
                // A restarted control plane brought it up running.
                self.datapaths.quiesce(serial).map_err(Failure::fatal)?;
            }
            if *s.running() != d.from {
                if d.has_datapath {
                    self.fail_over(serial, Away::HostPath)?;
                }
                dev.flash(&d.from)?;
                self.reboot_into(serial, &d.from)?;
                did.push(format!(
                    "back on firmware {}, os {}",
                    d.from.firmware, d.from.os
                ));
            }
            dev.set_datapath(&d.datapath_from)?;
            if !d.reboots()
                && let Some(now) = self.datapaths.datapath_state(serial)
                && now.object != d.object_from
                && !now.failed_over
            {
                self.datapaths
                    .upgrade(serial, d.object_from.as_deref())
                    .map_err(Failure::fatal)?;
                did.push("datapath swapped back to its old program".into());
            }
            // Away on the host path, on another program, or started afresh
            // by a restarted control plane (its counters below the snapshot's).
            if let Some(now) = self.datapaths.datapath_state(serial)
                && self.snapshot_path(serial).exists()
                && (now.failed_over || now.object != d.object_from || self.verify(serial).is_err())
            {
                let snap = self.saved_snapshot(serial)?;
                self.datapaths
                    .restore(serial, &snap, d.object_from.as_deref())
                    .map_err(Failure::fatal)?;
                did.push("datapath restored on its old program".into());
            }
            self.record_versions(h, None)?;
            Ok(if did.is_empty() {
                "nothing to undo".into()
            } else {
                did.join("; ")
            })
        })
    }
}
