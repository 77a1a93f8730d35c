//! The vault's operations, one module per verb.

pub mod backup;
pub mod restore;
