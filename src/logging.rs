//! The text log's field formatter: tracing-subscriber's own layout (`key=value`, the message first),
//! with every control character in every value escaped.
//!
//! CSR names, requesters, error texts and messages come from API users. kube-apiserver allows a CSR
//! named `x\nts=... level=INFO csr=victim "certificate issued"`; printed as is it would forge a whole line
//! in the text log. tracing-subscriber 0.3 escapes only ANSI sequences, and only in the message; a field
//! recorded with `%` is written raw. Escaping here, once for every field of every event and span,
//! covers call sites that do not exist yet. The JSON format needs nothing: serde_json escapes every
//! control character in strings.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields` with control characters escaped (`\n`, `\r`, `\t`, else `\u{..}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut v = EscapingVisitor(DefaultVisitor::new(writer, true));
        fields.record(&mut v);
        v.0.finish()
    }
}

struct EscapingVisitor<'a>(DefaultVisitor<'a>);

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // `DefaultVisitor` prints a `str` field with Debug (quoted, escaped) and the message with
        // Display (raw): keep both forms, escape the raw one.
        if field.name() == "message" {
            self.0
                .record_debug(field, &Escaped(&format_args!("{value}")));
        } else {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its sources, as `DefaultVisitor` lists them, escaped.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            let _ = write!(text, ": {s}");
            source = s.source();
        }
        self.0
            .record_debug(field, &Escaped(&format_args!("{text}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, &Escaped(value));
    }
}

/// Formats the inner value's Debug through an escaping writer.
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaper(f), "{:?}", self.0)
    }
}

struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if needs_escape(c) => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// C0/C1 controls and DEL (line breaks, terminal escapes), Unicode line and paragraph separators
/// (line breaks to some viewers) and bidirectional overrides (which reorder what a reader sees).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(EscapingFields)
            .with_ansi(false)
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_kind_of_field_is_one_line() {
        let hostile =
            "x\nts=2026 INFO csr=victim \"certificate issued\"\r\t\u{1b}[31m\u{2028}\u{202e}";
        let err = std::io::Error::other(hostile.to_string());
        let out = capture(|| {
            let span = tracing::info_span!("worker", csr = %hostile);
            let _g = span.enter();
            tracing::info!(
                display = %hostile,
                debug = ?hostile,
                string = hostile,
                error = &err as &(dyn std::error::Error + 'static),
                "message {hostile}"
            );
        });
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        assert!(!out.contains('\r') && !out.contains('\t') && !out.contains('\u{1b}'));
        assert!(!out.contains('\u{2028}') && !out.contains('\u{202e}'));
        assert!(
            out.contains(r#"display=x\nts=2026 INFO csr=victim "certificate issued"\r\t\u{1b}[31m\u{2028}\u{202e}"#),
            "{out}"
        );
        assert!(out.contains("message x\\nts=2026"), "{out}");
        assert!(out.contains("worker{csr=x\\nts="), "{out}");
    }

    #[test]
    fn ordinary_values_print_as_tracing_prints_them() {
        let out = capture(|| {
            tracing::info!(csr = %"csr-1", n = 3, s = "plain", "certificate issued");
        });
        assert!(
            out.contains(r#"certificate issued csr=csr-1 n=3 s="plain""#),
            "{out}"
        );
    }
}
