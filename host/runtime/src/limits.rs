//! Limits on what one host call may ask for. Each guards the host's memory and time
//! against a hostile or broken plugin; a call over a limit fails with `host-error::limit`.

/// Bytes a plugin may pass in one `content-writer.write` (and get from one `read`).
pub const MAX_IO_CALL: usize = 16 << 20;
/// Bytes of one log message; longer messages are cut.
pub const MAX_LOG_MESSAGE: usize = 16 << 10;
/// Bytes of one path.
pub const MAX_PATH_LEN: usize = 4096;
/// Extended attributes read per file.
pub const MAX_XATTRS: usize = 256;
/// Bytes of one extended attribute value (the Linux limit).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Content readers or writers open at once in one job.
pub const MAX_OPEN_HANDLES: usize = 256;
/// Entries returned by one `list` call.
pub const MAX_LIST_ENTRIES: usize = 1 << 20;
/// Threads writing restored files for one job.
pub const WRITE_THREADS: usize = 2;

/// Refuses a path longer than [`MAX_PATH_LEN`] with `host-error::limit`.
pub(crate) fn check_path(path: &str) -> Result<(), crate::bindings::types::HostError> {
    if path.len() > MAX_PATH_LEN {
        return Err(crate::bindings::types::HostError::Limit(format!(
            "a path of {} bytes is longer than {MAX_PATH_LEN}",
            path.len()
        )));
    }
    Ok(())
}
