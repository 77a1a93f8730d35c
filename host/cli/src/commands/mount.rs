//! `tessera mount`: the vault's recovery points as a read-only file system.
//!
//! ```text
//! MOUNTPOINT/ids/3fa2c1d0/...              one directory per point, named by its id
//! MOUNTPOINT/items/%2Fsrv%2Fwww/2026-12-07T09:38:33 -> ../../ids/3fa2c1d0
//! MOUNTPOINT/items/%2Fsrv%2Fwww/latest     -> the item's newest point
//! MOUNTPOINT/tags/release/2026-12-07T09:38:33 -> ../../ids/3fa2c1d0
//! ```
//!
//! A point's directory holds what the point stores, with its metadata: a file share's
//! tree, a VM's disks as raw images (`disk0`, readable at any offset, so a disk can be
//! attached with `losetup -r` or compared with `qemu-img compare`) and its configuration.
//! Hard links read as the file they name. Item and tag names are percent-encoded (`/` is
//! `%2F`).
//! Data is read from the vault when asked for, a chunk at a time, and checked as any
//! restore checks it; nothing is ever written. Points made or forgotten while the vault is
//! mounted appear and go: the mount's own directories (`ids`, `items`, `tags` and theirs)
//! list the vault's points again when used [`REFRESH`] after they last did. The command
//! serves until the file system is unmounted (`umount`, `fusermount3 -u`) or it is
//! interrupted (Ctrl-C, SIGTERM), which unmounts it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use clap::Args;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use tessera_vault::{ContentReader, Entry, EntryKind, Metadata, Point, PointId, Vault};

use crate::context::Context;
use crate::progress;

/// Flags of `tessera mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty directory to mount the points on
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Let other users than the one mounting read the file system (needs
    /// `user_allow_other` in /etc/fuse.conf unless run as root); file modes still apply
    #[arg(long)]
    pub allow_other: bool,
}

/// How long the kernel may keep what it was told of a point's entries: points never
/// change.
const TTL: Duration = Duration::from_secs(3600);
/// How long the mount's own directories and links hold before the vault's points are
/// listed again; also how long the kernel may keep what it was told of them.
const REFRESH: Duration = Duration::from_secs(2);
/// Hard links followed before giving up (see `dump`).
const MAX_LINKS: usize = 8;
/// Shortest id prefix naming a point's directory.
const SHORT_ID: usize = 8;
/// How often the command looks for an interruption or an unmount.
const POLL: Duration = Duration::from_millis(100);

/// Mounts the points and serves them until unmounted or interrupted.
pub fn run(ctx: &Context, args: &MountArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let points = vault.points()?;
    let count = points.len();
    let fs = VaultFs::new(vault, Catalog::new(points));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("tessera".into()),
        MountOption::Subtype("tessera".into()),
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    // Two readers at once: chunks decode on both cores.
    config.n_threads = Some(2);
    let session = fuser::spawn_mount(fs, &args.mountpoint, &config)
        .with_context(|| format!("cannot mount the vault on {}", args.mountpoint.display()))?;
    ctx.output.note(&format!(
        "{count} recovery points mounted on {}; unmount it or press Ctrl-C to end",
        args.mountpoint.display()
    ));
    let mut last_try: Option<std::time::Instant> = None;
    loop {
        std::thread::sleep(POLL);
        if session.guard.is_finished() {
            return session
                .join()
                .context("the file system ended with an error");
        }
        // Asked to stop: unmount, which ends the session. While files are open there
        // the kernel refuses; they keep working, and the unmount is tried again.
        if progress::cancelled() && last_try.is_none_or(|at| at.elapsed() >= RETRY_UNMOUNT) {
            if let Err(err) = unmount(&args.mountpoint)
                && last_try.is_none()
            {
                ctx.output.warn(&format!(
                    "cannot unmount {} yet ({err}); trying again until the files open                      there are closed (press Ctrl-C again to quit at once)",
                    args.mountpoint.display()
                ));
            }
            last_try = Some(std::time::Instant::now());
        }
    }
}

