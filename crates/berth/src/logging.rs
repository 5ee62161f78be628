//! Logging: Distribution's `log` section on tracing-subscriber, with one rule every line
//! keeps: nothing a client sent can forge a line or reach an operator's terminal raw.
//!
//! User names, header values and error messages carry client bytes into fields, and a field
//! holding a newline would start a line of the client's making, an escape sequence would be
//! obeyed by the terminal showing the log, and a space or `=` would add a field of the
//! client's making (`user=x peer=10.0.0.1`). The JSON format quotes every value and
//! serde_json escapes the C0 controls; [`JsonEscaping`] escapes what it leaves raw (DEL, the
//! C1 controls, line separators and bidirectional overrides). The text format runs every
//! field, the message included, through [`Escaped`], and quotes a value with spaces, `=` or
//! quotes in it, logfmt-style.
//! Doing it in the formatter rather than at each call site means no call site can forget.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::config;

/// Starts logging as `log` says: `level` (refined by `RUST_LOG`), `formatter` text or json.
pub fn init(log: &config::Log) -> Result<(), String> {
    let level = match log.level.as_deref().unwrap_or("info") {
        "panic" | "fatal" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        other => {
            return Err(format!(
                "log.level {other:?} is not one of error, warn, info, debug"
            ));
        }
    };
    // RUST_LOG refines per module when set; log.level is the default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rustls logs every handshake at debug, the AWS SDK every step of every S3 request:
        // keep them at info unless RUST_LOG says.
        let filter = if matches!(level, "debug" | "trace") {
            format!(
                "{level},rustls=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,\
                 aws_sdk_s3=info,aws_config=info,aws_smithy_http_client=info,hyper_util=info"
            )
        } else {
            level.to_owned()
        };
        tracing_subscriber::EnvFilter::new(filter)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.formatter.as_deref().unwrap_or("text") {
        "text" => builder.fmt_fields(EscapedFields).init(),
        "json" | "logstash" => builder
            .json()
            .flatten_event(true)
            .with_writer(|| JsonEscaping(std::io::stderr()))
            .init(),
        other => {
            return Err(format!(
                "log.formatter {other:?} is not one of text, json, logstash"
            ));
        }
    }
    Ok(())
}

/// tracing-subscriber's text field format (`message key=value ...`, values as their `Debug`
/// shows them), with [`escape`] applied to every value.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
            scratch: String::new(),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
    scratch: String,
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.scratch.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.scratch, "{value:?}");
        let separator = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        // `r#type` and the like are logged without the raw-identifier prefix.
        let name = name.strip_prefix("r#").unwrap_or(name);
        let value = self.scratch.as_str();
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(value))
        } else if needs_quotes(value) && !is_quoted(value) {
            let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
            write!(self.writer, "{separator}{name}=\"{}\"", Escaped(&quoted))
        } else {
            write!(self.writer, "{separator}{name}={}", Escaped(value))
        };
    }
}

/// Text with every control character (C0, DEL, C1), line or paragraph separator and
/// bidirectional override written as an escape (`\n`, `\u{1b}`), so it can neither end a log
/// line nor drive a terminal.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(needs_escape) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// A field value that would not read back as one value unquoted.
fn needs_quotes(value: &str) -> bool {
    value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '=' || c == '"')
}

/// Already one quoted string, as `Debug` writes a `str`: quotes at both ends, every quote
/// between them escaped.
fn is_quoted(value: &str) -> bool {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '"' => return false,
            _ => {}
        }
    }
    true
}

/// A JSON log line's writer that escapes, as `\uXXXX`, the characters [`needs_escape`] names
/// and serde_json leaves raw (it escapes only those below U+0020, which never reach here).
/// They can only occur inside JSON strings, where the escape means the same character.
struct JsonEscaping<W>(W);

impl<W: std::io::Write> std::io::Write for JsonEscaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole, so a character is never split here.
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains(|c: char| c != '\n' && needs_escape(c)) => {
                let mut escaped = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    if c != '\n' && needs_escape(c) {
                        let _ = write!(escaped, "\\u{:04x}", u32::from(c));
                    } else {
                        escaped.push(c);
                    }
                }
                self.0.write_all(escaped.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// [`Escaped`], as a `String`.
#[cfg(test)]
fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_line_breaks_are_escaped() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(
            escape("evil\n2026 INFO fake\u{1b}[31m\r\t\u{7f}\u{85}"),
            "evil\\n2026 INFO fake\\u{1b}[31m\\r\\t\\u{7f}\\u{85}"
        );
        assert_eq!(escape("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
        assert_eq!(escape("ünïcode ✓"), "ünïcode ✓");
    }

    #[test]
    fn json_lines_escape_what_serde_json_leaves_raw() {
        use std::io::Write as _;
        let mut out = JsonEscaping(Vec::new());
        let line = "{\"user\":\"a\u{7f}b\u{9b}c\u{202e}d\\n\"}\n";
        out.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let written = String::from_utf8(out.0).unwrap_or_default();
        assert_eq!(written, "{\"user\":\"a\\u007fb\\u009bc\\u202ed\\n\"}\n");
        let parsed: serde_json::Value =
            serde_json::from_str(&written).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed["user"], "a\u{7f}b\u{9b}c\u{202e}d\n");
    }

    #[test]
    fn values_that_would_not_read_back_as_one_are_quoted() {
        assert!(is_quoted("\"a b\""));
        assert!(is_quoted("\"a \\\" b\""));
        assert!(!is_quoted("\"a\" peer=\"b\""));
        assert!(!is_quoted("\"a\\\""));
        assert!(!is_quoted("\""));
        assert!(needs_quotes("a b") && needs_quotes("a=b") && needs_quotes(""));
        assert!(!needs_quotes("127.0.0.1:5000"));
    }

    #[test]
    fn every_field_of_a_text_line_is_escaped() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let user = "evil\nFAKE line\u{1b}[2J";
            tracing::info!(user = %user, debug = ?user, count = 3, "failed for {user}");
            tracing::info!(user = %"a peer=10.0.0.1", other = %"\"b\" c", path = ?"/x y", "fields");
        });
        let bytes = buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(
            !text.lines().any(|l| l.contains(|c: char| c.is_control())),
            "{text:?}"
        );
        assert!(
            text.contains(
                "failed for evil\\nFAKE line\\u{1b}[2J user=\"evil\\nFAKE line\\u{1b}[2J\" \
                 debug=\"evil\\nFAKE line\\u{1b}[2J\" count=3"
            ),
            "{text:?}"
        );
        assert!(
            text.contains("fields user=\"a peer=10.0.0.1\" other=\"\\\"b\\\" c\" path=\"/x y\"\n"),
            "{text:?}"
        );
    }
}
