//! Plugins built with the host and embedded in it.

/// Name and component bytes of each embedded plugin.
pub static PLUGINS: &[(&str, &[u8])] = &[];
