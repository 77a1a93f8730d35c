//! `tessera dump`: one stored entry's content, written to standard output.
//!
//! For piping a file, a database dump or a whole disk image out of a point without
//! restoring it to disk first: `tessera dump latest --item db dump.sql | psql`,
//! `tessera dump latest --item web disk0 | dd of=/dev/sdX bs=4M`. Holes come out as
//! zeros. Only entries the point stores are dumped; files inside a disk image are read by
//! the plugin, with `tessera restore --path`.

use std::io::{self, Write};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use tessera_vault::{EntryKind, Vault};

use crate::commands::restore::point_path;
use crate::commands::select_point;
use crate::context::Context;

/// Flags of `tessera dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The recovery point: an id, a unique prefix of one, or `latest`
    pub point: String,
    /// The entry to write out: a file, a disk image, a stream or a document
    pub path: String,
    /// The protected item whose points `latest` chooses from
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
}

/// Hard links followed before giving up: a point never chains them, but a damaged or
/// hostile one could loop.
const MAX_LINKS: usize = 8;

/// Writes the entry's bytes to standard output.
pub fn run(ctx: &Context, args: &DumpArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let (id, point) = select_point(&vault, &args.point, args.item.as_deref())?;
    let mut path = point_path(&args.path);
    let mut entry = find(&vault, &point, &path)?;
    for _ in 0..MAX_LINKS {
        let EntryKind::Hardlink { target } = &entry.kind else {
            break;
        };
        path = target.clone();
        entry = find(&vault, &point, &path)?;
    }
    match &entry.kind {
        EntryKind::File
        | EntryKind::BlockDevice
        | EntryKind::DatabaseStream
        | EntryKind::LogSegment
        | EntryKind::Blob => {}
        EntryKind::Directory => bail!(
            "'{path}' is a directory in recovery point {}: dump writes one entry's \
             content; restore a directory with `tessera restore --path`",
            id.short()
        ),
        EntryKind::Symlink { target } => bail!(
            "'{path}' is a symbolic link to '{target}' in recovery point {}: dump its \
             target instead",
            id.short()
        ),
        EntryKind::Hardlink { .. } => bail!(
            "'{}' in recovery point {} is a chain of more than {MAX_LINKS} hard links",
            args.path,
            id.short()
        ),
        other => bail!(
            "'{path}' in recovery point {} has no content to dump: it is a {}",
            id.short(),
            kind_name(other)
        ),
    }
    let mut reader = vault.content_reader(&entry.content);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let written = reader.copy_to(&mut out).and_then(|written| {
        out.flush().map_err(|source| tessera_vault::Error::Source {
            what: "standard output".into(),
            source,
        })?;
        Ok(written)
    });
    match written {
        Ok(_) => Ok(()),
        // The reader of the pipe is gone (`| head`): what it wanted was written.
        Err(tessera_vault::Error::Source { source, .. })
            if source.kind() == io::ErrorKind::BrokenPipe =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot dump '{path}' of recovery point {} ({} bytes)",
                id.short(),
                entry.meta.size
            )
        }),
    }
}

/// The entry at `path`, with an error that says where else to look.
fn find(vault: &Vault, point: &tessera_vault::Point, path: &str) -> Result<tessera_vault::Entry> {
    vault.find_entry(point, path).with_context(|| {
        format!(
            "'{path}' is not an entry the point stores (files inside a disk image are read \
             by its plugin: use `tessera restore --path {path}`)"
        )
    })
}

/// How a kind of entry without content is called in messages.
fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::CharDevice => "character device node",
        EntryKind::BlockDeviceNode => "block device node",
        EntryKind::Fifo => "named pipe",
        EntryKind::Socket => "socket",
        _ => "entry without content",
    }
}
