//! QEMU fixtures: images built with qemu-img and qemu-io in a temporary directory, and NBD
//! servers (qemu-nbd, qemu-storage-daemon) on a free loopback port, killed when their guard is
//! dropped, also when a test fails.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_nbd::{Client, ConnectOptions, NbdError};

/// How long a server may take to start listening.
const STARTUP: Duration = Duration::from_secs(20);

/// Read and write timeout of test connections: a stuck server fails the test instead of
/// hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting a server, each on a new port, in case another process takes the port
/// between the probe and the server's bind.
const START_ATTEMPTS: usize = 5;

/// The path of a QEMU tool, or a failure explaining that it is needed.
pub fn tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (not found in PATH); these tests need the QEMU tools \
                 qemu-img, qemu-io, qemu-nbd and qemu-storage-daemon (Debian: qemu-utils and \
                 qemu-system-common)"
            )
        })
}

/// Runs a tool to completion; its standard output, or a failure with its standard error.
pub fn run(name: &str, args: &[&str]) -> String {
    let output = Command::new(tool(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates a qcow2 image of `size` bytes.
pub fn create_qcow2(path: &Path, size: u64) {
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=65536",
            path.to_str().unwrap(),
            &size.to_string(),
        ],
    );
}

/// Runs qemu-io commands (`write -P 0x5a 0 64k`, …) on a qcow2 image.
pub fn qemu_io(path: &Path, commands: &[String]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

/// The image's guest contents, through `qemu-img convert -O raw`.
pub fn raw_contents(image: &Path, scratch: &Path) -> Vec<u8> {
    let raw = scratch.join(format!(
        "{}.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    run(
        "qemu-img",
        &[
            "convert",
            "-U",
            "-f",
            "qcow2",
            "-O",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    std::fs::read(raw).unwrap()
}

/// A running NBD server; killed on drop.
pub struct Server {
    child: Child,
    port: u16,
    export: String,
    log: PathBuf,
}

impl Server {
    /// `qemu-nbd` serving `image` (qcow2) as `export`, with `extra` arguments such as `-r` or
    /// `-B BITMAP`.
    pub fn qemu_nbd(dir: &Path, image: &Path, export: &str, extra: &[&str]) -> Server {
        let mut args = vec!["-f", "qcow2"];
        args.extend_from_slice(extra);
        Server::qemu_nbd_with(dir, export, &args, image.as_os_str())
    }

    /// `qemu-nbd` serving the block graph `image_opts` (its `--image-opts` syntax, for example
    /// a raw file under `blkdebug` that injects errors) read-only as `export`.
    pub fn qemu_nbd_image_opts(dir: &Path, image_opts: &str, export: &str) -> Server {
        Server::qemu_nbd_with(dir, export, &["--image-opts", "-r"], image_opts.as_ref())
    }

    /// `qemu-nbd` on loopback serving `target` as `export`, with `args` before it.
    fn qemu_nbd_with(dir: &Path, export: &str, args: &[&str], target: &OsStr) -> Server {
        Server::start(dir, export, |port| {
            let mut c = Command::new(tool("qemu-nbd"));
            c.args(["--persistent", "--shared=8", "--bind", "127.0.0.1"])
                .arg(format!("--port={port}"))
                .args(["-x", export])
                .args(args)
                .arg(target);
            c
        })
    }

    /// `qemu-storage-daemon` exporting `image` (qcow2) as `export`, writable or on read-only
    /// nodes, with the dirty bitmap `bitmap` exported as `qemu:dirty-bitmap:NAME`.
    pub fn storage_daemon(
        dir: &Path,
        image: &Path,
        export: &str,
        writable: bool,
        bitmap: Option<&str>,
    ) -> Server {
        let read_only = if writable { "off" } else { "on" };
        let mut export_arg = format!("type=nbd,id=export0,node-name=disk0,name={export}");
        if writable {
            export_arg.push_str(",writable=on");
        }
        if let Some(bitmap) = bitmap {
            export_arg.push_str(&format!(",bitmaps.0={bitmap}"));
        }
        Server::start(dir, export, |port| {
            let mut c = Command::new(tool("qemu-storage-daemon"));
            c.arg("--blockdev")
                .arg(format!(
                    "driver=file,node-name=file0,filename={},read-only={read_only}",
                    image.display()
                ))
                .arg("--blockdev")
                .arg(format!(
                    "driver=qcow2,node-name=disk0,file=file0,read-only={read_only}"
                ))
                .arg("--nbd-server")
                .arg(format!(
                    "addr.type=inet,addr.host=127.0.0.1,addr.port={port}"
                ))
                .arg("--export")
                .arg(&export_arg);
            c
        })
    }

    fn start(dir: &Path, export: &str, command: impl Fn(u16) -> Command) -> Server {
        let log = dir.join("server.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let out = File::create(&log).unwrap();
            let child = command(port)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the NBD server: {e}"));
            let mut server = Server {
                child,
                port,
                export: export.to_owned(),
                log: log.clone(),
            };
            if server.wait_listening() {
                return server;
            }
            // The server exited. If another process took the port between the probe and the
            // server's bind, try another; anything else is a real failure.
            if !server.log_text().contains("Address already in use") {
                panic!("the NBD server failed to start: {}", server.log_text());
            }
        }
        panic!(
            "the NBD server did not start after {START_ATTEMPTS} attempts: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Polls until the server accepts connections; `false` if it exited first.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the NBD server did not listen within {STARTUP:?}: {}",
                self.log_text()
            );
            // An external process gives no readiness signal but its port: poll it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's output so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A TCP connection to the server with test timeouts.
    pub fn stream(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Connects a client to the served export.
    pub fn connect(&self, contexts: &[&str]) -> Result<Client<TcpStream>, NbdError> {
        Client::connect(self.stream(), &self.export, contexts)
    }

    /// Connects a client with explicit options.
    pub fn connect_with(&self, options: &ConnectOptions) -> Result<Client<TcpStream>, NbdError> {
        Client::connect_with(self.stream(), options)
    }

    /// Stops the server and waits for it to exit, releasing its lock on the image.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A map entry of `qemu-img map --output=json`.
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    pub data: bool,
    pub zero: bool,
}

/// How QEMU itself maps the image.
pub fn qemu_img_map(image: &Path) -> Vec<MapEntry> {
    let json = run(
        "qemu-img",
        &[
            "map",
            "-U",
            "--output=json",
            "-f",
            "qcow2",
            image.to_str().unwrap(),
        ],
    );
    let entries: serde_json::Value = serde_json::from_str(&json).unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| MapEntry {
            start: e["start"].as_u64().unwrap(),
            length: e["length"].as_u64().unwrap(),
            data: e["data"].as_bool().unwrap(),
            zero: e["zero"].as_bool().unwrap(),
        })
        .collect()
}
