//! DPU devices behind one trait, and the emulated DPU that implements it.
//!
//! A DPU boots from one of two firmware slots, A and B, each holding a
//! firmware and a DPU OS. An upgrade flashes the slot not in use and
//! reboots into it on trial; if the new slot hangs at boot (the watchdog
//! fires) or fails its health check, the device boots the previous slot
//! again by itself: BlueField's watchdog A/B swap.
//!
//! The emulated DPU keeps its state in `state.json` under its directory,
//! replaced atomically on every change. A boot is a state with a start
//! time, finished lazily when the device is next looked at: a boot survives
//! the control plane dying in the middle of it, as a real DPU's would.
//! Its datapath is not here: it is the XDP datapath instance the control
//! plane runs for the DPU, on the DPU's interfaces.

use super::inventory::Version;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A firmware slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotImage {
    /// The firmware version.
    pub firmware: Version,
    /// The DPU OS version.
    pub os: Version,
}

/// Faults the emulated DPU injects, each a count of times still to fail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Flashes that fail (the slot is left unusable).
    pub flash_failures: u32,
    /// Trial boots that hang until the watchdog fires.
    pub boot_hangs: u32,
    /// Trial boots whose health check fails.
    pub health_check_failures: u32,
    /// Whether the device is unreachable (pulled, powered off).
    pub unreachable: bool,
}

/// How the emulated DPU behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Emulation {
    /// How long a boot takes, in milliseconds.
    pub boot_ms: u64,
    /// How long a hung boot lasts before the watchdog boots the other slot.
    pub watchdog_ms: u64,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for Emulation {
    fn default() -> Self {
        Emulation {
            boot_ms: 1000,
            watchdog_ms: 3000,
            faults: Faults::default(),
        }
    }
}

/// Whether the DPU is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Power {
    /// Running from its active slot.
    Up,
    /// Booting `slot` since `since_ms` (Unix milliseconds); `trial` when
    /// the slot is newly flashed and has not yet booted well.
    Booting {
        /// The slot booting.
        slot: Slot,
        /// When the boot started.
        since_ms: u64,
        /// Whether the slot is on trial.
        trial: bool,
        /// Whether this boot hangs (decided when it starts).
        hangs: bool,
    },
}

/// The device's state, as persisted and as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Its serial number.
    pub serial: String,
    /// Slots A and B; `None` when empty or left unusable by a failed flash.
    pub slots: [Option<SlotImage>; 2],
    /// The slot it runs from (or last ran from, while booting).
    pub active: Slot,
    /// The slot the next boot takes.
    pub next_boot: Slot,
    /// Whether it is up.
    pub power: Power,
    /// The datapath version it runs.
    pub datapath: Version,
    /// Depot entries staged on it (`kind/name/version`).
    pub staged: Vec<String>,
    /// Why the last trial boot fell back, if it did.
    pub fell_back: Option<String>,
    /// Boots so far.
    pub boots: u64,
    /// Its behaviour.
    pub emulation: Emulation,
}

impl DeviceState {
    /// What the active slot holds.
    pub fn running(&self) -> &SlotImage {
        self.slots[self.active.index()]
            .as_ref()
            .expect("the active slot always holds an image")
    }

    /// The firmware version running.
    pub fn firmware(&self) -> &Version {
        &self.running().firmware
    }

    /// The DPU OS version running.
    pub fn os(&self) -> &Version {
        &self.running().os
    }

    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        self.power == Power::Up
    }
}

