//! The vault engine's warnings (damaged recovery points skipped, unreadable key slots),
//! shown on standard error as `tessera: warning: ...`; without this they would be lost,
//! and they explain results that look incomplete.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::Uptime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that turns on the diagnostic log: a filter such as `debug`
/// or `tessera_vault=trace,info`.
pub const LOG_VAR: &str = "TESSERA_LOG";

/// Shows warnings and errors from the libraries on standard error; with [`LOG_VAR`] set,
/// every event its filter lets through instead, with the time since start and the
/// thread, for finding out where a slow or failing run spends its time.
pub fn install() {
    if let Some(spec) = std::env::var_os(LOG_VAR) {
        match EnvFilter::try_new(spec.to_string_lossy()) {
            Ok(filter) => {
                tracing_subscriber::fmt()
                    .with_writer(std::io::stderr)
                    .with_env_filter(filter)
                    .with_timer(Uptime::default())
                    .with_thread_names(true)
                    .init();
                return;
            }
            Err(e) => eprintln!("tessera: warning: {LOG_VAR} is not a log filter ({e}); ignored"),
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::WARN)
        .event_format(WarningFormat)
        .init();
}

/// One line per event, worded like the command's own warnings.
struct WarningFormat;

impl<S, N> FormatEvent<S, N> for WarningFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "tessera: warning: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
