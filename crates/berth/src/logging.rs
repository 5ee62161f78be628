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
//!
//! Two things are added to every line, by both formatters: `log.fields` (Distribution's fixed
//! fields, `service: registry` and the like), and the fields of the spans the line was
//! written in, which is how a request's lines carry its `http.request.id` (berth-server's
//! `observe.rs` opens that span). The text format shows spans as tracing-subscriber does
//! (`request{http.request.id=…}: …`) and appends `log.fields` at the end of the line; the
//! JSON format puts span fields and `log.fields` at the top level of the object, beside the
//! event's own, which win on a clash.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    // rustls logs every handshake at debug, the AWS SDK every step of every S3 request: keep
    // them at info unless RUST_LOG says.
    let directives = if matches!(level, "debug" | "trace") {
        format!(
            "{level},rustls=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,\
             aws_sdk_s3=info,aws_config=info,aws_smithy_http_client=info,hyper_util=info"
        )
    } else {
        level.to_owned()
    };
    // RUST_LOG refines per module when set, through an EnvFilter. Without it, a `Targets`
    // filter of the same directives: it judges by level and target alone, where an EnvFilter
    // also takes a shared lock at every span enter and exit (each request's span, several
    // times per request) in case a directive names spans.
    let (env, targets) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(env) => (Some(env), None),
        Err(_) => {
            let targets: tracing_subscriber::filter::Targets = directives
                .parse()
                .map_err(|e| format!("log filter {directives:?}: {e}"))?;
            (None, Some(targets))
        }
    };
    let registry = tracing_subscriber::registry().with(env).with(targets);
    let ansi = std::io::stderr().is_terminal();
    let fields = log.fields.clone().unwrap_or_default();
    match log.formatter.as_deref().unwrap_or("text") {
        "text" => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .fmt_fields(EscapedFields)
                    .event_format(TextLine::new(ansi, &fields)),
            )
            .init(),
        "json" | "logstash" => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(JsonLine::new(&fields))
                    .with_writer(|| JsonEscaping(std::io::stderr())),
            )
            .init(),
        other => {
            return Err(format!(
                "log.formatter {other:?} is not one of text, json, logstash"
            ));
        }
    }
    Ok(())
}

