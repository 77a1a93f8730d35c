//! The `tessera` command line: a thin shell over the vault engine (`tessera-vault`) and
//! the plugin runtime (`tessera-runtime`).
//!
//! [`Cli`] describes the flags; [`run`] resolves where the vault is and what opens it
//! ([`context`]), performs one verb ([`commands`], a module per verb) and prints the
//! result as a table or, with `--json`, as JSON on standard output. Progress bars and
//! notes go to standard error, and only when it is a terminal, so scripts see nothing but
//! the result.
//!
//! Exit status: 0 on success, 1 on failure (including a `check` that finds problems), 2
//! on a usage error. A failure prints `tessera: <message>: <cause>: ...` on standard
//! error, never a backtrace.

pub mod cli;
pub mod commands;
pub mod context;
pub mod output;
pub mod progress;
pub mod warnings;

use std::process::ExitCode;

pub use crate::cli::Cli;
use crate::cli::Command;
use crate::context::Context;

/// Runs one invocation of `tessera` and returns its exit status.
pub fn run(cli: Cli) -> ExitCode {
    // Check reports every damaged object itself, with what it affects; the engine's
    // warnings about the same objects would only repeat it.
    if !matches!(cli.command, Command::Check(_)) {
        warnings::install();
    }
    progress::install_interrupt_handler();
    let ctx = Context::new(cli.global);
    match dispatch(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`tessera points | head`) is not a failure to report.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tessera: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Vault(cli::VaultCommand::Init(args)) => commands::init::run(ctx, &args),
        Command::Backup(args) => commands::backup::run(ctx, &args),
        Command::Restore(args) => commands::restore::run(ctx, &args),
        Command::Points(args) => commands::points::run(ctx, &args),
        Command::Ls(args) => commands::ls::run(ctx, &args),
        Command::Mount(args) => commands::mount::run(ctx, &args),
        Command::Diff(args) => commands::diff::run(ctx, &args),
        Command::Dump(args) => commands::dump::run(ctx, &args),
        Command::Find(args) => commands::find::run(ctx, &args),
        Command::Check(args) => commands::check::run(ctx, &args),
        Command::Forget(args) => commands::forget::run(ctx, &args),
        Command::Tag(args) => commands::tag::run(ctx, &args),
        Command::Rewrite(args) => commands::rewrite::run(ctx, &args),
        Command::Prune(args) => commands::prune::run(ctx, &args),
        Command::Repair(command) => commands::repair::run(ctx, &command),
        Command::Plugin(command) => commands::plugin::run(ctx, &command),
        Command::Key(command) => commands::key::run(ctx, &command),
        Command::Stats => commands::stats::run(ctx),
    }
}

/// The error and its causes, joined by `": "`.
///
/// Many of the engine's errors already include their cause in their own message (as
/// `thiserror`'s `{source}` does) and also return it as their source; a cause whose text
/// is already part of the message is left out so the user does not read it twice.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_skips_causes_already_in_the_message() {
        let inner = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(inner)
            .context("cannot read pack 1234: disk on fire")
            .context("check failed");
        assert_eq!(
            error_chain(&err),
            "check failed: cannot read pack 1234: disk on fire"
        );
    }

    #[test]
    fn error_chain_joins_distinct_causes() {
        let err = anyhow::anyhow!("wrong password").context("cannot open the vault at /v");
        assert_eq!(
            error_chain(&err),
            "cannot open the vault at /v: wrong password"
        );
    }
}
