//! Rust bindings of the plugin contract in `wit/`, generated once for the whole host.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    with: {
        "tessera:plugin/sink.content-writer": crate::sink::ContentWriter,
        "tessera:plugin/point.content-reader": crate::point::ContentReader,
        "tessera:plugin/net.connection": crate::net::Connection,
        "tessera:plugin/net.buffer": crate::net::Buffer,
    },
});

pub use exports::tessera::plugin::{capture, restore};
pub use tessera::plugin::{host, net, point, sink, types};
