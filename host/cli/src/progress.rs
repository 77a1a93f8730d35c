//! Progress bars for long work, and Ctrl-C.
//!
//! A bar is drawn on standard error only when it is a terminal. The first Ctrl-C asks the
//! running job to stop: the runtime polls [`cancelled`] and ends the job cleanly,
//! leaving the vault as a crash would (no point, reusable packs). A second Ctrl-C ends
//! the process at once, for a plugin that does not get to the next poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::Output;

/// Set by the first Ctrl-C.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Exit status of a process ended by a second Ctrl-C, as shells report SIGINT.
const INTERRUPTED_EXIT_STATUS: i32 = 130;

/// How often a spinner redraws while the work gives no progress of its own.
const TICK: Duration = Duration::from_millis(120);

/// Template of a bar whose total is known.
const BAR_TEMPLATE: &str =
    "{spinner} {msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {prefix} eta {eta}";
/// Template while the total is not yet known.
const OPEN_TEMPLATE: &str = "{spinner} {msg} {bytes} {binary_bytes_per_sec} {prefix}";
/// Template of a spinner for work without progress figures.
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {elapsed}";

/// Makes Ctrl-C request cancellation instead of killing the process.
pub fn install_interrupt_handler() {
    let installed = ctrlc::set_handler(|| {
        if CANCELLED.swap(true, Ordering::SeqCst) {
            std::process::exit(INTERRUPTED_EXIT_STATUS);
        }
        eprintln!("\ntessera: stopping (press Ctrl-C again to quit at once)");
    });
    // Without the handler Ctrl-C still ends the process, only less gracefully.
    if let Err(err) = installed {
        eprintln!("tessera: warning: cannot catch Ctrl-C: {err}");
    }
}

/// Whether the user asked to stop.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// A progress bar in bytes, with entries counted beside it.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar labelled `message`, hidden unless standard error is a terminal.
    pub fn new(output: &Output, message: &str) -> Self {
        let bar = if output.interactive() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(style(OPEN_TEMPLATE));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(TICK);
        Bar { bar }
    }

    /// A spinner labelled `message` for work that reports no progress.
    pub fn spinner(output: &Output, message: &str) -> Self {
        let bar = if output.interactive() {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(style(SPINNER_TEMPLATE));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(TICK);
        Bar { bar }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // An error return must not leave a half-drawn bar above the error message.
        self.bar.finish_and_clear();
    }
}

impl tessera_runtime::Progress for Bar {
    fn update(&self, done_bytes: u64, total_bytes: u64, done_items: u64, total_items: u64) {
        if total_bytes > 0 && self.bar.length() != Some(total_bytes) {
            if self.bar.length().unwrap_or(0) == 0 {
                self.bar.set_style(style(BAR_TEMPLATE));
            }
            self.bar.set_length(total_bytes);
        }
        self.bar.set_position(done_bytes);
        let items = match (done_items, total_items) {
            // A plugin that counts nothing gets no count shown rather than a stuck zero.
            (0, 0) => String::new(),
            (done, 0) => format!("{done} entries"),
            (done, total) => format!("{done}/{total} entries"),
        };
        self.bar.set_prefix(items);
    }

    fn cancelled(&self) -> bool {
        cancelled()
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants checked by a test; a bad one is a bug, not user input.
    ProgressStyle::with_template(template).expect("progress template is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid() {
        for template in [BAR_TEMPLATE, OPEN_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
