//! Plugins built with the host (by `build.rs`) and embedded in it.

/// A plugin embedded in the host.
pub struct Builtin {
    pub name: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// SHA-256 of `bytes`, taken when they were embedded: it names the compiled image in
    /// the component cache, so a command that finds the image never reads the bytes.
    pub digest: [u8; 32],
}

/// Each embedded plugin.
pub static PLUGINS: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Where the build put every plugin of the `plugins/` workspace, fixtures included.
pub const WASM_DIR: &str = env!("TESSERA_PLUGIN_WASM_DIR");