/// How a reboot ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum BootOutcome {
    /// Up on the slot it was asked to boot.
    Booted {
        /// The slot.
        slot: Slot,
    },
    /// The new slot failed; up again on the previous one.
    FellBack {
        /// The slot it runs from.
        slot: Slot,
        /// Why the new one was given up.
        reason: String,
    },
}

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device's state could not be read or written.
    #[error("DPU {serial}: {what} {}: {source}", path.display())]
    Io {
        /// The DPU.
        serial: String,
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The device's state file does not parse.
    #[error("DPU {serial}: state file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The DPU.
        serial: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The device does not answer.
    #[error("DPU {0} is unreachable")]
    Unreachable(String),
    /// No DPU of this serial is in the inventory.
    #[error("no DPU {0} in the inventory")]
    Unknown(String),
    /// The serial breaks the rule for names, so it names no directory.
    #[error(transparent)]
    BadSerial(#[from] dse_datapath::name::NameError),
    /// The device is booting; the operation needs it up.
    #[error("DPU {0} is booting: wait for it to come up")]
    Booting(String),
    /// Writing the slot failed; the slot is left unusable, the active one
    /// is untouched.
    #[error("DPU {serial}: flashing slot {slot:?} failed; it still runs slot {active:?}")]
    FlashFailed {
        /// The DPU.
        serial: String,
        /// The slot written.
        slot: Slot,
        /// The slot it runs.
        active: Slot,
    },
    /// The device did not come up in time.
    #[error("DPU {serial} did not come up within {waited:?}")]
    TimedOut {
        /// The DPU.
        serial: String,
        /// How long was waited.
        waited: Duration,
    },
}

impl DeviceError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            DeviceError::FlashFailed { .. }
                | DeviceError::TimedOut { .. }
                | DeviceError::Unreachable(_)
                | DeviceError::Booting(_)
        )
    }
}

/// A DPU as the lifecycle manager drives it.
pub trait DpuDevice: Send + Sync {
    /// Its serial number.
    fn serial(&self) -> &str;

    /// Its state, finishing any boot whose time has come.
    ///
    /// # Errors
    /// [`DeviceError::Unreachable`], or its state cannot be read.
    fn status(&self) -> Result<DeviceState, DeviceError>;

    /// Copies depot entries onto the device ahead of an upgrade. Idempotent.
    ///
    /// # Errors
    /// [`DeviceError`] if it is not up or cannot be written.
    fn stage(&self, keys: &[String]) -> Result<(), DeviceError>;

    /// Writes `image` into the slot not in use and makes the next boot
    /// take it on trial. Idempotent: a slot that holds `image` already is
    /// not written again.
    ///
    /// # Errors
    /// [`DeviceError::FlashFailed`] (the active slot is untouched), or the
    /// device is not up.
    fn flash(&self, image: &SlotImage) -> Result<(), DeviceError>;

    /// Starts a boot of the next-boot slot. The device is down until it
    /// is up again ([`DpuDevice::wait_up`]).
    ///
    /// # Errors
    /// [`DeviceError`] if it cannot be written.
    fn reboot(&self) -> Result<(), DeviceError>;

    /// Waits until the device is up, at most `timeout`, and says how the
    /// last boot ended.
    ///
    /// # Errors
    /// [`DeviceError::TimedOut`].
    fn wait_up(&self, timeout: Duration) -> Result<BootOutcome, DeviceError>;

    /// Records the datapath version the device now runs.
    ///
    /// # Errors
    /// [`DeviceError`] if it cannot be written.
    fn set_datapath(&self, version: &Version) -> Result<(), DeviceError>;

