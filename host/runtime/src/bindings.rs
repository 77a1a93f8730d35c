//! Rust bindings of the plugin contract in `wit/`, generated once for the whole host.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    with: {
        "tessera:plugin/sink.content-writer": crate::sink::ContentWriter,
        "tessera:plugin/point.content-reader": crate::point::ContentReader,
    },
});

pub use exports::tessera::plugin::{capture, restore};
pub use tessera::plugin::{host, point, sink, types};
