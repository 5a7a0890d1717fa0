//! Shared test support: packet builders and the fixture table.

pub mod fixtures;
pub mod packets;
