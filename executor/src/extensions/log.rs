//! The `log` extension, runner `entry`: `log.entry.write` writes a structured tracing event with
//! target `legion::task_log`, so that operators can route task logs apart from the executor's own.
//!
//! Args: `message` (required string), `level` (`trace`, `debug`, `info`, `warn` or `error`; default
//! `info`), `fields` (object; written as one JSON field `fields`). The event also carries `task_id` and
//! `attempt`. Result: `{"written": true}`. Whether the event is shown depends on the logging filter
//! (`logging.levels."legion::task_log"`).
//!
//! The message comes from a task, so it must not forge log lines: with `logging.format` `console`,
//! its control characters are escaped (`\n`, `\r`, `\t`, others as `\u{..}`), so an entry is always one
//! line; with `json` the message is recorded exactly (the JSON encoding escapes control characters).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::Level;

use super::args::Args;
use super::{Context, Extension, Function, FunctionError, FunctionSpec, RunnerSpec, VERSION};

/// The tracing target of task log entries.
pub const TARGET: &str = "legion::task_log";

/// How `log.entry.write` records the message in the executor's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Console logs: control characters escaped, see [`escape_control`].
    ControlCharacters,
    /// JSON logs: the message as is; the JSON encoding escapes control characters.
    Verbatim,
}

impl Escaping {
    /// The escaping for `logging.format`: [`Escaping::Verbatim`] for `json`, else
    /// [`Escaping::ControlCharacters`].
    pub fn for_format(format: &str) -> Self {
        if format == "json" { Self::Verbatim } else { Self::ControlCharacters }
    }
}

/// `text` with every control character escaped: `\n`, `\r` and `\t` as such, the others as `\u{hex}`
/// (Rust's notation). Other characters, backslashes included, are kept.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The `log` extension; `escaping` follows `logging.format` ([`Escaping::for_format`]).
pub fn extension(escaping: Escaping) -> Extension {
    Extension {
        name: "log",
        version: VERSION,
        runners: vec![RunnerSpec {
            name: "entry",
            functions: vec![FunctionSpec {
                name: "write",
                description: "writes args.message at args.level (default info) with args.fields to the task log",
                function: Arc::new(Write { escaping }),
            }],
        }],
    }
}

/// `log.entry.write`.
#[derive(Debug, Clone, Copy)]
pub struct Write {
    /// How the message is recorded.
    pub escaping: Escaping,
}

/// Parses `args.level`.
///
/// # Errors
/// `args.level: must be one of trace, debug, info, warn, error`.
pub fn parse_level(level: Option<&str>) -> Result<Level, FunctionError> {
    match level.map(str::to_ascii_lowercase).as_deref() {
        None | Some("info") => Ok(Level::INFO),
        Some("trace") => Ok(Level::TRACE),
        Some("debug") => Ok(Level::DEBUG),
        Some("warn" | "warning") => Ok(Level::WARN),
        Some("error") => Ok(Level::ERROR),
        Some(_) => Err(FunctionError::InvalidArgs("args.level: must be one of trace, debug, info, warn, error".into())),
    }
}

