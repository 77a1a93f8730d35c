//! Plugins built with the host (by `build.rs`) and embedded in it.

/// Name and component bytes of each embedded plugin.
pub static PLUGINS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Where the build put every plugin of the `plugins/` workspace, fixtures included.
pub const WASM_DIR: &str = env!("TESSERA_PLUGIN_WASM_DIR");
