//! `tessera key`: the key slots that open the vault (passwords and key files).
//!
//! Slots wrap the vault's master key, so adding, removing or changing one never touches
//! data. The last slot cannot be removed.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;
use tessera_vault::Credential;
use tessera_vault::id::SlotId;
use tessera_vault::vault::SlotInfo;

use crate::context::{Context, credential_from_file, key_file_advice, write_secret_file};
use crate::output::{self, Align, Table};

/// Verbs of `tessera key`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots
    List,
    /// Add a key slot for another password or key file
    Add(KeyAddArgs),
    /// Remove a key slot
    Remove {
        /// The slot's id, or a unique prefix of it
        id: String,
    },
    /// Replace the password or key file this vault was opened with
    Passwd {
        /// A file holding the new password on its first line, or a tessera key file
        #[arg(long, value_name = "FILE")]
        new_password_file: PathBuf,
    },
}

/// Flags of `tessera key add`: exactly one source of the new credential.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("new").required(true)))]
pub struct KeyAddArgs {
    /// A file holding the new password on its first line, or a tessera key file
    #[arg(long, group = "new", value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Generate a new key file here (it must not exist) and add a slot for it
    #[arg(long, group = "new", value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// A label to recognise the slot by
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The JSON result of adding or replacing a slot.
#[derive(Debug, Serialize)]
struct SlotAdded {
    slot: SlotId,
    key_file: Option<String>,
}

/// Runs a `tessera key` verb.
pub fn run(ctx: &Context, command: &KeyCommand) -> Result<()> {
    let vault = ctx.open_vault()?;
    match command {
        KeyCommand::List => {
            let slots = vault.key_slots()?;
            if ctx.output.json() {
                ctx.output.print_json(&slots)?;
            } else {
                print_slots(&slots)?;
            }
        }
        KeyCommand::Add(args) => {
            let (credential, key_file) = new_credential(args)?;
            let slot = vault.add_key_slot(&credential, &args.label)?;
            report_slot(ctx, "added key slot", slot, key_file)?;
        }
        KeyCommand::Remove { id } => {
            let slot = find_slot(&vault.key_slots()?, id)?;
            vault.remove_key_slot(&slot)?;
            if ctx.output.json() {
                ctx.output
                    .print_json(&serde_json::json!({ "removed": slot }))?;
            } else {
                ctx.output
                    .line(&format!("removed key slot {}", slot.short()))?;
            }
        }
        KeyCommand::Passwd { new_password_file } => {
            let credential = credential_from_file(new_password_file)?;
            let slot = vault.change_password(&credential)?;
            report_slot(ctx, "replaced the key slot with", slot, None)?;
        }
    }
    Ok(())
}

/// The new credential of `key add`, and the key file generated for it, if any.
fn new_credential(args: &KeyAddArgs) -> Result<(Credential, Option<PathBuf>)> {
    if let Some(path) = &args.new_password_file {
        return Ok((credential_from_file(path)?, None));
    }
    let path = args
        .new_key_file
        .as_ref()
        .expect("clap requires one of the two flags");
    let (credential, text) = Credential::generate_key_file();
    write_secret_file(path, text.as_bytes())
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    Ok((credential, Some(path.clone())))
}

fn report_slot(ctx: &Context, what: &str, slot: SlotId, key_file: Option<PathBuf>) -> Result<()> {
    if ctx.output.json() {
        ctx.output.print_json(&SlotAdded {
            slot,
            key_file: key_file.map(|p| p.display().to_string()),
        })?;
        return Ok(());
    }
    ctx.output.line(&format!("{what} {}", slot.short()))?;
    if let Some(key_file) = &key_file {
        eprintln!("{}", key_file_advice(key_file));
    }
    Ok(())
}

/// The slot whose id is or starts with `prefix`.
fn find_slot(slots: &[SlotInfo], prefix: &str) -> Result<SlotId> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<&SlotInfo> = slots
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(anyhow!("no key slot matches '{prefix}'")),
        _ => Err(anyhow!(
            "'{prefix}' matches several key slots; give more of the id"
        )),
    }
}

fn print_slots(slots: &[SlotInfo]) -> Result<()> {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("KIND", Align::Left),
        ("CREATED", Align::Left),
        ("CURRENT", Align::Left),
        ("LABEL", Align::Left),
    ]);
    for slot in slots {
        table.row(vec![
            slot.id.short(),
            slot.kind.to_string(),
            output::local_time(slot.created),
            if slot.current { "*" } else { "" }.to_string(),
            slot.label.clone(),
        ]);
    }
    table.print()?;
    Ok(())
}
