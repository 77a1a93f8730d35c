//! `tessera`: parses the command line and hands it to [`tessera_cli::run`].

// The allocator tessera's binaries use: it keeps freed chunk buffers for reuse instead
// of handing them back to the kernel, so a backup does not page-fault on every chunk.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

/// `mi_option_purge_delay` of `mimalloc.h`: how long freed memory stays resident before
/// it goes back to the kernel.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    let cli = tessera_cli::Cli::parse();
    // A backup hands freed memory back at once: buffers of finished packs and chunks
    // would otherwise stay resident and double its peak memory, at no measurable cost in
    // speed. Other commands keep mimalloc's short default delay: a restore frees a decoded
    // chunk for each one it reads, and handing each back would cost a page fault per
    // 4 KiB of the next. `MIMALLOC_PURGE_DELAY` (milliseconds) still tunes this for those
    // who need to.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        && matches!(cli.command, tessera_cli::cli::Command::Backup(_))
    {
        #[allow(unsafe_code)]
        // SAFETY: setting an option only stores a number in mimalloc's option table, and
        // no other thread exists yet.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
    tessera_cli::run(cli)
}