/// How often an unmount refused (files still open) is tried again.
const RETRY_UNMOUNT: Duration = Duration::from_secs(1);

/// Unmounts the file system at `path`: directly as root, else through `fusermount3`.
fn unmount(path: &std::path::Path) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty())
            .map_err(|errno| std::io::Error::from(errno).into());
    }
    let output = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-q")
        .arg(path)
        .output()
        .context("cannot run fusermount3")?;
    if output.status.success() {
        return Ok(());
    }
    anyhow::bail!("{}", String::from_utf8_lossy(&output.stderr).trim_end())
}

/// What an inode is.
#[derive(Debug, Clone)]
enum Node {
    /// The mount's root: `ids`, `items` and `tags`.
    Root,
    /// `ids/`: a directory per point.
    Ids,
    /// `items/` or `tags/`: a directory per protected item or tag.
    Groups(Grouping),
    /// `items/ITEM/` or `tags/TAG/` (the item or tag): a link per point, and `latest`.
    Group(Grouping, String),
    /// A symbolic link the mount makes.
    Link(String),
    /// An entry of a point (its root when `path` is empty).
    Entry {
        point: PointId,
        path: String,
        entry: Arc<Entry>,
    },
}

/// The inodes handed out so far.
#[derive(Debug, Default)]
struct Inodes {
    nodes: Vec<Node>,
    by_name: HashMap<(u64, String), u64>,
}

impl Inodes {
    fn node(&self, ino: INodeNo) -> Option<Node> {
        let index = usize::try_from(ino.0.checked_sub(1)?).ok()?;
        self.nodes.get(index).cloned()
    }

    /// The inode of `name` in `parent`, made for `node` the first time. A link the
    /// mount makes takes `node`'s target: `latest` moves to newer points.
    fn child(&mut self, parent: INodeNo, name: &str, node: Node) -> INodeNo {
        let key = (parent.0, name.to_owned());
        if let Some(&ino) = self.by_name.get(&key) {
            if let (Node::Link(_), Some(kept @ Node::Link(_))) =
                (&node, self.nodes.get_mut(ino as usize - 1))
            {
                *kept = node;
            }
            return INodeNo(ino);
        }
        self.nodes.push(node);
        let ino = self.nodes.len() as u64;
        self.by_name.insert(key, ino);
        INodeNo(ino)
    }
}

/// How points are grouped under the mount's root besides `ids/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    /// `items/`, by protected item.
    Items,
    /// `tags/`, by tag (a point with several is in each).
    Tags,
}

/// A directory of `items/` or `tags/`.
struct LinkDir {
    /// Its name: the item's or tag's, escaped.
    name: String,
    /// The item or tag.
    key: String,
    /// Its links (name and target): one per point, oldest first, then `latest`.
    links: Vec<(String, String)>,
}

/// The directories grouping `points` (oldest first, with the names of their directories
/// in `ids/`) by the keys `keys` gives each.
fn link_dirs(
    ids: &[(String, PointId)],
    points: &[(PointId, Point)],
    keys: impl Fn(&Point) -> Vec<String>,
) -> Vec<LinkDir> {
    let mut dirs: Vec<LinkDir> = Vec::new();
    for ((name, _), (_, point)) in ids.iter().zip(points) {
        let time = point
            .end
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        for key in keys(point) {
            let at = match dirs.iter().position(|dir| dir.key == key) {
                Some(at) => at,
                None => {
                    dirs.push(LinkDir {
                        name: escape(&key),
                        key,
                        links: Vec::new(),
                    });
                    dirs.len() - 1
                }
            };
            let links = &mut dirs[at].links;
            let mut link = time.clone();
            let mut n = 1;
            while links.iter().any(|(l, _)| *l == link) {
                n += 1;
                link = format!("{time}-{n}");
            }
            links.push((link, format!("../../ids/{name}")));
        }
    }
    for dir in &mut dirs {
        if let Some((_, newest)) = dir.links.last() {
            let newest = newest.clone();
            dir.links.push(("latest".to_owned(), newest));
        }
    }
    dirs.sort_by(|a, b| a.name.cmp(&b.name));
    dirs
}