#[async_trait]
impl Function for Write {
    async fn call(&self, args: Value, ctx: Context) -> Result<Value, FunctionError> {
        let a = Args::new(&args)?;
        let message = match self.escaping {
            Escaping::ControlCharacters => escape_control(a.required_str("message")?),
            Escaping::Verbatim => Cow::Borrowed(a.required_str("message")?),
        };
        let level = parse_level(a.optional_str("level")?)?;
        let fields = Value::Object(a.optional_object("fields")?.cloned().unwrap_or_default());
        let task_id = ctx.task_id;
        let attempt = ctx.attempt;
        // tracing needs the level as a constant at each call site.
        macro_rules! write {
            ($level:expr) => {
                tracing::event!(target: TARGET, $level, %task_id, attempt, fields = %fields, "{message}")
            };
        }
        match level {
            Level::TRACE => write!(Level::TRACE),
            Level::DEBUG => write!(Level::DEBUG),
            Level::INFO => write!(Level::INFO),
            Level::WARN => write!(Level::WARN),
            _ => write!(Level::ERROR),
        }
        Ok(json!({ "written": true }))
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    /// Collects formatted log lines in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    #[tokio::test]
    async fn writes_a_structured_event_with_the_task_id() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().json().with_max_level(Level::TRACE).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let task_id = Uuid::now_v7();
        let ctx = Context::new(task_id, 3, Duration::from_secs(5));
        let out = Write { escaping: Escaping::Verbatim }
            .call(json!({"message": "disk almost full", "level": "warn", "fields": {"pct": 97}}), ctx)
            .await
            .expect("written");
        assert_eq!(out, json!({"written": true}));
        let line: Value = serde_json::from_str(captured.text().trim()).expect("one json line");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], TARGET);
        assert_eq!(line["fields"]["message"], "disk almost full");
        assert_eq!(line["fields"]["task_id"], task_id.to_string());
        assert_eq!(line["fields"]["attempt"], 3);
        assert_eq!(line["fields"]["fields"], r#"{"pct":97}"#);
    }

    /// Regression: a message with a newline forged a second line in console logs.
    #[tokio::test]
    async fn console_entries_cannot_forge_log_lines() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let forged = "user logged in\n2026-01-01T00:00:00Z  INFO legion_executor: admin granted\r\u{1b}[2K";
        let write = Write { escaping: Escaping::for_format("console") };
        write
            .call(json!({"message": forged}), Context::new(Uuid::now_v7(), 1, Duration::from_secs(5)))
            .await
            .expect("written");
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "one entry, one line:\n{text}");
        assert!(
            text.contains(r"user logged in\n2026-01-01T00:00:00Z  INFO legion_executor: admin granted\r\u{1b}[2K"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn json_entries_keep_the_message_exactly() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().json().with_max_level(Level::TRACE).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let message = "two\nlines\tand a \\ backslash";
        let write = Write { escaping: Escaping::for_format("json") };
        write
            .call(json!({"message": message}), Context::new(Uuid::now_v7(), 1, Duration::from_secs(5)))
            .await
            .expect("written");
        let text = captured.text();
        assert_eq!(text.trim().lines().count(), 1, "{text}");
        let line: Value = serde_json::from_str(text.trim()).expect("one json line");
        assert_eq!(line["fields"]["message"], message);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("plain text, with \\ and \"quotes\""), "plain text, with \\ and \"quotes\"");
        assert!(matches!(escape_control("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\nb\rc\td\u{0}e\u{7f}f\u{85}"), r"a\nb\rc\td\u{0}e\u{7f}f\u{85}");
        assert_eq!(escape_control("ünïcödé ✓"), "ünïcödé ✓");
    }

    #[test]
    fn levels_parse_with_info_as_default() {
        assert_eq!(parse_level(None), Ok(Level::INFO));
        assert_eq!(parse_level(Some("ERROR")), Ok(Level::ERROR));
        assert_eq!(parse_level(Some("trace")), Ok(Level::TRACE));
        assert_eq!(
            parse_level(Some("fatal")),
            Err(FunctionError::InvalidArgs("args.level: must be one of trace, debug, info, warn, error".into()))
        );
    }

    #[tokio::test]
    async fn invalid_args_name_the_arg() {
        let ctx = || Context::new(Uuid::now_v7(), 1, Duration::from_secs(5));
        let cases = [
            (json!({}), "args.message: required string"),
            (json!({"message": "m", "level": 3}), "args.level: must be a string"),
            (json!({"message": "m", "fields": [1]}), "args.fields: must be an object"),
        ];
        for (args, expected) in cases {
            assert_eq!(
                Write { escaping: Escaping::ControlCharacters }.call(args, ctx()).await,
                Err(FunctionError::InvalidArgs(expected.into()))
            );
        }
    }
}
