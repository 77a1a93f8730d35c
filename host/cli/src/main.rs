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
    // Hand freed memory back at once: buffers of finished packs and chunks would otherwise
    // stay resident and double a backup's peak memory, at no measurable cost in speed.
    // `MIMALLOC_PURGE_DELAY` (milliseconds) still tunes this for those who need to.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: setting an option only stores a number in mimalloc's option table, and
        // no other thread exists yet.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
    tessera_cli::run(tessera_cli::Cli::parse())
}
