//! End-to-end tests of the vault engine, one module per theme.

mod concurrency;
mod crash;
mod examples;
mod fileshare;
mod keys;
mod prune;
mod roundtrip;
mod sandbox;
mod tamper;
mod vmdisk;
