//! Text that clients and plugins choose, made safe for a log line.

use std::fmt::{self, Write};

/// Displays `T` with its control characters (C0, DEL, C1) and the Unicode
/// line and paragraph separators written as Rust escapes (`\n`, `\r`,
/// `\u{1b}`), so no client or plugin can end a log line, forge the next one
/// or colour a terminal through what it sends. Wrap every such value that goes
/// into a log line: `tracing::warn!("timer `{}` failed", Escaped(&key))`.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// Writes to a formatter, escaping as it goes, so nothing is copied.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, mut text: &str) -> fmt::Result {
        while let Some(start) = text.find(needs_escape) {
            self.0.write_str(&text[..start])?;
            let mut rest = text[start..].chars();
            if let Some(special) = rest.next() {
                write!(self.0, "{}", special.escape_default())?;
            }
            text = rest.as_str();
        }
        self.0.write_str(text)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn escapes_what_could_break_or_colour_a_line() {
        let forged = "hi\nINFO admin logged in\r\u{1b}[31mred\u{7}\u{7f}\u{85}\u{2028}\t";
        assert_eq!(
            Escaped(forged).to_string(),
            r"hi\nINFO admin logged in\r\u{1b}[31mred\u{7}\u{7f}\u{85}\u{2028}\t"
        );
    }

    #[test]
    fn keeps_printable_text_and_wraps_any_display() {
        assert_eq!(
            Escaped("héllo «wörld» ✓ \\n").to_string(),
            "héllo «wörld» ✓ \\n"
        );
        let error = std::io::Error::other("line one\nline two");
        assert_eq!(Escaped(&error).to_string(), r"line one\nline two");
    }
}
