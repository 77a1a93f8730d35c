//! The vault's operations, one module per verb.

pub mod backup;
pub mod check;
pub mod diff;
pub mod find;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod rewrite;
pub mod stats;
pub mod tag;
pub mod walk;
