//! What one job's sandbox holds: the host directories granted to the plugin (each a WASI
//! preopen and a root of the host-call [`Grant`]), the block devices granted to it (each a
//! root of the host-call grant holding that device only, never preopened) and the network
//! addresses it may connect to. Everything else stays out of reach.
//!
//! With one granted root the plugin sees it as `source` (or `target`); with several as
//! `source/0`, `source/1`, ... in the order the operator named them, and host-call paths
//! start with that number. A device is named inside its root by its file name
//! (`source/1/dm-3`), and only host calls (`stat`, `holes`, `write-file`) reach it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::{Result, RuntimeError};
use crate::grant::{Access, Grant, RootKind};

/// Something a capture reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureSource {
    /// A directory tree: the directory itself is granted.
    Directory(PathBuf),
    /// A file (a disk image): its directory is granted, so files next to it (a backing
    /// chain) can be read too. A block device (after following symlinks) is granted
    /// alone, read-only, and never its directory; a character device, fifo or socket is
    /// refused.
    File(PathBuf),
    /// A network address, `SCHEME://HOST:PORT/...` (`nbd://...` for a live disk): the
    /// plugin may connect to that address and no other.
    Address(String),
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// A directory, granted read-write.
    Directory(PathBuf),
    /// A network address (an NBD export to write a disk onto).
    Address(String),
}

/// The sandbox of a capture, with what the plugin is told.
#[derive(Debug, Clone)]
pub struct CapturePlan {
    /// The sandbox.
    pub sandbox: Sandbox,
    /// The sources as sandbox paths and resolved addresses.
    pub sources: Vec<String>,
    /// File settings with their sandbox paths.
    pub settings: Vec<(String, String)>,
}

/// A host directory or block device granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host path.
    pub host: PathBuf,
    /// A directory, or one device.
    pub kind: RootKind,
    /// Its sandbox path: where a directory is preopened; for a device, the root the
    /// device's name is in for host calls (nothing is preopened there).
    pub sandbox: String,
}

/// A planned sandbox.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Granted host directories and devices, numbered in this order for host calls.
    pub mounts: Vec<Mount>,
    /// Addresses the plugin may connect to.
    pub network: Vec<SocketAddr>,
}

