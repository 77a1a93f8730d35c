//! The verbs, one module per verb, each with its flags (`*Args`) and a `run` function;
//! and what several of them share: choosing a recovery point and its plugin.

pub mod backup;
pub mod check;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod mount;
pub mod plugin;
pub mod points;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod rewrite;
pub mod stats;
pub mod tag;

use anyhow::{Context as _, Result, anyhow};
use tessera_runtime::{Plugin, Runtime};
use tessera_vault::{Point, PointId, Vault};

/// The word that names the newest recovery point (of `--item`, if given).
pub const LATEST: &str = "latest";

/// The recovery point `spec` names: `latest` (of `item`, when given), or a full id or a
/// unique prefix of one.
pub fn select_point(vault: &Vault, spec: &str, item: Option<&str>) -> Result<(PointId, Point)> {
    if spec == LATEST {
        return vault.latest_point(item)?.ok_or_else(|| match item {
            Some(item) => anyhow!("the vault has no recovery point of '{item}'"),
            None => anyhow!("the vault has no recovery point"),
        });
    }
    let id = vault.find_point(spec)?;
    let point = vault
        .load_point(&id)
        .with_context(|| format!("cannot load recovery point {}", id.short()))?;
    if let Some(item) = item
        && point.item != item
    {
        return Err(anyhow!(
            "recovery point {} belongs to '{}', not '{item}'",
            id.short(),
            point.item
        ));
    }
    Ok((id, point))
}

/// The points `specs` name, each `latest` or a full id or a unique prefix of one; a
/// point whose record no longer decodes is found by its id too.
pub fn find_points(vault: &Vault, specs: &[String]) -> Result<Vec<PointId>> {
    specs
        .iter()
        .map(|spec| match spec.as_str() {
            LATEST => Ok(select_point(vault, spec, None)?.0),
            _ => Ok(vault.find_point(spec)?),
        })
        .collect()
}

/// Loads the plugin that reads `point`: `override_spec` if given (a builtin's name or a
/// `.wasm` file), else the builtin plugin that captured it.
pub fn plugin_for_point(
    runtime: &Runtime,
    point: &Point,
    override_spec: Option<&str>,
) -> Result<Plugin> {
    let spec = override_spec.unwrap_or(&point.plugin.name);
    runtime
        .load(spec)
        .with_context(|| format!("cannot load the plugin '{spec}'"))
}
