//! Builds the plugins workspace (`plugins/`) for `wasm32-wasip2` so the first-party
//! plugins can be embedded in the host. The build goes to `target/plugins`, shared by every
//! profile of the host, so plugins compile once and are cached like any other build.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Plugins embedded in the host: (name, crate).
const EMBEDDED: &[(&str, &str)] = &[
    ("file-share", "tessera_plugin_file_share"),
    ("vm-disk", "tessera_plugin_vm_disk"),
];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");
    for watched in [
        "wit",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/sdk",
        "plugins/file-share",
        "plugins/vm-disk",
        "plugins/disk-image",
        "plugins/disk-fs",
        "plugins/nbd",
        "plugins/fixtures",
        // Example plugins are members of the plugins workspace; built, not embedded.
        "examples",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--workspace",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's flags and wrappers are for the host, not for the guests.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_")
            && key != "CARGO_HOME"
            && key != "CARGO_MAKEFLAGS"
            && key != "CARGO_NET_OFFLINE"
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTC" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOC"
            )
        {
            command.env_remove(key);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins in {} failed ({status}); is the wasm32-wasip2 target installed? \
             (rustup target add wasm32-wasip2)",
            plugins.display()
        );
    }

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut table = String::from("&[\n");
    for (name, krate) in EMBEDDED {
        let file = wasm_dir.join(format!("{krate}.wasm"));
        let bytes = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("the plugin build produced no {}: {e}", file.display()));
        // The bytes embedded are the very bytes hashed: a copy of their own, which a
        // later plugin build cannot change under the digest.
        let copy = out.join(format!("{krate}.wasm"));
        std::fs::write(&copy, &bytes).expect("OUT_DIR is writable");
        let digest = Sha256::digest(&bytes);
        let mut hex = String::new();
        for byte in digest {
            write!(hex, "{byte:#04x}, ").expect("writing to a String cannot fail");
        }
        writeln!(
            table,
            "    Builtin {{ name: {name:?}, bytes: include_bytes!({:?}), digest: [{hex}] }},",
            copy.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    table.push(']');
    std::fs::write(out.join("builtin.rs"), table).expect("OUT_DIR is writable");
    println!(
        "cargo:rustc-env=TESSERA_PLUGIN_WASM_DIR={}",
        wasm_dir.display()
    );
}