/// The points the mount shows, and how its own directories arrange them.
struct Catalog {
    /// The points, with the names of their directories.
    points: HashMap<PointId, (String, Point)>,
    /// Point directory names in `ids/`, oldest point first.
    ids: Vec<(String, PointId)>,
    /// The directories of `items/`.
    items: Vec<LinkDir>,
    /// The directories of `tags/`.
    tags: Vec<LinkDir>,
    /// Times of the mount's own directories: the newest point's.
    newest: SystemTime,
}

impl Catalog {
    /// Arranges `points`, oldest first.
    fn new(points: Vec<(PointId, Point)>) -> Self {
        let hexes: Vec<String> = points.iter().map(|(id, _)| id.to_hex()).collect();
        let short = (SHORT_ID..64)
            .find(|&len| {
                let mut prefixes: Vec<&str> = hexes.iter().map(|h| &h[..len]).collect();
                prefixes.sort_unstable();
                prefixes.windows(2).all(|w| w[0] != w[1])
            })
            .unwrap_or(64);
        let ids: Vec<(String, PointId)> = hexes
            .iter()
            .zip(&points)
            .map(|(hex, (id, _))| (hex[..short].to_owned(), *id))
            .collect();
        let items = link_dirs(&ids, &points, |point| vec![point.item.clone()]);
        let tags = link_dirs(&ids, &points, |point| point.tags.clone());
        let newest = points
            .last()
            .map_or(UNIX_EPOCH, |(_, p)| system_time(p.end.as_nanosecond()));
        let points = points
            .into_iter()
            .zip(&ids)
            .map(|((id, point), (name, _))| (id, (name.clone(), point)))
            .collect();
        Catalog {
            points,
            ids,
            items,
            tags,
            newest,
        }
    }

    fn link_dirs(&self, grouping: Grouping) -> &[LinkDir] {
        match grouping {
            Grouping::Items => &self.items,
            Grouping::Tags => &self.tags,
        }
    }
}

/// The file system.
struct VaultFs {
    vault: Vault,
    /// The points shown, and when the vault's were last listed.
    catalog: Mutex<(Instant, Arc<Catalog>)>,
    inodes: Mutex<Inodes>,
    /// Open files.
    open: Mutex<HashMap<u64, Arc<Mutex<ContentReader>>>>,
    next_handle: Mutex<u64>,
    uid: u32,
    gid: u32,
}

