//! Positioned error reports: [`Span`], [`Diagnostic`] and its plain-text renderer.
//!
//! A diagnostic is plain data (message, byte span, optional help) plus a copy of the source
//! it points into, so it can render itself anywhere: the CLI, the REPL, a library user's log.
//! The rendering is fixed and colourless, which keeps it byte-stable for snapshot tests:
//!
//! ```text
//! error: unexpected `^`; expected a number, a name, `(`, `[` or `-`
//!  --> formula:1:3
//!   |
//! 1 | x^^2
//!   |   ^
//! ```
//!
//! Invariant: spans are byte offsets on `char` boundaries. Columns are counted in characters,
//! so the caret stays under the right character after non-ASCII text. A long line (a
//! megabyte formula) is shown as the part around the caret, not written out whole.

use std::fmt;

/// A byte range `start..end` in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// An error located in a source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// What the source is called in the report: `formula`, `<repl>`, a file path.
    pub origin: String,
    /// The text the span points into.
    pub source: String,
    /// Where the problem is.
    pub span: Span,
    /// What the problem is.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// Line number of the source's first line (a REPL script reports its own line numbers).
    pub first_line: usize,
}

impl Diagnostic {
    /// A diagnostic at `span` of `source` (clamped to the text and its char boundaries).
    pub fn new(source: &str, span: Span, message: impl Into<String>) -> Diagnostic {
        let span = clamp(source, span);
        Diagnostic {
            origin: "formula".into(),
            source: source.to_owned(),
            span,
            message: message.into(),
            help: None,
            first_line: 1,
        }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Names the source (`formula`, `--at`, a file path).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Diagnostic {
        self.origin = origin.into();
        self
    }

    /// Reports line numbers counted from `first_line` (for a line taken out of a script).
    pub fn at_line(mut self, first_line: usize) -> Diagnostic {
        self.first_line = first_line;
        self
    }

    /// 1-based line and column (in characters) of the span's start.
    pub fn line_col(&self) -> (usize, usize) {
        let (line, col) = line_col(&self.source, self.span.start);
        (line + self.first_line - 1, col)
    }

    /// The full report with the source line and a caret under the span. A line longer than
    /// `WINDOW` characters is shown as the part around the caret, cut with `…`.
    pub fn render(&self) -> String {
        let (line, col) = self.line_col();
        let line_start = self.source[..self.span.start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.source[line_start..].find('\n').map_or(self.source.len(), |i| line_start + i);
        let text = &self.source[line_start..line_end];
        // Carets cover the span's characters on this line (at least one).
        let span_end = self.span.end.min(line_end).max(self.span.start);
        let mut width = self.source[self.span.start..span_end].chars().count().max(1);
        let mut caret = col - 1;
        let chars = text.chars().count();
        let shown = if chars <= WINDOW {
            visible(text)
        } else {
            let from = caret.saturating_sub(WINDOW / 2).min(chars - WINDOW);
            let cut_left = from > 0;
            let cut_right = from + WINDOW < chars;
            width = width.min(from + WINDOW - caret);
            caret = caret - from + usize::from(cut_left);
            let part: String = text.chars().skip(from).take(WINDOW).collect();
            format!(
                "{}{}{}",
                if cut_left { "…" } else { "" },
                visible(&part),
                if cut_right { "…" } else { "" }
            )
        };
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        let mut out = format!("error: {}\n{pad}--> {}:{line}:{col}\n", self.message, self.origin);
        out += &format!("{pad} |\n{line} | {shown}\n");
        out += &format!("{pad} | {}{}\n", " ".repeat(caret), "^".repeat(width));
        if let Some(help) = &self.help {
            out += &format!("{pad} = help: {help}\n");
        }
        out
    }
}

/// One line: `origin:line:col: message`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{line}:{col}: {}", self.origin, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Lines longer than this many characters are shown in part, around the caret.
pub const WINDOW: usize = 100;

/// Tabs and other control characters would misplace the caret; show them as spaces.
fn visible(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn clamp(source: &str, span: Span) -> Span {
    let fix = |mut i: usize| {
        i = i.min(source.len());
        while !source.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = fix(span.start);
    Span::new(start, fix(span.end).max(start))
}

/// 1-based line and character column of byte offset `at`.
pub fn line_col(source: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(source.len());
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