/// A scalar of `log.fields` as text (`service: registry` → `registry`); other values as
/// YAML writes them on one line.
fn yaml_text(value: &yaml_serde::Value) -> String {
    match value {
        yaml_serde::Value::Null => String::new(),
        yaml_serde::Value::Bool(b) => b.to_string(),
        yaml_serde::Value::Number(n) => n.to_string(),
        yaml_serde::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The text line: tracing-subscriber's full format (spans and their fields included), then
/// `log.fields`, escaped and quoted like every other field.
struct TextLine {
    inner: Format,
    /// ` key=value` for each of `log.fields`, rendered once.
    fields: String,
}

impl TextLine {
    fn new(ansi: bool, fields: &std::collections::BTreeMap<String, yaml_serde::Value>) -> Self {
        let mut rendered = String::new();
        for (name, value) in fields {
            let value = yaml_text(value);
            let name = name.replace(|c: char| c.is_whitespace() || c == '=', "_");
            if needs_quotes(&value) {
                let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = write!(rendered, " {}=\"{}\"", Escaped(&name), Escaped(&quoted));
            } else {
                let _ = write!(rendered, " {}={}", Escaped(&name), Escaped(&value));
            }
        }
        // The format's own ANSI switch: the line is formatted into a buffer first, whose
        // writer would otherwise say no terminal.
        let inner = tracing_subscriber::fmt::format().with_ansi(ansi);
        TextLine {
            inner,
            fields: rendered,
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextLine
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
        if self.fields.is_empty() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let end = line.trim_end_matches('\n').len();
        line.truncate(end);
        line.push_str(&self.fields);
        line.push('\n');
        writer.write_str(&line)
    }
}

/// The JSON line: tracing-subscriber's, with the event's fields at the top level, then the
/// fields of the spans it was written in and `log.fields`, each only where the line has no
/// key of that name yet.
struct JsonLine {
    inner: Format<Json>,
    /// `log.fields` as JSON values.
    fields: Vec<(String, serde_json::Value)>,
}

impl JsonLine {
    fn new(fields: &std::collections::BTreeMap<String, yaml_serde::Value>) -> Self {
        let fields = fields
            .iter()
            .map(|(k, v)| {
                let v = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                (k.clone(), v)
            })
            .collect();
        let inner = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        JsonLine { inner, fields }
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end();
        let Ok(serde_json::Value::Object(mut present)) = serde_json::from_str(body) else {
            return writer.write_str(&line);
        };
        let Some(open) = body.strip_suffix('}') else {
            return writer.write_str(&line);
        };
        let mut out = String::with_capacity(line.len() + 128);
        out.push_str(open);
        let mut add = |out: &mut String, key: &str, value: &serde_json::Value| {
            if present.contains_key(key) {
                return;
            }
            present.insert(key.to_owned(), serde_json::Value::Null);
            if let (Ok(k), Ok(v)) = (serde_json::to_string(key), serde_json::to_string(value)) {
                let _ = write!(out, ",{k}:{v}");
            }
        };
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(fields)) =
                    serde_json::from_str::<serde_json::Value>(&fields.fields)
                {
                    for (key, value) in &fields {
                        add(&mut out, key, value);
                    }
                }
            }
        }
        for (key, value) in &self.fields {
            add(&mut out, key, value);
        }
        out.push_str("}\n");
        writer.write_str(&out)
    }
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
        let buffer = Captured::default();
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

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
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

    impl Captured {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8(bytes).unwrap_or_default()
        }
    }

    /// What `observe.rs` writes: an event inside a request span, and one outside any span.
    fn request_lines() {
        let span = tracing::error_span!("request", http.request.id = %"6f1c-id");
        {
            let _entered = span.enter();
            tracing::info!(status = 404, service = "mine", "request");
        }
        tracing::warn!("outside");
    }

    fn log_fields() -> std::collections::BTreeMap<String, yaml_serde::Value> {
        [
            ("service", yaml_serde::Value::from("registry")),
            ("env", yaml_serde::Value::from("stag ing")),
            ("replica", yaml_serde::Value::from(3)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn text_lines_carry_the_request_id_and_log_fields() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .event_format(TextLine::new(false, &log_fields()))
            .finish();
        tracing::subscriber::with_default(subscriber, request_lines);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(
            lines[0].contains("request{http.request.id=6f1c-id}: "),
            "{text:?}"
        );
        assert!(
            lines[0].ends_with(
                "request status=404 service=\"mine\" env=\"stag ing\" replica=3 service=registry"
            ),
            "{text:?}"
        );
        assert!(
            lines[1].ends_with("outside env=\"stag ing\" replica=3 service=registry"),
            "{text:?}"
        );
        assert!(!lines[1].contains("http.request.id"), "{text:?}");
    }

    #[test]
    fn json_lines_carry_the_request_id_and_log_fields_at_the_top_level() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || JsonEscaping(writer.clone()))
            .event_format(JsonLine::new(&log_fields()))
            .finish();
        tracing::subscriber::with_default(subscriber, request_lines);
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let request = &lines[0];
        assert_eq!(request["http.request.id"], "6f1c-id", "{text}");
        assert_eq!(request["message"], "request");
        assert_eq!(request["status"], 404);
        assert_eq!(
            request["service"], "mine",
            "the event's own field wins: {text}"
        );
        assert_eq!(request["env"], "stag ing");
        assert_eq!(request["replica"], 3);
        assert_eq!(request["level"], "INFO");
        assert!(request.get("span").is_none() && request.get("spans").is_none());
        let outside = &lines[1];
        assert_eq!(outside["message"], "outside");
        assert_eq!(outside["service"], "registry");
        assert!(outside.get("http.request.id").is_none(), "{text}");
    }
}