    /// A fresh install: erases both slots, writes `image` into slot A with
    /// `datapath`, and boots it. The device is down until it is up again
    /// ([`DpuDevice::wait_up`]).
    ///
    /// # Errors
    /// [`DeviceError`] if it is unreachable or cannot be written.
    fn install(&self, image: &SlotImage, datapath: &Version) -> Result<(), DeviceError>;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The emulated DPU: its state in `<dir>/state.json`.
pub struct EmulatedDpu {
    serial: String,
    dir: PathBuf,
    state: Mutex<()>,
}

impl EmulatedDpu {
    /// Opens the emulated DPU in `dir`, creating it, up on slot A with
    /// `image` and `datapath`, if it has no state yet.
    ///
    /// # Errors
    /// [`DeviceError`] if its state cannot be read or written.
    pub fn open(
        dir: &Path,
        serial: &str,
        image: SlotImage,
        datapath: Version,
    ) -> Result<EmulatedDpu, DeviceError> {
        let dpu = EmulatedDpu {
            serial: serial.to_string(),
            dir: dir.to_path_buf(),
            state: Mutex::new(()),
        };
        if !dpu.state_path().exists() {
            std::fs::create_dir_all(dir).map_err(dpu.io("creating the directory", dir))?;
            dpu.write(&DeviceState {
                serial: serial.to_string(),
                slots: [Some(image), None],
                active: Slot::A,
                next_boot: Slot::A,
                power: Power::Up,
                datapath,
                staged: Vec::new(),
                fell_back: None,
                boots: 0,
                emulation: Emulation::default(),
            })?;
        }
        Ok(dpu)
    }

