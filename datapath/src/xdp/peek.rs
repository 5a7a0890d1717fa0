//! A running XDP datapath's flow cache, read from its pinned maps without
//! touching it: what `dse trace` shows for a frame's key.

use super::XdpError;
use super::mirror;
use crate::compile::FlowKey;
use crate::pipeline::Cached;
use aya::maps::{Array, HashMap, Map, MapData};
use dse_ebpf::maps;
use std::path::Path;

/// The XDP program's `cache_hash` (`classify.h`), which keys its flow
/// cache: one multiply a key word.
pub fn cache_hash(key: &FlowKey) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for w in key.words() {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h ^ (h >> 29)
}

fn open(pin_dir: &Path, map: &'static str) -> Result<Map, XdpError> {
    let data = MapData::from_pin(pin_dir.join(map)).map_err(|e| XdpError::Map {
        map,
        what: "open from its pin",
        source: Box::new(e),
    })?;
    Ok(match map {
        maps::CACHE => Map::LruHashMap(data),
        _ => Map::Array(data),
    })
}

fn read_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map,
        what: "read",
        source: Box::new(e),
    }
}

/// What the flow cache of the datapath pinned under `pin_dir` holds for
/// `key`.
///
/// # Errors
/// [`XdpError::Map`] if a pinned map cannot be opened or read (no such
/// datapath there, or not root).
pub fn cached(pin_dir: &Path, key: &FlowKey) -> Result<Cached, XdpError> {
    let cache: HashMap<_, u64, dse_ebpf::CacheEntry> =
        HashMap::try_from(open(pin_dir, maps::CACHE)?).map_err(read_err(maps::CACHE))?;
    let entry = match cache.get(&cache_hash(key), 0) {
        Ok(e) => e,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(Cached::Miss),
        Err(e) => return Err(read_err(maps::CACHE)(e)),
    };
    if mirror::flow_key(&entry.key) != *key {
        return Ok(Cached::Other);
    }
    let state: Array<_, dse_ebpf::State> =
        Array::try_from(open(pin_dir, maps::STATE)?).map_err(read_err(maps::STATE))?;
    let current = state.get(&0, 0).map_err(read_err(maps::STATE))?.generation;
    if entry.value.generation != current {
        return Ok(Cached::Stale {
            generation: entry.value.generation,
            current,
        });
    }
    let rules: Array<_, dse_ebpf::RuleRecord> =
        Array::try_from(open(pin_dir, maps::RULES)?).map_err(read_err(maps::RULES))?;
    let slot = entry.value.slot;
    let rule = rules.get(&slot, 0).map_err(read_err(maps::RULES))?.id;
    Ok(Cached::Hit { slot, rule })
}
