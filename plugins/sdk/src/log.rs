//! Logging into the host's log, which attributes each record to the plugin. The
//! functions take a finished message; the macros (`info!`, `warn!`, ...) format one
//! first, like `format!`. A plugin has no other output: its stdout and stderr are not
//! wired to anything an operator reads.

use crate::host::{self, Level};

/// Logs at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Logs detail useful only when tracing a problem.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs detail for debugging.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs normal progress.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs something the operator should look at, though the job goes on.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs a failure.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a formatted message at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::trace(&::std::format!($($arg)+)) };
}

/// Logs a formatted message at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

/// Logs a formatted message at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

/// Logs a formatted message at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

/// Logs a formatted message at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}
