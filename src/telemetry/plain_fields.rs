//! The text log format's fields when stderr is no terminal: `name=value` separated by spaces,
//! the message bare, as tracing-subscriber's default writes them with ANSI off.
//!
//! Why not the default: it styles every field name and `=` through nu_ansi_term even when
//! styling is off, which cost a tenth of a short answer's instructions (the access line and
//! the three spans of each request carry about forty fields; docs/performance-gateway.md).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// See the module doc.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn pad(&mut self) {
        if self.empty {
            self.empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
    }

    /// The field's name without a raw identifier's `r#`.
    fn name(field: &Field) -> &'static str {
        let name = field.name();
        name.strip_prefix("r#").unwrap_or(name)
    }

    /// Starts a `name=` field; false when nothing may be written (an earlier write failed, or
    /// the field is one of the `log` crate's, which the default leaves out too).
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        self.pad();
        if self.result.is_ok() {
            self.result = self
                .writer
                .write_str(Self::name(field))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    /// A number as its `Debug` text, written without the formatting machinery: the access
    /// line alone has half a dozen, and each went through `fmt::write`.
    fn record_integer<T: itoa::Integer + fmt::Debug>(&mut self, field: &Field, value: T) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }
}

/// Whether `s`'s `Debug` text is `s` in quotes: printable ASCII without `"` or `\`.
fn quotes_alone(s: &str) -> bool {
    s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if quotes_alone(value) {
            if self.start(field) {
                self.result = self
                    .writer
                    .write_char('"')
                    .and_then(|()| self.writer.write_str(value))
                    .and_then(|()| self.writer.write_char('"'));
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_integer(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.record_integer(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.record_integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "message" {
            return self.record_debug(field, &value);
        }
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{} {}.sources={}",
                    Escaped(&format_args!("{value}")),
                    Self::name(field),
                    Sources(source)
                ),
            ),
            None => self.record_debug(
                field,
                &format_args!("{}", Escaped(&format_args!("{value}"))),
            ),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message" {
            if self.start(field) {
                self.result = write!(self.writer, "{value:?}");
            }
            return;
        }
        if self.result.is_ok() {
            self.pad();
        }
        if self.result.is_ok() {
            // An escape sequence in a message is shown, not run by the reader's terminal.
            self.result = write!(self.writer, "{}", Escaped(value));
        }
    }
}

/// A value's `Debug` text with the control characters a terminal acts on written as escapes
/// (as tracing-subscriber's default does).
struct Escaped<'a>(&'a dyn fmt::Debug);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{:?}", self.0)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let acted_on = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !s.contains(acted_on) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", u32::from(c))?
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// An error's chain from `first` on, as a list.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut current = Some(self.0);
        while let Some(error) = current {
            list.entry(&Escaped(&format_args!("{error}")));
            current = error.source();
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// What `emit`'s events and spans look like through `fields`.
    fn captured<F>(fields: F, emit: impl FnOnce()) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(fields)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// What the same events and spans look like through `fields`.
    fn lines<F>(fields: F) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        captured(fields, || {
            let error = Outer(std::io::Error::other("inner \u{1b}[1m"));
            let span = tracing::info_span!(
                "request",
                request_id = %"0190",
                door = "openai",
                n = 3_i64,
                late = tracing::field::Empty,
            );
            let _in = span.enter();
            span.record("late", true);
            tracing::info!(path = "/v1/\u{1b}[31m", r#type = ?'x', ok = false, "answering");
            tracing::warn!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
            tracing::info!("plain {} words \u{1b}[2J \u{85} \u{7f}", 2);
            tracing::info!(plain = true);
            tracing::info!(message = "named", size = 1.5_f64);
        })
    }

    /// Seeded values of every kind the visitor writes itself (strings, integers, booleans),
    /// as fields, as span fields and as the message, read as the default writes them. One
    /// subscriber each for all seeds: each new one makes tracing rebuild every callsite's
    /// interest, which races with the other tests' scoped subscribers.
    #[test]
    fn generated_values_read_as_the_default_ones() {
        let pool = [
            'a', 'Z', '0', ' ', '~', '=', '{', '"', '\\', '\'', '\n', '\t', '\r', '\0', '\u{1b}',
            '\u{7f}', '\u{85}', '\u{a0}', 'é', '\u{301}', '\u{200b}', '\u{feff}', '😀',
        ];
        let emit = || {
            for seed in 0..300_u64 {
                let mut rng = fastrand::Rng::with_seed(seed);
                let text: String = (0..rng.usize(0..10))
                    .map(|_| pool[rng.usize(..pool.len())])
                    .collect();
                let u = [0, u64::MAX, rng.u64(..)][rng.usize(..3)];
                let i = [i64::MIN, -1, rng.i64(..)][rng.usize(..3)];
                let wide = u128::from(u) * 1000;
                let b = rng.bool();
                let span = tracing::info_span!("s", seed, text = text.as_str(), u, b);
                let _in = span.enter();
                tracing::info!(text = text.as_str(), u, i, wide, b, status = 200_u16, "m");
                tracing::info!(message = u, r#type = text.as_str());
                tracing::info!(message = b, neg = -(wide as i128));
                tracing::info!(message = text.as_str(), i);
            }
        };
        let ours = captured(PlainFields, emit);
        let theirs = captured(tracing_subscriber::fmt::format::DefaultFields::new(), emit);
        assert!(ours.lines().count() >= 1200, "every event wrote its line");
        for (a, b) in ours.lines().zip(theirs.lines()) {
            assert_eq!(a, b);
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn the_plain_fields_read_as_the_default_ones_without_styling() {
        let ours = lines(PlainFields);
        let theirs = lines(tracing_subscriber::fmt::format::DefaultFields::new());
        assert_eq!(ours, theirs);
        assert!(ours.contains("request{request_id=0190 door=\"openai\" n=3 late=true}"));
        assert!(
            !ours.contains('\u{1b}'),
            "no escape sequence is written: {ours}"
        );
        assert!(
            ours.contains("error=outer error.sources=[inner \\x1b[1m]"),
            "{ours}"
        );
    }
}
