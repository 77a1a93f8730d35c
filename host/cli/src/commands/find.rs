//! `tessera find`: which recovery points hold paths matching a glob, and how each looked.
//!
//! Patterns read as in `--include`/`--exclude`: one without a `/` matches a name at any
//! depth (`*.conf`, `hostname`); one with a `/` matches the whole path from the root
//! (`etc/**/*.conf`, a leading `/` ignored). `*` and `?` stay within one component, `**`
//! crosses them. Only the entries the points store are searched: files inside a disk
//! image are the plugin's to list (`tessera ls`).

use anyhow::{Result, anyhow};
use clap::Args;
use globset::{GlobBuilder, GlobMatcher};
use serde::Serialize;
use tessera_vault::PointId;
use tessera_vault::commands::find::Finder;

use crate::commands::ls::mtime;
use crate::context::Context;
use crate::output::{self, Align, Table};

/// Flags of `tessera find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// The glob to look for: a name at any depth (`*.conf`), or a path from the root
    /// (`etc/**/hostname`)
    #[arg(value_parser = valid_pattern)]
    pub pattern: String,
    /// Only points of this protected item
    #[arg(long, value_name = "NAME")]
    pub item: Option<String>,
    /// Match without regard to case
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
}

/// One match, as JSON.
#[derive(Debug, Serialize)]
struct Match {
    point: PointId,
    item: String,
    time: jiff::Timestamp,
    path: String,
    kind: &'static str,
    size: u64,
    mtime_ns: Option<i64>,
}

/// `pattern` if it compiles, for clap: a bad glob is a usage error.
fn valid_pattern(pattern: &str) -> Result<String, String> {
    matcher(pattern, false)
        .map(|_| pattern.to_string())
        .map_err(|e| e.to_string())
}

/// Compiles `pattern` as [`FindArgs::pattern`] describes.
pub(crate) fn matcher(pattern: &str, ignore_case: bool) -> Result<GlobMatcher> {
    let trimmed = pattern.trim_end_matches('/');
    let body = trimmed.trim_start_matches('/');
    if body.is_empty() {
        return Err(anyhow!("the pattern '{pattern}' matches no path"));
    }
    let full = if trimmed.contains('/') {
        body.to_string()
    } else {
        format!("**/{body}")
    };
    let glob = GlobBuilder::new(&full)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(ignore_case)
        .build()
        .map_err(|e| anyhow!("the pattern '{pattern}' is not a valid glob: {}", e.kind()))?;
    Ok(glob.compile_matcher())
}

/// Prints every match in every point, oldest point first.
pub fn run(ctx: &Context, args: &FindArgs) -> Result<()> {
    let glob = matcher(&args.pattern, args.ignore_case)?;
    let vault = ctx.open_vault()?;
    let matches = |path: &str| glob.is_match(path);
    let mut finder = Finder::new(&vault, &matches);
    let mut all = Vec::new();
    let mut points_with = 0;
    for (id, point) in vault.points()? {
        if args.item.as_ref().is_some_and(|item| *item != point.item) {
            continue;
        }
        let result = finder.find(point.root);
        for why in &result.unreadable {
            ctx.output.warn(&format!(
                "recovery point {}: cannot search below {why}",
                id.short()
            ));
        }
        points_with += usize::from(!result.found.is_empty());
        for found in result.found {
            all.push(Match {
                point: id,
                item: point.item.clone(),
                time: point.end,
                kind: tessera_runtime::kind_word(&found.kind),
                path: found.path,
                size: found.size,
                mtime_ns: found.mtime_ns,
            });
        }
    }
    if ctx.output.json() {
        ctx.output.print_json(&all)?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("POINT", Align::Left),
        ("TIME", Align::Left),
        ("ITEM", Align::Left),
        ("KIND", Align::Left),
        ("SIZE", Align::Right),
        ("MTIME", Align::Left),
        ("PATH", Align::Left),
    ]);
    for m in &all {
        table.row(vec![
            m.point.short(),
            output::local_time(m.time),
            m.item.clone(),
            m.kind.to_string(),
            output::bytes(m.size),
            m.mtime_ns.map(mtime).unwrap_or_default(),
            m.path.clone(),
        ]);
    }
    if !all.is_empty() {
        table.print()?;
    }
    ctx.output.line(&format!(
        "{} in {}",
        output::count(all.len() as u64, "match", "matches"),
        output::count(points_with as u64, "recovery point", "recovery points"),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let name = matcher("*.conf", false).unwrap();
        assert!(name.is_match("a.conf"));
        assert!(name.is_match("etc/nginx/a.conf"));
        assert!(!name.is_match("etc/a.confx"));
        let path = matcher("/etc/*.conf", false).unwrap();
        assert!(path.is_match("etc/a.conf"));
        assert!(!path.is_match("etc/nginx/a.conf"));
        assert!(!path.is_match("srv/etc/a.conf"));
        let deep = matcher("etc/**/hostname", false).unwrap();
        assert!(deep.is_match("etc/hostname"));
        assert!(deep.is_match("etc/a/b/hostname"));
        let folded = matcher("README*", true).unwrap();
        assert!(folded.is_match("docs/readme.md"));
        assert!(
            !matcher("README*", false)
                .unwrap()
                .is_match("docs/readme.md")
        );
        assert!(matcher("/", false).is_err());
        let bad = matcher("a[", false).unwrap_err().to_string();
        assert!(bad.contains("'a['"), "{bad}");
    }
}