    /// Replaces how the device behaves (boot time, faults).
    ///
    /// # Errors
    /// [`DeviceError`] if its state cannot be read or written.
    pub fn set_emulation(&self, emulation: Emulation) -> Result<(), DeviceError> {
        self.change(|s| {
            s.emulation = emulation;
            Ok(())
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn io(&self, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError {
        let (serial, path) = (self.serial.clone(), path.to_path_buf());
        move |source| DeviceError::Io {
            serial,
            what,
            path,
            source,
        }
    }

    fn read(&self) -> Result<DeviceState, DeviceError> {
        let path = self.state_path();
        let bytes = std::fs::read(&path).map_err(self.io("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| DeviceError::Corrupt {
            serial: self.serial.clone(),
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces the state file atomically: a temporary file, synced, then
    /// renamed over it, then the directory synced.
    fn write(&self, state: &DeviceState) -> Result<(), DeviceError> {
        let path = self.state_path();
        let tmp = self.dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(state).expect("device state serialises");
        let file = std::fs::File::create(&tmp).map_err(self.io("writing", &tmp))?;
        use std::io::Write;
        (&file)
            .write_all(&bytes)
            .map_err(self.io("writing", &tmp))?;
        file.sync_all().map_err(self.io("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(self.io("replacing", &path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("syncing the directory", &self.dir))
    }

    /// Reads the state, moves any boot on by the clock, lets `change` edit
    /// it, and writes it back if anything changed.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut DeviceState) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let _held = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.read()?;
        let mut s = before.clone();
        advance_boot(&mut s, now_ms());
        let out = change(&mut s);
        if s != before {
            self.write(&s)?;
        }
        out
    }

    fn require_up(s: &DeviceState) -> Result<(), DeviceError> {
        if s.emulation.faults.unreachable {
            return Err(DeviceError::Unreachable(s.serial.clone()));
        }
        match s.power {
            Power::Up => Ok(()),
            Power::Booting { .. } => Err(DeviceError::Booting(s.serial.clone())),
        }
    }
}

/// Moves a boot on to where the clock says it is: up, hung until the
/// watchdog fires, or fallen back to the previous slot.
fn advance_boot(s: &mut DeviceState, now: u64) {
    loop {
        let Power::Booting {
            slot,
            since_ms,
            trial,
            hangs,
        } = s.power.clone()
        else {
            return;
        };
        let (boot_ms, watchdog_ms) = (s.emulation.boot_ms, s.emulation.watchdog_ms);
        if hangs {
            if now < since_ms + watchdog_ms {
                return;
            }
            fall_back(
                s,
                slot,
                since_ms + watchdog_ms,
                "the boot hung and the watchdog fired",
            );
            continue;
        }
        if now < since_ms + boot_ms {
            return;
        }
        if trial && s.emulation.faults.health_check_failures > 0 {
            s.emulation.faults.health_check_failures -= 1;
            fall_back(s, slot, since_ms + boot_ms, "the health check failed");
            continue;
        }
        s.active = slot;
        s.power = Power::Up;
        s.boots += 1;
        return;
    }
}

/// Gives up `failed` and boots the other slot again, from `at`.
fn fall_back(s: &mut DeviceState, failed: Slot, at: u64, why: &str) {
    let previous = failed.other();
    s.fell_back = Some(format!(
        "slot {failed:?}: {why}; booted slot {previous:?} again"
    ));
    s.next_boot = previous;
    s.power = Power::Booting {
        slot: previous,
        since_ms: at,
        trial: false,
        hangs: false,
    };
}

impl DpuDevice for EmulatedDpu {
    fn serial(&self) -> &str {
        &self.serial
    }

    fn status(&self) -> Result<DeviceState, DeviceError> {
        let s = self.change(|s| Ok(s.clone()))?;
        if s.emulation.faults.unreachable {
            return Err(DeviceError::Unreachable(s.serial));
        }
        Ok(s)
    }

    fn stage(&self, keys: &[String]) -> Result<(), DeviceError> {
        self.change(|s| {
            Self::require_up(s)?;
            for k in keys {
                if !s.staged.contains(k) {
                    s.staged.push(k.clone());
                }
            }
            Ok(())
        })
    }

    fn flash(&self, image: &SlotImage) -> Result<(), DeviceError> {
        self.change(|s| {
            Self::require_up(s)?;
            let target = s.active.other();
            if s.slots[target.index()].as_ref() == Some(image) && s.next_boot == target {
                return Ok(());
            }
            if s.emulation.faults.flash_failures > 0 {
                s.emulation.faults.flash_failures -= 1;
                s.slots[target.index()] = None;
                s.next_boot = s.active;
                return Err(DeviceError::FlashFailed {
                    serial: s.serial.clone(),
                    slot: target,
                    active: s.active,
                });
            }
            s.slots[target.index()] = Some(image.clone());
            s.next_boot = target;
            Ok(())
        })
    }

    fn reboot(&self) -> Result<(), DeviceError> {
        self.change(|s| {
            if s.emulation.faults.unreachable {
                return Err(DeviceError::Unreachable(s.serial.clone()));
            }
            if matches!(s.power, Power::Booting { .. }) {
                return Ok(());
            }
            let slot = s.next_boot;
            let trial = slot != s.active;
            let hangs = trial && s.emulation.faults.boot_hangs > 0;
            if hangs {
                s.emulation.faults.boot_hangs -= 1;
            }
            if trial {
                s.fell_back = None;
            }
            s.power = Power::Booting {
                slot,
                since_ms: now_ms(),
                trial,
                hangs,
            };
            Ok(())
        })
    }

    fn wait_up(&self, timeout: Duration) -> Result<BootOutcome, DeviceError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.change(|s| Ok(s.clone()))?;
            if s.is_up() {
                return Ok(match s.fell_back {
                    Some(reason) => BootOutcome::FellBack {
                        slot: s.active,
                        reason,
                    },
                    None => BootOutcome::Booted { slot: s.active },
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(DeviceError::TimedOut {
                    serial: self.serial.clone(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn set_datapath(&self, version: &Version) -> Result<(), DeviceError> {
        self.change(|s| {
            s.datapath = version.clone();
            Ok(())
        })
    }

    fn install(&self, image: &SlotImage, datapath: &Version) -> Result<(), DeviceError> {
        self.change(|s| {
            if s.emulation.faults.unreachable {
                return Err(DeviceError::Unreachable(s.serial.clone()));
            }
            s.slots = [Some(image.clone()), None];
            s.active = Slot::A;
            s.next_boot = Slot::A;
            s.datapath = datapath.clone();
            s.fell_back = None;
            s.power = Power::Booting {
                slot: Slot::A,
                since_ms: now_ms(),
                trial: false,
                hangs: false,
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(fw: &str, os: &str) -> SlotImage {
        SlotImage {
            firmware: fw.parse().unwrap(),
            os: os.parse().unwrap(),
        }
    }

    fn dpu(dir: &Path, emulation: Emulation) -> EmulatedDpu {
        let d =
            EmulatedDpu::open(dir, "S1", image("24.1", "8.0.3"), "1.0".parse().unwrap()).unwrap();
        d.set_emulation(emulation).unwrap();
        d
    }

    fn quick(faults: Faults) -> Emulation {
        Emulation {
            boot_ms: 20,
            watchdog_ms: 60,
            faults,
        }
    }

    #[test]
    fn flash_and_reboot_runs_the_new_slot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dpu(dir.path(), quick(Faults::default()));
        d.flash(&image("24.2", "8.0.4")).unwrap();
        d.reboot().unwrap();
        assert!(matches!(d.status().unwrap().power, Power::Booting { .. }));
        let out = d.wait_up(Duration::from_secs(2)).unwrap();
        assert_eq!(out, BootOutcome::Booted { slot: Slot::B });
        let s = d.status().unwrap();
        assert_eq!(s.firmware().to_string(), "24.2");
        assert_eq!(s.os().to_string(), "8.0.4");
        // Reopened from disk, it is the same device.
        let again =
            EmulatedDpu::open(dir.path(), "S1", image("0", "0"), "0".parse().unwrap()).unwrap();
        assert_eq!(again.status().unwrap(), s);
    }

    #[test]
    fn a_failed_health_check_falls_back_to_the_previous_slot() {
        let dir = tempfile::tempdir().unwrap();
        let d = dpu(
            dir.path(),
            quick(Faults {
                health_check_failures: 1,
                ..Faults::default()
            }),
        );
        d.flash(&image("24.2", "8.0.4")).unwrap();
        d.reboot().unwrap();
        let out = d.wait_up(Duration::from_secs(2)).unwrap();
        let BootOutcome::FellBack { slot, reason } = out else {
            panic!("falls back: {out:?}")
        };
        assert_eq!(slot, Slot::A);
        assert!(reason.contains("health check"), "{reason}");
        assert_eq!(d.status().unwrap().firmware().to_string(), "24.1");
    }

    #[test]
    fn a_hung_boot_falls_back_when_the_watchdog_fires() {
        let dir = tempfile::tempdir().unwrap();
        let d = dpu(
            dir.path(),
            quick(Faults {
                boot_hangs: 1,
                ..Faults::default()
            }),
        );
        d.flash(&image("24.2", "8.0.4")).unwrap();
        d.reboot().unwrap();
        let err = d.wait_up(Duration::from_millis(30)).unwrap_err();
        assert!(matches!(err, DeviceError::TimedOut { .. }), "{err}");
        let out = d.wait_up(Duration::from_secs(2)).unwrap();
        assert!(
            matches!(&out, BootOutcome::FellBack { slot: Slot::A, reason } if reason.contains("watchdog")),
            "{out:?}"
        );
    }

    #[test]
    fn a_failed_flash_leaves_the_running_slot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dpu(
            dir.path(),
            quick(Faults {
                flash_failures: 1,
                ..Faults::default()
            }),
        );
        let err = d.flash(&image("24.2", "8.0.4")).unwrap_err();
        assert!(err.retryable());
        assert!(err.to_string().contains("flashing slot B failed"), "{err}");
        let s = d.status().unwrap();
        assert_eq!(
            (s.active, s.next_boot, &s.slots[1]),
            (Slot::A, Slot::A, &None)
        );
        // The fault was for one flash: the retry goes through.
        d.flash(&image("24.2", "8.0.4")).unwrap();
        assert_eq!(d.status().unwrap().next_boot, Slot::B);
    }

    #[test]
    fn an_unreachable_device_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let d = dpu(
            dir.path(),
            quick(Faults {
                unreachable: true,
                ..Faults::default()
            }),
        );
        let err = d.status().unwrap_err();
        assert_eq!(err.to_string(), "DPU S1 is unreachable");
    }
}
