//! `tessera ls`: the entries of a recovery point directly below a path, or with
//! `--recursive` everything below it.
//!
//! Browsing goes through the plugin that made the point, which may show more than the
//! stored tree does (the files inside a captured disk image, say).

use anyhow::{Context as _, Result};
use clap::Args;
use tessera_runtime::BrowseEntry;

use crate::commands::restore::point_path;
use crate::commands::{plugin_for_point, select_point};
use crate::context::Context;
use crate::output::{self, Align, Table};

/// Flags of `tessera ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The recovery point: an id, a unique prefix of one, or `latest`
    pub point: String,
    /// The directory of the point to list [default: its root]
    #[arg(default_value = "")]
    pub path: String,
    /// The protected item whose points `latest` chooses from
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Browse with this plugin instead of the one that made the point
    #[arg(long, value_name = "NAME|FILE.wasm")]
    pub plugin: Option<String>,
    /// List everything below the path, each directory followed by what it holds
    #[arg(short, long)]
    pub recursive: bool,
}

/// Prints the entries.
pub fn run(ctx: &Context, args: &LsArgs) -> Result<()> {
    let vault = ctx.open_vault()?;
    let (id, point) = select_point(&vault, &args.point, args.item.as_deref())?;
    let runtime = ctx.runtime()?;
    let plugin = plugin_for_point(&runtime, &point, args.plugin.as_deref())?;
    let path = point_path(&args.path);
    let entries = runtime
        .browse(&plugin, &vault, &id, &path, args.recursive)
        .with_context(|| format!("cannot list '{path}' in recovery point {}", id.short()))?;
    if ctx.output.json() {
        ctx.output.print_json(&entries)?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("KIND", Align::Left),
        ("MODE", Align::Left),
        ("SIZE", Align::Right),
        ("MTIME", Align::Left),
        ("PATH", Align::Left),
    ]);
    for entry in &entries {
        table.row(vec![
            entry.kind.clone(),
            entry.mode.map(permissions).unwrap_or_default(),
            output::bytes(entry.size),
            entry.mtime_ns.map(mtime).unwrap_or_default(),
            display_path(entry),
        ]);
    }
    table.print()?;
    Ok(())
}

/// Permission bits as `ls` shows them (`rwxr-x---`), with set-id and sticky bits.
fn permissions(mode: u32) -> String {
    const LETTERS: [char; 3] = ['r', 'w', 'x'];
    let mut text: Vec<char> = (0..9)
        .map(|i| {
            if mode & (0o400 >> i) != 0 {
                LETTERS[i % 3]
            } else {
                '-'
            }
        })
        .collect();
    // Set-uid, set-gid and sticky replace the execute letter of their class.
    for (bit, at, set, unset) in [
        (0o4000, 2, 's', 'S'),
        (0o2000, 5, 's', 'S'),
        (0o1000, 8, 't', 'T'),
    ] {
        if mode & bit != 0 {
            text[at] = if text[at] == 'x' { set } else { unset };
        }
    }
    text.into_iter().collect()
}

pub(crate) fn mtime(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(output::local_time)
        .unwrap_or_default()
}

fn display_path(entry: &BrowseEntry) -> String {
    match &entry.target {
        Some(target) => format!("{} -> {target}", entry.path),
        None => entry.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_ls() {
        assert_eq!(permissions(0o644), "rw-r--r--");
        assert_eq!(permissions(0o755), "rwxr-xr-x");
        assert_eq!(permissions(0o4755), "rwsr-xr-x");
        assert_eq!(permissions(0o2640), "rw-r-S---");
        assert_eq!(permissions(0o1777), "rwxrwxrwt");
    }
}