impl VaultFs {
    fn new(vault: Vault, catalog: Catalog) -> Self {
        VaultFs {
            vault,
            catalog: Mutex::new((Instant::now(), Arc::new(catalog))),
            inodes: Mutex::new(Inodes {
                nodes: vec![Node::Root],
                by_name: HashMap::new(),
            }),
            open: Mutex::new(HashMap::new()),
            next_handle: Mutex::new(1),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    /// The points shown, listed again from the vault if they were listed [`REFRESH`]
    /// ago or more. When the vault cannot be read, the points shown stay.
    fn catalog(&self) -> Arc<Catalog> {
        let mut catalog = self.catalog.lock().expect("lock");
        if catalog.0.elapsed() >= REFRESH {
            catalog.0 = Instant::now();
            match self.vault.points() {
                Ok(points) => {
                    // Points never change: a retagged point is a new one.
                    let same = points.len() == catalog.1.points.len()
                        && points
                            .iter()
                            .all(|(id, _)| catalog.1.points.contains_key(id));
                    if !same {
                        // New points' data is in packs indexed since the mount.
                        if let Err(e) = self.vault.reload_index() {
                            tracing::warn!(error = %e, "cannot read the vault's index again");
                        }
                        catalog.1 = Arc::new(Catalog::new(points));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the vault's points again"),
            }
        }
        Arc::clone(&catalog.1)
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.inodes
            .lock()
            .expect("lock")
            .node(ino)
            .ok_or(Errno::ENOENT)
    }

    /// The children of a directory node, by name.
    fn children(&self, node: &Node) -> Result<Vec<(String, Node)>, Errno> {
        Ok(match node {
            Node::Root => vec![
                ("ids".into(), Node::Ids),
                ("items".into(), Node::Groups(Grouping::Items)),
                ("tags".into(), Node::Groups(Grouping::Tags)),
            ],
            Node::Ids => {
                let catalog = self.catalog();
                catalog
                    .ids
                    .iter()
                    .map(|(name, id)| {
                        let point = &catalog.points[id].1;
                        let mut root = Entry::new("", EntryKind::Directory);
                        root.subtree = Some(point.root);
                        root.meta.mode = Some(0o755);
                        root.meta.mtime_ns = i64::try_from(point.end.as_nanosecond()).ok();
                        let node = Node::Entry {
                            point: *id,
                            path: String::new(),
                            entry: Arc::new(root),
                        };
                        (name.clone(), node)
                    })
                    .collect()
            }
            Node::Groups(grouping) => self
                .catalog()
                .link_dirs(*grouping)
                .iter()
                .map(|dir| (dir.name.clone(), Node::Group(*grouping, dir.key.clone())))
                .collect(),
            Node::Group(grouping, key) => self
                .catalog()
                .link_dirs(*grouping)
                .iter()
                .find(|dir| dir.key == *key)
                .ok_or(Errno::ENOENT)?
                .links
                .iter()
                .map(|(name, target)| (name.clone(), Node::Link(target.clone())))
                .collect(),
            Node::Link(_) => return Err(Errno::ENOTDIR),
            Node::Entry { point, path, entry } => {
                if entry.kind != EntryKind::Directory {
                    return Err(Errno::ENOTDIR);
                }
                let Some(subtree) = entry.subtree else {
                    return Ok(Vec::new());
                };
                let tree = self.vault.cached_tree(&subtree).map_err(|e| {
                    tracing::warn!(point = %point.short(), path, error = %e, "cannot read a tree");
                    Errno::EIO
                })?;
                tree.entries
                    .iter()
                    .map(|child| {
                        let path = if path.is_empty() {
                            child.name.clone()
                        } else {
                            format!("{path}/{}", child.name)
                        };
                        let node = Node::Entry {
                            point: *point,
                            path,
                            entry: Arc::new(child.clone()),
                        };
                        (child.name.clone(), node)
                    })
                    .collect()
            }
        })
    }

    /// The entry holding a hard link's content, or the entry itself.
    fn content_entry(&self, point: &PointId, entry: &Arc<Entry>) -> Result<Arc<Entry>, Errno> {
        let mut entry = Arc::clone(entry);
        for _ in 0..MAX_LINKS {
            let EntryKind::Hardlink { target } = &entry.kind else {
                return Ok(entry);
            };
            let catalog = self.catalog();
            let (_, stored) = catalog.points.get(point).ok_or(Errno::ENOENT)?;
            entry = Arc::new(self.vault.find_entry(stored, target).map_err(|e| {
                tracing::warn!(point = %point.short(), target, error = %e, "cannot follow a hard link");
                Errno::EIO
            })?);
        }
        Err(Errno::EIO)
    }

    fn attr(&self, ino: INodeNo, node: &Node) -> Result<FileAttr, Errno> {
        let newest = match node {
            Node::Entry { .. } => self.catalog.lock().expect("lock").1.newest,
            _ => self.catalog().newest,
        };
        let own = |kind, perm, size| FileAttr {
            ino,
            size,
            blocks: 0,
            atime: newest,
            mtime: newest,
            ctime: newest,
            crtime: newest,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Ok(match node {
            Node::Root | Node::Ids | Node::Groups(_) | Node::Group(..) => {
                own(FileType::Directory, 0o555, 0)
            }
            Node::Link(target) => own(FileType::Symlink, 0o777, target.len() as u64),
            Node::Entry { point, entry, .. } => {
                let content = self.content_entry(point, entry)?;
                let (kind, default_perm) = match &entry.kind {
                    EntryKind::Directory => (FileType::Directory, 0o755),
                    EntryKind::Symlink { .. } => (FileType::Symlink, 0o777),
                    EntryKind::CharDevice => (FileType::CharDevice, 0o600),
                    EntryKind::BlockDeviceNode => (FileType::BlockDevice, 0o600),
                    EntryKind::Fifo => (FileType::NamedPipe, 0o644),
                    EntryKind::Socket => (FileType::Socket, 0o755),
                    _ => (FileType::RegularFile, 0o644),
                };
                let meta: &Metadata = &content.meta;
                let size = match &entry.kind {
                    EntryKind::Symlink { target } => target.len() as u64,
                    EntryKind::Directory => 0,
                    _ => meta.size,
                };
                let time = |ns: Option<i64>| ns.map_or(newest, |ns| system_time(ns.into()));
                FileAttr {
                    ino,
                    size,
                    blocks: size.div_ceil(512),
                    atime: time(meta.atime_ns),
                    mtime: time(meta.mtime_ns),
                    ctime: time(meta.ctime_ns),
                    crtime: time(meta.mtime_ns),
                    kind,
                    perm: meta
                        .mode
                        .map_or(default_perm, |mode| (mode & 0o7777) as u16),
                    nlink: if kind == FileType::Directory { 2 } else { 1 },
                    uid: meta.uid.unwrap_or(self.uid),
                    gid: meta.gid.unwrap_or(self.gid),
                    rdev: meta.rdev.map_or(0, |rdev| rdev as u32),
                    blksize: 4096,
                    flags: 0,
                }
            }
        })
    }

    /// The extended attributes of a node: an entry's, stored with it.
    fn xattrs(&self, ino: INodeNo) -> Result<Vec<(String, Vec<u8>)>, Errno> {
        Ok(match self.node(ino)? {
            Node::Entry { point, entry, .. } => self
                .content_entry(&point, &entry)?
                .meta
                .xattrs
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
            _ => Vec::new(),
        })
    }
}

impl Filesystem for VaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (|| {
            let node = self.node(parent)?;
            let name = name.to_str().ok_or(Errno::ENOENT)?;
            let (_, child) = self
                .children(&node)?
                .into_iter()
                .find(|(n, _)| n == name)
                .ok_or(Errno::ENOENT)?;
            let ino = self
                .inodes
                .lock()
                .expect("lock")
                .child(parent, name, child.clone());
            Ok((ttl(&child), self.attr(ino, &child)?))
        })();
        match found {
            Ok((ttl, attr)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(err) => reply.error(err),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .node(ino)
            .and_then(|node| Ok((ttl(&node), self.attr(ino, &node)?)))
        {
            Ok((ttl, attr)) => reply.attr(&ttl, &attr),
            Err(err) => reply.error(err),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok(Node::Link(target)) => reply.data(target.as_bytes()),
            Ok(Node::Entry { entry, .. }) => match &entry.kind {
                EntryKind::Symlink { target } => reply.data(target.as_bytes()),
                _ => reply.error(Errno::EINVAL),
            },
            Ok(_) => reply.error(Errno::EINVAL),
            Err(err) => reply.error(err),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let opened = (|| {
            let Node::Entry { point, entry, .. } = self.node(ino)? else {
                return Err(Errno::EISDIR);
            };
            let content = self.content_entry(&point, &entry)?;
            match content.kind {
                EntryKind::Directory => return Err(Errno::EISDIR),
                EntryKind::File
                | EntryKind::BlockDevice
                | EntryKind::DatabaseStream
                | EntryKind::LogSegment
                | EntryKind::Blob => {}
                _ => return Err(Errno::EINVAL),
            }
            let reader = self.vault.content_reader(&content.content);
            let mut next = self.next_handle.lock().expect("lock");
            let handle = *next;
            *next += 1;
            self.open
                .lock()
                .expect("lock")
                .insert(handle, Arc::new(Mutex::new(reader)));
            Ok(FileHandle(handle))
        })();
        match opened {
            // The content never changes, so the kernel may keep what it read.
            Ok(handle) => reply.opened(handle, FopenFlags::FOPEN_KEEP_CACHE),
            Err(err) => reply.error(err),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let reader = self.open.lock().expect("lock").get(&fh.0).cloned();
        let Some(reader) = reader else {
            reply.error(Errno::EBADF);
            return;
        };
        let mut reader = reader.lock().expect("lock");
        let len = (size as u64).min(reader.len().saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match reader.read_at(offset, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                tracing::warn!(offset, error = %e, "cannot read from the vault");
                reply.error(Errno::EIO);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open.lock().expect("lock").remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.node(ino).and_then(|node| self.children(&node));
        let children = match listed {
            Ok(children) => children,
            Err(err) => {
                reply.error(err);
                return;
            }
        };
        let dots = [(".".to_owned(), None), ("..".to_owned(), None)];
        let all = dots
            .into_iter()
            .chain(children.into_iter().map(|(name, node)| (name, Some(node))));
        for (i, (name, node)) in all.enumerate().skip(offset as usize) {
            let (child, kind) = match node {
                None => (ino, FileType::Directory),
                Some(node) => {
                    let kind = match &node {
                        Node::Link(_) => FileType::Symlink,
                        Node::Entry { entry, .. } => match entry.kind {
                            EntryKind::Directory => FileType::Directory,
                            EntryKind::Symlink { .. } => FileType::Symlink,
                            EntryKind::CharDevice => FileType::CharDevice,
                            EntryKind::BlockDeviceNode => FileType::BlockDevice,
                            EntryKind::Fifo => FileType::NamedPipe,
                            EntryKind::Socket => FileType::Socket,
                            _ => FileType::RegularFile,
                        },
                        _ => FileType::Directory,
                    };
                    let child = self.inodes.lock().expect("lock").child(ino, &name, node);
                    (child, kind)
                }
            };
            if reply.add(child, i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let xattrs = match self.xattrs(ino) {
            Ok(xattrs) => xattrs,
            Err(err) => return reply.error(err),
        };
        let Some((_, value)) = xattrs.iter().find(|(n, _)| OsStr::new(n) == name) else {
            return reply.error(Errno::NO_XATTR);
        };
        xattr_reply(value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let xattrs = match self.xattrs(ino) {
            Ok(xattrs) => xattrs,
            Err(err) => return reply.error(err),
        };
        let mut names = Vec::new();
        for (name, _) in &xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        xattr_reply(&names, size, reply);
    }
}

/// How long the kernel may keep what it is told of `node`: the mount's own nodes, a
/// point's directory among them, only until the points are listed again.
fn ttl(node: &Node) -> Duration {
    match node {
        Node::Entry { path, .. } if !path.is_empty() => TTL,
        _ => REFRESH,
    }
}

/// Answers an extended-attribute request: the size when asked for it (`size` 0), else
/// the bytes if they fit.
fn xattr_reply(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() <= size as usize {
        reply.data(bytes);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// A time from nanoseconds since the epoch (negative ones before it).
fn system_time(ns: i128) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs().min(u64::MAX as u128) as u64);
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// An item's name as a directory name: `%` and `/` percent-encoded, and `.` and `..`
/// (and the empty name) made into names a directory can have.
fn escape(item: &str) -> String {
    match item {
        "" => "%".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => item.replace('%', "%25").replace('/', "%2F"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_names_become_directory_names() {
        assert_eq!(escape("/srv/www"), "%2Fsrv%2Fwww");
        assert_eq!(escape("db 100%"), "db 100%25");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape(""), "%");
        assert_ne!(escape("a/b"), escape("a%2Fb"));
    }

    #[test]
    fn times_before_the_epoch_are_kept() {
        assert_eq!(
            system_time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
        assert_eq!(system_time(2_000), UNIX_EPOCH + Duration::from_micros(2));
    }
}
