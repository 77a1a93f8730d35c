//! Turning failures into the contract's `plugin-error`, with messages that name what was
//! being done and why it failed. Host errors are sorted by who is at fault: a call the
//! host refused as malformed or out of phase is a plugin bug (`internal`), anything else
//! is an I/O failure the operator can act on.

use std::fmt;

use crate::types::{HostError, PluginError};

/// A host error as text, `"<kind>: <message>"`, for messages and logs.
pub fn host_error_text(err: &HostError) -> String {
    let (kind, message) = match err {
        HostError::Denied(m) => ("denied", m),
        HostError::NotFound(m) => ("not found", m),
        HostError::Invalid(m) => ("invalid", m),
        HostError::Limit(m) => ("limit exceeded", m),
        HostError::Io(m) => ("i/o error", m),
        HostError::Vault(m) => ("vault error", m),
        HostError::WrongPhase(m) => ("wrong phase", m),
    };
    if message.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {message}")
    }
}

/// The plugin error for a failed host call made while doing `context`.
pub fn from_host(context: impl fmt::Display, err: &HostError) -> PluginError {
    let message = format!("{context}: {}", host_error_text(err));
    match err {
        HostError::Invalid(_) | HostError::WrongPhase(_) => PluginError::Internal(message),
        _ => PluginError::Io(message),
    }
}

/// The plugin error for a failed file-system operation on `path`.
pub fn from_io(context: impl fmt::Display, err: &std::io::Error) -> PluginError {
    PluginError::Io(format!("{context}: {err}"))
}

/// A plugin error as text, `"<kind>: <message>"`, for logs and test output.
pub fn plugin_error_text(err: &PluginError) -> String {
    match err {
        PluginError::InvalidSettings(m) => format!("invalid settings: {m}"),
        PluginError::SourceUnavailable(m) => format!("source unavailable: {m}"),
        PluginError::Unsupported(m) => format!("unsupported: {m}"),
        PluginError::CorruptSource(m) => format!("corrupt source: {m}"),
        PluginError::Io(m) => format!("i/o error: {m}"),
        PluginError::Cancelled => "cancelled".to_owned(),
        PluginError::Internal(m) => format!("internal error: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_name_their_kind_and_context() {
        let err = from_host("adding \"a/b\"", &HostError::Io("disk full".into()));
        assert_eq!(
            err,
            PluginError::Io("adding \"a/b\": i/o error: disk full".into())
        );
    }

    #[test]
    fn malformed_calls_are_plugin_bugs() {
        let err = from_host("adding \"x\"", &HostError::Invalid("out of order".into()));
        assert!(matches!(err, PluginError::Internal(m) if m.contains("out of order")));
        assert_eq!(host_error_text(&HostError::Denied(String::new())), "denied");
    }
}
