//! The command-line grammar: global flags, the verbs, and parsers for flag values.
//!
//! Each verb's own flags live beside its code in [`crate::commands`]; this module only
//! composes them. clap reports a usage error with exit status 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use jiff::{SignedDuration, Span, SpanRelativeTo};

use crate::commands::{
    backup::BackupArgs, check::CheckArgs, diff::DiffArgs, dump::DumpArgs, find::FindArgs,
    forget::ForgetArgs, init::InitArgs, key::KeyCommand, ls::LsArgs, mount::MountArgs,
    plugin::PluginCommand, points::PointsArgs, prune::PruneArgs, repair::RepairCommand,
    restore::RestoreArgs, rewrite::RewriteArgs, tag::TagArgs,
};

/// `tessera`: back up workloads into an encrypted, deduplicating vault, and restore them.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, max_term_width = 100)]
pub struct Cli {
    /// Flags every verb takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb takes: where the vault is, what opens it, how to print.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The vault's directory [default: $XDG_DATA_HOME/tessera/vault or
    /// ~/.local/share/tessera/vault]
    #[arg(long, global = true, env = "TESSERA_VAULT", value_name = "PATH")]
    pub vault: Option<PathBuf>,
    /// A file holding the password on its first line, or a tessera key file [default:
    /// $TESSERA_PASSWORD, else the default vault's key file]
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Print the result as JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or administer a vault
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Capture a protected item into a new recovery point
    Backup(BackupArgs),
    /// Restore a recovery point, or paths of it, into a directory
    Restore(RestoreArgs),
    /// List recovery points, oldest first
    Points(PointsArgs),
    /// List the entries of a recovery point below a path
    Ls(LsArgs),
    /// Serve the recovery points as a read-only file system until unmounted
    Mount(MountArgs),
    /// Show the paths added, removed and changed between two recovery points
    Diff(DiffArgs),
    /// Write one stored entry's content (a file, a disk image) to standard output
    Dump(DumpArgs),
    /// List the paths matching a glob in every recovery point that holds them
    Find(FindArgs),
    /// Verify the vault's structure, and with --read-data every byte
    Check(CheckArgs),
    /// Delete recovery points: those named, or those a retention policy does not keep
    Forget(ForgetArgs),
    /// Add, remove or replace the tags of recovery points
    Tag(TagArgs),
    /// Make recovery points anew without the paths given
    Rewrite(RewriteArgs),
    /// Reclaim the space no recovery point uses
    Prune(PruneArgs),
    /// Mend the vault's index after index files were lost or damaged
    #[command(subcommand)]
    Repair(RepairCommand),
    /// List builtin plugins or inspect a plugin
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage the passwords and key files that open the vault
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show figures of the whole vault: size, deduplication, compression
    Stats,
}

/// Verbs on the vault itself.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Create a new vault
    Init(InitArgs),
}

/// Parses a plugin setting given as `KEY=VALUE`.
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

/// Parses a non-negative duration such as `7d`, `12h`, `2w`, `1d12h`, `90m`, `0s` or
/// `3 days`.
///
/// Days count as 24 hours and weeks as 7 days: retention and grace periods measure
/// elapsed time, so a day that a daylight-saving change made 23 hours long does not
/// matter. Months and years have no fixed length and are refused.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let span: Span = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30m, 12h, 7d or 2w"))?;
    if span.get_months() != 0 || span.get_years() != 0 {
        return Err(format!(
            "'{text}': months and years have no fixed length; give days or weeks"
        ));
    }
    let duration = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("'{text}': {e}"))?;
    if duration.is_negative() {
        return Err(format!("'{text}' is negative"));
    }
    Ok(duration)
}

/// Parses a percentage (`20` or `20%`) into a fraction between 0 and 1.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(pct) if (0.0..=100.0).contains(&pct) => Ok(pct / 100.0),
        _ => Err(format!("'{text}' is not a percentage between 0 and 100")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_in_common_forms() {
        let hours = |h: i64| SignedDuration::from_hours(h);
        assert_eq!(parse_duration("12h"), Ok(hours(12)));
        assert_eq!(parse_duration("7d"), Ok(hours(7 * 24)));
        assert_eq!(parse_duration("2w"), Ok(hours(14 * 24)));
        assert_eq!(parse_duration("1d12h"), Ok(hours(36)));
        assert_eq!(parse_duration("3 days"), Ok(hours(72)));
        assert_eq!(parse_duration("90m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("0s"), Ok(SignedDuration::ZERO));
    }

    #[test]
    fn durations_refused() {
        assert!(parse_duration("1 month").is_err());
        assert!(parse_duration("2y").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn settings_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_setting("filter=a=b"),
            Ok(("filter".to_string(), "a=b".to_string()))
        );
        assert_eq!(
            parse_setting("empty="),
            Ok(("empty".to_string(), String::new()))
        );
        assert!(parse_setting("=x").is_err());
        assert!(parse_setting("novalue").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("20"), Ok(0.2));
        assert_eq!(parse_percent("50%"), Ok(0.5));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("half").is_err());
    }
}
