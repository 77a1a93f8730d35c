//! `tessera plugin`: the builtin plugins, and what a plugin says about itself.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use tessera_runtime::PluginInfo;

use crate::context::Context;
use crate::output::{Align, Table};

/// Verbs of `tessera plugin`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List the plugins built into tessera
    List,
    /// Show a plugin's name, version, workload, contract, capabilities and settings
    Inspect {
        /// A component file, or a builtin plugin's name
        #[arg(value_name = "FILE.wasm|NAME")]
        plugin: String,
    },
}

/// Runs a `tessera plugin` verb.
pub fn run(ctx: &Context, command: &PluginCommand) -> Result<()> {
    match command {
        PluginCommand::List => list(ctx),
        PluginCommand::Inspect { plugin } => inspect(ctx, plugin),
    }
}

fn list(ctx: &Context) -> Result<()> {
    let runtime = ctx.runtime()?;
    let mut infos = Vec::new();
    for name in runtime.builtin_names() {
        let plugin = runtime
            .load(name)
            .with_context(|| format!("cannot load the builtin plugin '{name}'"))?;
        infos.push(plugin.info().clone());
    }
    if ctx.output.json() {
        ctx.output.print_json(&infos)?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("VERSION", Align::Left),
        ("WORKLOAD", Align::Left),
        ("DESCRIPTION", Align::Left),
    ]);
    for info in infos {
        table.row(vec![
            info.name,
            info.version,
            info.workload,
            info.description,
        ]);
    }
    table.print()?;
    Ok(())
}

fn inspect(ctx: &Context, spec: &str) -> Result<()> {
    let runtime = ctx.runtime()?;
    let plugin = runtime
        .load(spec)
        .with_context(|| format!("cannot load the plugin '{spec}'"))?;
    let info = plugin.info();
    if ctx.output.json() {
        ctx.output.print_json(info)?;
        return Ok(());
    }
    print_info(ctx, info)
}

fn print_info(ctx: &Context, info: &PluginInfo) -> Result<()> {
    let out = &ctx.output;
    let capabilities = if info.capabilities.is_empty() {
        "none".to_string()
    } else {
        info.capabilities.join(", ")
    };
    for (label, value) in [
        ("name", info.name.as_str()),
        ("version", &info.version),
        ("workload", &info.workload),
        ("contract", &info.contract),
        ("capabilities", &capabilities),
        ("description", &info.description),
    ] {
        out.line(&format!("{label:<13} {value}"))?;
    }
    if info.settings.is_empty() {
        out.line("settings      none")?;
        return Ok(());
    }
    out.line("settings")?;
    let mut table = Table::new(&[
        ("  NAME", Align::Left),
        ("KIND", Align::Left),
        ("REQUIRED", Align::Left),
        ("DEFAULT", Align::Left),
        ("DESCRIPTION", Align::Left),
    ]);
    for setting in &info.settings {
        table.row(vec![
            format!("  {}", setting.name),
            setting.kind.clone(),
            if setting.required { "yes" } else { "no" }.to_string(),
            setting.default.clone().unwrap_or_default(),
            setting.description.clone(),
        ]);
    }
    table.print()?;
    Ok(())
}
