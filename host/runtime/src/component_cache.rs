//! The on-disk cache of compiled components. A component is compiled once per engine
//! configuration and stored as wasmtime's uncompressed native image, which a later load
//! maps from the file: no compilation (seconds) and no decompression or copying
//! (milliseconds, on every command that runs a plugin).
//!
//! A cached image is native code the process will run, so it is used only from a
//! directory and file that belong to the user running tessera and that nobody else may
//! write. Anything else found there (another owner, loose permissions, a damaged or
//! foreign file) is ignored and replaced by a fresh compilation.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components of one engine configuration, in a directory of their own.
#[derive(Debug)]
pub(crate) struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    /// The cache for `engine` under `root`: images are kept apart by the engine's
    /// compatibility hash, so another wasmtime version or configuration never meets them.
    pub(crate) fn new(root: &Path, engine: &Engine) -> ComponentCache {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir: root.join(format!("native-{:016x}", hasher.finish())),
        }
    }

    /// Where the image of the component whose SHA-256 is `digest` is kept.
    fn path_of(&self, digest: &[u8; 32]) -> PathBuf {
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The component `bytes`, from its cached image when there is a usable one, else
    /// compiled (validating it) and cached for the next time. A cache that cannot be
    /// written costs only the next load's compilation.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.load_hashed(engine, bytes, &Sha256::digest(bytes).into())
    }

    /// [`ComponentCache::load`] for bytes whose SHA-256 is known to be `digest` (a plugin
    /// embedded with its digest): a usable image is found without reading them.
    pub(crate) fn load_hashed(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> wasmtime::Result<Component> {
        let path = self.path_of(digest);
        if is_trusted(&path) {
            match deserialize_file(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::debug!(
                    path = %path.display(),
                    error = %e,
                    "compiling again over an unusable cached component"
                ),
            }
        }
        let image = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&path, &image) {
            tracing::debug!(path = %path.display(), error = %e, "cannot cache a compiled component");
        }
        deserialize(engine, &image)
    }

    /// Writes `image` to `path` through a temporary file, readable by its owner only.
    fn store(&self, path: &Path, image: &[u8]) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let temp = path.with_extension(format!("tmp{}", std::process::id()));
        // A leftover of a process with the same id that died mid-write.
        let _ = fs::remove_file(&temp);
        let result = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| file.write_all(image))
            .and_then(|()| fs::rename(&temp, path));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Whether the cached image at `path` may be run: a regular file owned by this user in
/// a directory owned by this user, neither writable by anyone else.
fn is_trusted(path: &Path) -> bool {
    let uid = rustix::process::geteuid().as_raw();
    let private = |meta: &fs::Metadata| meta.uid() == uid && meta.mode() & 0o022 == 0;
    let Some(dir) = path.parent() else {
        return false;
    };
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && private(&m))
        && fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && private(&m))
}

/// Maps a cached image.
#[allow(unsafe_code)]
fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file is wasmtime's own output for an engine of this configuration
    // (its directory is named by the engine's compatibility hash, and wasmtime checks
    // the image's header against the engine), written by this user into a directory
    // only this user may write (`is_trusted`); whoever can change it can change the
    // tessera binary's configuration and caches anyway.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Loads an image just compiled by `engine`.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, image: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `image` is what `engine.precompile_component` returned a moment ago.
    unsafe { Component::deserialize(engine, image) }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    /// A real component: the file-share plugin embedded in this build.
    fn plugin() -> &'static [u8] {
        crate::builtin::PLUGINS
            .iter()
            .find(|plugin| plugin.name == "file-share")
            .map(|plugin| plugin.bytes)
            .unwrap()
    }

    fn path_of(cache: &ComponentCache, bytes: &[u8]) -> PathBuf {
        cache.path_of(&Sha256::digest(bytes).into())
    }

    fn exports(component: &Component, engine: &Engine) -> Vec<String> {
        component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    #[test]
    fn a_component_is_compiled_once_and_then_mapped() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(root.path(), &engine);
        let first = cache.load(&engine, plugin()).unwrap();
        let path = path_of(&cache, plugin());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&cache.dir).unwrap().mode() & 0o777, 0o700);
        assert!(matches!(
            Engine::detect_precompiled_file(&path).unwrap(),
            Some(wasmtime::Precompiled::Component)
        ));

        let second = cache.load(&engine, plugin()).unwrap();
        assert_eq!(exports(&first, &engine), exports(&second, &engine));
        assert_eq!(
            fs::metadata(&path).unwrap().modified().unwrap(),
            meta.modified().unwrap(),
            "a usable image is not written again"
        );
        // Nothing but the image is left in the directory.
        assert_eq!(fs::read_dir(&cache.dir).unwrap().count(), 1);
    }

    #[test]
    fn damaged_or_loosely_owned_images_are_compiled_again() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(root.path(), &engine);
        cache.load(&engine, plugin()).unwrap();
        let path = path_of(&cache, plugin());
        let good = fs::read(&path).unwrap();

        // Garbage, then a truncated image: both replaced by a working one.
        for bad in [
            b"not a compiled component".to_vec(),
            good[..good.len() / 2].to_vec(),
        ] {
            fs::write(&path, &bad).unwrap();
            let component = cache.load(&engine, plugin()).unwrap();
            assert!(!exports(&component, &engine).is_empty());
            assert_eq!(fs::read(&path).unwrap(), good);
        }

        // A file others may write is not run, however good its bytes.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!is_trusted(&path));
        cache.load(&engine, plugin()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(is_trusted(&path));
        // Nor one in a directory others may write.
        fs::set_permissions(&cache.dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!is_trusted(&path));
    }

    #[test]
    fn invalid_components_are_refused_and_not_cached() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ComponentCache::new(root.path(), &engine);
        assert!(cache.load(&engine, b"\0asm garbage").is_err());
        assert!(!path_of(&cache, b"\0asm garbage").exists());
    }
}