impl Sandbox {
    /// Plans the sandbox of a capture: the sources' directories and devices and the extra
    /// `grants`, each granted once, under `mount`. Returns it with the sources as the
    /// plugin is told them (sandbox paths, and addresses with the host name resolved).
    ///
    /// `files` are settings whose values are host files: each file's directory is granted
    /// too, and the setting's value becomes the file's sandbox path (appended to the
    /// returned settings).
    pub fn for_capture(
        sources: &[CaptureSource],
        grants: &[PathBuf],
        files: &[(String, PathBuf)],
        mount: &str,
    ) -> Result<CapturePlan> {
        let mut roots: Vec<(PathBuf, RootKind)> = Vec::new();
        let mut add = |path: &Path, kind: RootKind| -> usize {
            match roots.iter().position(|(p, k)| p == path && *k == kind) {
                Some(i) => i,
                None => {
                    roots.push((path.to_path_buf(), kind));
                    roots.len() - 1
                }
            }
        };
        enum Planned {
            Dir(usize),
            File(usize, String),
            Address(String),
        }
        let mut planned = Vec::new();
        let mut network = Vec::new();
        for source in sources {
            planned.push(match source {
                CaptureSource::Directory(dir) => Planned::Dir(add(dir, RootKind::Directory)),
                CaptureSource::File(file) => {
                    let (path, kind) = file_root(file)?;
                    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                        return Err(grant_error("source", file, "not a file path".into()));
                    };
                    let name = name.to_str().ok_or_else(|| {
                        grant_error("source", file, "the file name is not UTF-8".into())
                    })?;
                    let root = match kind {
                        RootKind::Directory => add(dir, kind),
                        RootKind::Device => add(&path, kind),
                    };
                    Planned::File(root, name.to_string())
                }
                CaptureSource::Address(url) => {
                    let (told, addrs) = resolve_address(url)?;
                    network.extend(addrs);
                    Planned::Address(told)
                }
            });
        }
        for dir in grants {
            add(dir, RootKind::Directory);
        }
        let mut file_settings = Vec::new();
        for (name, file) in files {
            let (Some(dir), Some(base)) =
                (file.parent(), file.file_name().and_then(|b| b.to_str()))
            else {
                return Err(grant_error("file", file, "not a UTF-8 file path".into()));
            };
            file_settings.push((
                name.clone(),
                add(dir, RootKind::Directory),
                base.to_string(),
            ));
        }
        let single = roots.len() == 1;
        let sandbox_path = |i: usize| {
            if single {
                mount.to_string()
            } else {
                format!("{mount}/{i}")
            }
        };
        let told = planned
            .into_iter()
            .map(|p| match p {
                Planned::Dir(i) => sandbox_path(i),
                Planned::File(i, name) => format!("{}/{name}", sandbox_path(i)),
                Planned::Address(url) => url,
            })
            .collect();
        let settings = file_settings
            .into_iter()
            .map(|(name, i, base)| (name, format!("{}/{base}", sandbox_path(i))))
            .collect();
        let mounts = roots
            .into_iter()
            .enumerate()
            .map(|(i, (host, kind))| Mount {
                host,
                kind,
                sandbox: sandbox_path(i),
            })
            .collect();
        Ok(CapturePlan {
            sandbox: Sandbox { mounts, network },
            sources: told,
            settings,
        })
    }

    /// Plans the sandbox of a restore; returns it with the target as the plugin is told.
    pub fn for_restore(target: &RestoreTarget, mount: &str) -> Result<(Sandbox, String)> {
        match target {
            RestoreTarget::Directory(dir) => Ok((
                Sandbox {
                    mounts: vec![Mount {
                        host: dir.clone(),
                        kind: RootKind::Directory,
                        sandbox: mount.to_string(),
                    }],
                    network: Vec::new(),
                },
                mount.to_string(),
            )),
            RestoreTarget::Address(url) => {
                let (told, network) = resolve_address(url)?;
                Ok((
                    Sandbox {
                        mounts: Vec::new(),
                        network,
                    },
                    told,
                ))
            }
        }
    }

    /// The granted directories and their sandbox paths: the WASI preopens, and what a
    /// plugin is told it may look for backing files in. Devices are not among them.
    pub fn directories(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.mounts
            .iter()
            .filter(|m| m.kind == RootKind::Directory)
            .map(|m| (m.host.as_path(), m.sandbox.as_str()))
    }

    /// The host-call grant over the mounted directories and devices, if there are any.
    pub fn grant(&self, access: Access, what: &'static str) -> Result<Option<Grant>> {
        if self.mounts.is_empty() {
            return Ok(None);
        }
        let roots: Vec<(&Path, RootKind)> = self
            .mounts
            .iter()
            .map(|m| (m.host.as_path(), m.kind))
            .collect();
        Grant::open_many(&roots, access)
            .map(Some)
            .map_err(|(i, e)| grant_error(what, roots[i].0, e.to_string()))
    }

    /// The WASI context: the granted directories as preopens (devices are reached through
    /// host calls only), and TCP to the allowed addresses only.
    pub fn wasi(&self, access: Access, what: &'static str) -> Result<WasiCtxBuilder> {
        let mut builder = WasiCtxBuilder::new();
        // No environment, arguments, standard input, name lookups or UDP.
        builder
            .allow_tcp(!self.network.is_empty())
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Jobs run on their own thread with synchronous bindings: file system calls
            // block that thread instead of hopping through a blocking-task pool.
            .allow_blocking_current_thread(true);
        if !self.network.is_empty() {
            let allowed = self.network.clone();
            builder.socket_addr_check(move |addr, usage| {
                let ok = match usage {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    // The implicit bind of an outgoing connection.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        let perms = match access {
            Access::Read => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        for (dir, guest) in self.directories() {
            builder
                .preopened_dir(dir, guest, perms)
                .map_err(|e| grant_error(what, dir, e.to_string()))?;
        }
        Ok(builder)
    }
}

/// What a file source grants: a block device alone (its path with the operator's
/// symlinks followed), or for anything else the directory holding the path. A path that
/// cannot be looked at is planned as a file; opening the grant reports it.
fn file_root(file: &Path) -> Result<(PathBuf, RootKind)> {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok((file.to_path_buf(), RootKind::Directory));
    };
    let kind = meta.file_type();
    if kind.is_block_device() {
        let device = file
            .canonicalize()
            .map_err(|e| grant_error("source", file, e.to_string()))?;
        return Ok((device, RootKind::Device));
    }
    let refused = if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else {
        return Ok((file.to_path_buf(), RootKind::Directory));
    };
    Err(grant_error(
        "source",
        file,
        format!("{refused}, not a disk image or a block device"),
    ))
}

fn grant_error(what: &'static str, path: &Path, detail: String) -> RuntimeError {
    RuntimeError::Grant {
        what,
        path: path.to_path_buf(),
        detail,
    }
}

/// Resolves the host of `SCHEME://HOST:PORT/REST`; returns the address with the host
/// replaced by the first address it resolves to (the plugin may not look names up), and
/// every address it resolves to.
fn resolve_address(url: &str) -> Result<(String, Vec<SocketAddr>)> {
    let bad = |detail: &str| RuntimeError::Grant {
        what: "network address",
        path: PathBuf::from(url),
        detail: detail.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected SCHEME://HOST:PORT/..."))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let default_port = match scheme {
        "nbd" => 10809,
        _ => return Err(bad("only nbd:// addresses are supported")),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(port) => (host, port),
                // An IPv6 literal without a port.
                Err(_) if authority.starts_with('[') => (authority, default_port),
                Err(_) => return Err(bad("the port is not a number")),
            }
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
        .collect();
    let first = addrs
        .first()
        .ok_or_else(|| bad(&format!("{host} resolves to no address")))?;
    Ok((format!("{scheme}://{first}{path}"), addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_is_the_mount_itself() {
        let CapturePlan {
            sandbox,
            sources: told,
            settings,
        } = Sandbox::for_capture(
            &[
                CaptureSource::File("/vm/a.qcow2".into()),
                CaptureSource::File("/vm/b.raw".into()),
            ],
            &[],
            &[("config".to_string(), PathBuf::from("/vm/vm.xml"))],
            "source",
        )
        .unwrap();
        assert_eq!(told, ["source/a.qcow2", "source/b.raw"]);
        assert_eq!(
            settings,
            [("config".to_string(), "source/vm.xml".to_string())]
        );
        assert_eq!(
            sandbox.directories().collect::<Vec<_>>(),
            [(Path::new("/vm"), "source")]
        );
    }

    #[test]
    fn several_directories_are_numbered() {
        let CapturePlan {
            sandbox,
            sources: told,
            ..
        } = Sandbox::for_capture(
            &[
                CaptureSource::File("/a/x.qcow2".into()),
                CaptureSource::Address("nbd://127.0.0.1:10900/disk".into()),
                CaptureSource::File("/b/y.raw".into()),
            ],
            &[PathBuf::from("/base")],
            &[],
            "source",
        )
        .unwrap();
        assert_eq!(
            told,
            [
                "source/0/x.qcow2",
                "nbd://127.0.0.1:10900/disk",
                "source/1/y.raw"
            ]
        );
        assert_eq!(sandbox.mounts.len(), 3);
        assert_eq!(sandbox.mounts[2].sandbox, "source/2");
        assert_eq!(sandbox.network, ["127.0.0.1:10900".parse().unwrap()]);
    }

    #[test]
    fn a_block_device_is_granted_alone_and_never_preopened() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let device = match crate::loop_device::LoopDevice::attach(&image) {
            Ok(device) => device,
            Err(reason) => {
                eprintln!("skipped: {reason}");
                return;
            }
        };
        // The operator's link is followed on the host; the device is granted, not /dev.
        let link = dir.path().join("lv0");
        std::os::unix::fs::symlink(&device.path, &link).unwrap();
        let CapturePlan {
            sandbox,
            sources: told,
            ..
        } = Sandbox::for_capture(
            &[CaptureSource::File(link), CaptureSource::File(image)],
            &[],
            &[],
            "source",
        )
        .unwrap();
        assert_eq!(
            told,
            [
                format!("source/0/{}", device.name()),
                "source/1/disk.raw".to_string()
            ]
        );
        assert_eq!(
            sandbox.mounts[0],
            Mount {
                host: device.path.clone(),
                kind: RootKind::Device,
                sandbox: "source/0".into(),
            }
        );
        // The WASI preopens: the image's directory only.
        assert_eq!(
            sandbox.directories().collect::<Vec<_>>(),
            [(dir.path(), "source/1")]
        );
        assert!(!sandbox.mounts.iter().any(|m| m.host == Path::new("/dev")));
        let grant = sandbox.grant(Access::Read, "source").unwrap().unwrap();
        assert!(grant.stat(&format!("0/{}", device.name())).is_ok());
        assert!(grant.stat("0/null").is_err());
        assert!(grant.stat("1/disk.raw").is_ok());
    }

    #[test]
    fn character_devices_are_refused_as_sources() {
        for device in ["/dev/null", "/dev/zero"] {
            let err =
                Sandbox::for_capture(&[CaptureSource::File(device.into())], &[], &[], "source")
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains(device) && err.contains("character device"),
                "{err}"
            );
        }
    }

    #[test]
    fn addresses_are_resolved_for_the_plugin() {
        let (told, addrs) = resolve_address("nbd://localhost:10809/export").unwrap();
        assert!(told.ends_with(":10809/export"), "{told}");
        assert!(!told.contains("localhost"));
        assert!(!addrs.is_empty());
        assert_eq!(
            resolve_address("nbd://[::1]/x").unwrap().0,
            "nbd://[::1]:10809/x"
        );
        assert!(resolve_address("http://example/x").is_err());
        assert!(resolve_address("nbd://host:port/x").is_err());
        assert!(resolve_address("disk.qcow2").is_err());
    }
}
