//! The guest-side SDK for tessera plugins: bindings for the `tessera:plugin@0.1.0`
//! contract, generated once here so every plugin shares the same types, plus the helpers
//! a plugin needs around them. With it a plugin is mostly workload logic: it implements
//! the four `Guest` traits on one type and calls [`export_plugin!`] on it.
//!
//! ```ignore
//! use tessera_plugin_sdk::prelude::*;
//!
//! struct MyPlugin;
//! impl describe::Guest for MyPlugin { /* ... */ }
//! impl capture::Guest for MyPlugin { /* ... */ }
//! impl restore::Guest for MyPlugin { /* ... */ }
//! impl browse::Guest for MyPlugin { /* ... */ }
//! tessera_plugin_sdk::export_plugin!(MyPlugin);
//! ```

pub mod content;
pub mod error;
pub mod filter;
pub mod fs;
pub mod log;
pub mod meta;
pub mod path;
pub mod settings;
pub mod target;

/// Bindings generated from the contract's `plugin` world.
///
/// Generated code is not held to this crate's lints: it is unsafe by nature (it is the
/// canonical ABI) and carries the contract's own documentation.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "tessera_plugin_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

/// Exports a type implementing the four `Guest` traits as the plugin's component
/// exports; call it once, at the top level of the plugin crate.
pub use bindings::export_plugin;
pub use bindings::exports::tessera::plugin::{browse, capture, describe, restore};
pub use bindings::tessera::plugin::{host, net, point, sink, types};

/// The contract version these bindings were generated from, for `plugin-info.contract`.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The size of one piece of content moved across the contract: the contract asks for
/// pieces of about 1 MiB, large enough to amortise a call and small enough to bound the
/// memory a call copies.
pub const PIECE: usize = 1 << 20;

/// The names most plugins use, for a glob import.
pub mod prelude {
    pub use crate::browse;
    pub use crate::capture::{self, CaptureRequest, CaptureSummary};
    pub use crate::describe::{self, PluginInfo};
    pub use crate::host;
    pub use crate::net;
    pub use crate::point;
    pub use crate::restore::{self, RestoreRequest, RestoreSummary};
    pub use crate::sink;
    pub use crate::types::{
        ByteRange, Capability, Chunking, Consistency, EntryInfo, EntryKind, HostError, Metadata,
        PluginError, Setting, SettingKind, SettingSpec, WorkloadKind, Xattr,
    };
}
