//! Backs up test data into a vault, for tests that kill a real process mid-backup or run
//! several processes at once.
//!
//! Usage: `tessera-test-writer VAULT_DIR SEED once|loop`. Prints a line after each MiB
//! streamed, so a test can kill it at a chosen point of progress.

use std::io::Write;
use std::sync::Arc;

use tessera_tests::{PASSWORD, options, small_cdc, writer_data};
use tessera_vault::commands::backup::{Backup, CommitOptions};
use tessera_vault::{Credential, Entry, EntryKind, LocalBackend, OpenOptions, Vault};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: tessera-test-writer VAULT_DIR SEED once|loop");
        std::process::exit(2);
    }
    let vault = Vault::open(
        Arc::new(LocalBackend::new(&args[1])),
        OpenOptions::new(Some(Credential::password(PASSWORD))),
    )
    .unwrap_or_else(|e| fail(&e));
    let first: u64 = args[2]
        .parse()
        .unwrap_or_else(|_| fail(&"SEED must be a number"));
    let repeat = args[3] == "loop";
    let mut seed = first * 100;
    loop {
        let data = writer_data(seed);
        let mut opts = options(&format!("seed-{seed}"));
        opts.pack_size = 256 << 10;
        let mut backup = Backup::start(&vault, opts).unwrap_or_else(|e| fail(&e));
        let mut stream = backup.stream(small_cdc()).unwrap_or_else(|e| fail(&e));
        for piece in data.chunks(1 << 20) {
            stream.write(piece).unwrap_or_else(|e| fail(&e));
            println!("progress");
            let _ = std::io::stdout().flush();
        }
        let result = stream.finish().unwrap_or_else(|e| fail(&e));
        let mut entry = Entry::new("", EntryKind::File);
        entry.content = result.content;
        backup.add_entry("f", entry).unwrap_or_else(|e| fail(&e));
        let (id, _) = backup
            .commit(CommitOptions::default())
            .unwrap_or_else(|e| fail(&e));
        println!("committed {id}");
        if !repeat {
            break;
        }
        seed += 1;
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("tessera-test-writer: {e}");
    std::process::exit(1);
}
