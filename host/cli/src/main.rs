//! `tessera`: parses the command line and hands it to [`tessera_cli::run`].

// The allocator tessera's binaries use: it keeps freed chunk buffers for reuse instead
// of handing them back to the kernel, so a backup does not page-fault on every chunk.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tessera_cli::run(tessera_cli::Cli::parse())
}
