//! Logging with `tracing`: console or JSON lines on stderr, levels per component.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::LoggingSettings;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `logging.level` and `logging.levels`.
///
/// # Errors
/// When a level directive does not parse or a subscriber is already installed.
pub fn init(settings: &LoggingSettings) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => {
            let mut directives = vec![settings.level.clone()];
            directives.extend(settings.levels.iter().map(|(target, level)| format!("{target}={level}")));
            // lapin and sqlx are chatty at info; keep them at warn unless asked.
            for noisy in ["lapin", "sqlx", "h2", "hyper", "tower", "async_io", "polling"] {
                if !settings.levels.contains_key(noisy) {
                    directives.push(format!("{noisy}=warn"));
                }
            }
            EnvFilter::try_new(directives.join(","))?
        }
    };
    let registry = tracing_subscriber::registry().with(filter);
    if settings.format == "json" {
        registry
            .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(std::io::stderr))
            .try_init()?;
    } else {
        // Colours only on a terminal: a log file or a pipe gets plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()?;
    }
    Ok(())
}
