//! `tessera vault init`: creating a vault.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::context::{Context, Protection, key_file_advice};

/// Flags of `tessera vault init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Store data unencrypted (anyone who can read the vault's files can read the data)
    #[arg(long)]
    pub unencrypted: bool,
    /// zstd level new chunks are stored at unless a backup says otherwise, 1 (fastest) to
    /// 22 (smallest), or 0 to store them uncompressed. A chunk that does not shrink is
    /// stored as it is at any level
    #[arg(long, value_name = "LEVEL", default_value_t = tessera_vault::format::DEFAULT_COMPRESSION_LEVEL,
          value_parser = clap::value_parser!(i32).range(0..=22))]
    pub compression: i32,
}

/// The JSON result.
#[derive(Debug, Serialize)]
struct InitSummary {
    vault: String,
    id: String,
    encrypted: bool,
    compression: i32,
    key_file: Option<String>,
}

/// Creates the vault and prints its path.
pub fn run(ctx: &Context, args: &InitArgs) -> Result<()> {
    let protection = if args.unencrypted {
        Protection::Unencrypted
    } else {
        Protection::Encrypted
    };
    let created = ctx.init_vault(protection, args.compression)?;
    if ctx.output.json() {
        ctx.output.print_json(&InitSummary {
            vault: created.path.display().to_string(),
            id: created.vault.config().id.clone(),
            encrypted: protection == Protection::Encrypted,
            compression: args.compression,
            key_file: created.new_key_file.map(|p| p.display().to_string()),
        })?;
        return Ok(());
    }
    ctx.output.line(&created.path.display().to_string())?;
    if let Some(key_file) = &created.new_key_file {
        // Said even off a terminal: losing this file loses the vault.
        eprintln!("{}", key_file_advice(key_file));
    }
    Ok(())
}
