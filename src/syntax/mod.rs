//! Stage 1 of the pipeline: text to syntax trees.
//!
//! Owns the lexer (logos), the generated parser (lalrpop, from `grammar/symdiff.lalrpop`), the
//! arena AST and positioned [`Diagnostic`]s.
//!
//! **Input size.** Two limits, by where text comes from. Text a person types or a command
//! reads (a REPL or script line, a formula on the command line or stdin, `--at` points, a
//! model file) is refused over [`MAX_INPUT`] (16 MiB); the library's `Expr::parse`, whose
//! caller is a program that already holds the text, reads up to [`MAX_FORMULA`] (256 MiB, a
//! written-out sum of several million terms). Both are refused with an error before lexing
//! ([`check_size`]). Parsing costs up to about 130 bytes of memory per byte of input for the
//! worst nesting (`x^x^x^...`), about 30 for a written-out sum, and what the parsed text builds
//! is bounded by the graph's node budget, so no text makes symdiff abort.
//!
//! **Architecture Invariant:** `syntax` knows nothing about graphs, values or derivatives, and
//! never panics on any input: every failure is a [`Diagnostic`] with a span.

pub mod ast;
mod diagnostic;
pub mod lexer;

use lalrpop_util::ParseError;

pub use ast::{
    Ast, AstId, AstKind, BinOp, Binding, Index, Item, Line, ModelLine, Name, Reduce, Spanned, Stmt, Value,
};
pub use diagnostic::{Diagnostic, Span, line_col};
use lexer::{LexError, Tok};

lalrpop_util::lalrpop_mod!(
    #[allow(
        clippy::ptr_arg,
        clippy::type_complexity,
        clippy::large_enum_variant,
        clippy::vec_box,
        unused_qualifications
    )]
    grammar,
    "/symdiff.rs"
);

/// The most bytes of interactive or command-line text the parser reads at once: a REPL or
/// script line, a formula given to a command, a point or a model file. 16 MiB holds a sum of
/// a million variables.
pub const MAX_INPUT: usize = 16 << 20;

/// The most bytes of a formula the library parses (`Expr::parse`): 256 MiB, a written-out sum
/// of about five million terms. Spans are `u32`-safe below it.
pub const MAX_FORMULA: usize = 256 << 20;

/// An error for `src` if it is longer than `limit` bytes. The report points at the start and
/// quotes only the first characters (the text may be gigabytes).
pub fn check_size(src: &str, what: &str, limit: usize) -> Result<(), Diagnostic> {
    if src.len() <= limit {
        return Ok(());
    }
    let line = src.lines().next().unwrap_or("");
    let mut head: String = line.chars().take(60).collect();
    if head.len() < line.len() {
        head.push('…');
    }
    let mib = |n: usize| n as f64 / (1u64 << 20) as f64;
    Err(Diagnostic::new(
        &head,
        Span::new(0, 0),
        format!(
            "{what} is {} bytes ({:.1} MiB); the limit is {limit} bytes ({} MiB)",
            src.len(),
            mib(src.len()),
            limit >> 20
        ),
    )
    .with_help("split it into smaller pieces (REPL definitions can name the parts)"))
}

/// Which names are functions, for the hints of parse errors (`sin x` is `sin(x)`, `a x` is
/// `a*x`). Syntax does not know; the caller does.
pub type IsFunction<'a> = &'a dyn Fn(&str) -> bool;

/// Parses one formula (`x^3 + 2*x^2 + 1`) of at most `limit` bytes, with hints that know which
/// names are functions.
pub fn parse_formula(
    src: &str,
    is_function: IsFunction<'_>,
    limit: usize,
) -> Result<(Ast, AstId), Diagnostic> {
    check_size(src, "the formula", limit)?;
    check_nonempty(src, "an expression")?;
    let mut ast = Ast::default();
    let root = grammar::FormulaParser::new()
        .parse(&mut ast, lexer::tokens(src, false))
        .map_err(|e| diagnose(src, e, is_function))?;
    Ok((ast, root))
}

/// Parses one REPL line (`d/dx x^3 at x = 4`, `f(x) = ...`, `grad f`, ...), with hints that
/// know which names are functions.
pub fn parse_line(src: &str, is_function: IsFunction<'_>) -> Result<(Ast, Line), Diagnostic> {
    check_size(src, "the line", MAX_INPUT)?;
    check_nonempty(src, "an expression or a command")?;
    let mut ast = Ast::default();
    let line = grammar::LineParser::new()
        .parse(&mut ast, lexer::tokens(src, false))
        .map_err(|e| diagnose(src, e, is_function))?;
    Ok((ast, *line))
}

/// Parses a model file (newlines are statement separators; `#` starts a comment).
pub fn parse_model(src: &str) -> Result<(Ast, Vec<ModelLine>), Diagnostic> {
    check_size(src, "the model file", MAX_INPUT)?;
    let mut ast = Ast::default();
    let lines = grammar::ModelParser::new()
        .parse(&mut ast, lexer::tokens(src, true))
        .map_err(|e| diagnose(src, e, &|_| false))?;
    Ok((ast, lines))
}

/// Parses `x = 4, y = 2`.
pub fn parse_bindings(src: &str) -> Result<(Ast, Vec<Binding>), Diagnostic> {
    check_size(src, "the point", MAX_INPUT)?;
    check_nonempty(src, "bindings")?;
    let mut ast = Ast::default();
    let b = grammar::BindingsParser::new()
        .parse(&mut ast, lexer::tokens(src, false))
        .map_err(|e| diagnose(src, e, &|_| false))?;
    Ok((ast, b))
}

/// One piece of a long sum, cut by [`cut_sum`]: the bytes `range` of the source (a sum of
/// whole terms) and whether the cut before it was a `-`, which the piece's first term then
/// carries. `first` is where the piece's first token starts (`None` for the first piece): in
/// the whole text, a later piece's first term is the right operand of a sign, so a sum in
/// parentheses there is one term, while the same sum opening the formula would be part of the
/// top-level chain; a syntax node of the piece that starts at `first` is the chain's, one that
/// starts later was in parentheses. `last`: nothing follows it.
///
/// Positions (here and in the piece's syntax tree, [`parse_piece`]) are byte offsets into the
/// whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub range: std::ops::Range<usize>,
    pub negated: bool,
    pub first: Option<usize>,
    pub last: bool,
}

/// Cuts a formula whose top is a long sum `t0 ± t1 ± ...` into pieces of about `piece_bytes`
/// each, at `+` and `-` signs between terms, so that the pieces can be parsed apart (on two
/// threads) and lowered in order, and the syntax tree of the whole text is never held at once.
/// A formula with no such sign is one piece, the whole text.
///
/// One scan over the bytes, without lexing: a `+` or `-` outside parentheses and brackets
/// that follows an operand (the end of a number or a name, `)` or `]`) is a sign between terms
/// of the top-level sum, since a sum is the loosest construct of the grammar. Comments are
/// skipped, and a number's exponent (`1e-5`) is part of the number, so every `+` and `-` the
/// scan sees is a token of its own. The cut is sound without knowing the tokens exactly: where
/// the scan takes a word for an operand that is not one (a keyword, `d/dx`), or counts
/// brackets in text that does not lex, the piece before the cut does not parse; and pieces
/// that all parse, joined by their signs, are the same sum as the whole text. So either every
/// piece parses and means what the whole text means, or one fails and the caller parses the
/// text in one piece, for the positioned error.
pub fn cut_sum(src: &str, piece_bytes: usize) -> Vec<Piece> {
    cut_sum_in(src, 0..src.len(), piece_bytes)
}

/// [`cut_sum`] of the formula `src[within]` (positions in the whole of `src`).
pub fn cut_sum_in(src: &str, within: std::ops::Range<usize>, piece_bytes: usize) -> Vec<Piece> {
    let b = &src.as_bytes()[..within.end];
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c >= 0x80;
    let (mut pieces, mut start, mut negated, mut first) = (Vec::new(), within.start, false, None);
    let (mut depth, mut after_operand, mut i) = (0usize, false, within.start);
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                i = skip_comment(b, i);
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b'+' | b'-' if depth == 0 && after_operand && i - start >= piece_bytes => {
                pieces.push(Piece { range: start..i, negated, first, last: false });
                (start, negated, first) = (i + 1, c == b'-', Some(next_token(b, i + 1)));
            }
            _ if word(c) => {
                // A word: a name, a number (with its exponent) or a size like `28x28`.
                let number = c.is_ascii_digit() || c == b'.';
                while i < b.len() && word(b[i]) {
                    let e = (b[i] | 0x20) == b'e';
                    i += 1;
                    if number
                        && e
                        && i + 1 < b.len()
                        && matches!(b[i], b'+' | b'-')
                        && b[i + 1].is_ascii_digit()
                    {
                        i += 1; // the exponent's sign
                    }
                }
                after_operand = true;
                continue;
            }
            _ => {}
        }
        after_operand = matches!(c, b')' | b']') || (c.is_ascii_whitespace() && after_operand);
        i += 1;
    }
    pieces.push(Piece { range: start..b.len(), negated, first, last: true });
    pieces
}

/// Where the first token at or after `k` starts (spaces, newlines and comments skipped).
fn next_token(b: &[u8], mut k: usize) -> usize {
    loop {
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if k < b.len() && b[k] == b'#' {
            k = skip_comment(b, k);
            continue;
        }
        return k;
    }
}

/// The end of the comment that starts at `b[k]` (`#`): the newline, or the end of the text.
fn skip_comment(b: &[u8], mut k: usize) -> usize {
    while k < b.len() && b[k] != b'\n' {
        k += 1;
    }
    k
}

/// A formula that is one long sum inside parentheses, behind nothing but signs, function
/// names and more parentheses (`log(exp(x0) + exp(x1) + ...)`, `-(...)^2`, `sqrt(a + ...)*y`):
/// the bytes between those parentheses, so that the sum can be cut into pieces ([`cut_sum_in`])
/// while what is around it is parsed apart, with a name in the sum's place.
///
/// Of the parentheses opened before the first operand, the innermost is taken that
/// - holds at least `2 * piece_bytes` bytes;
/// - holds one expression: no `,` or `=` directly inside it, as the arguments of `diff(f, x)`
///   and the bounds of `sum(i = ...)` have;
/// - is a call's argument, or else is not followed by `+ - * /`: lowering builds a chain
///   `(a + b) - c` as one node, and a sum lowered apart would be one more node.
///
/// Nothing outside it comes before it in the formula, so lowering the sum first builds the
/// nodes in the order, and the very nodes, that the whole formula's lowering builds. The cut
/// is checked as [`cut_sum`]'s is: the sum must parse as a formula and the text around it,
/// with a name in its place, must parse too; then, the grammar being unambiguous, the whole
/// text is that formula with the sum in the name's place. `None` where there is no such sum.
pub fn wrapped_sum(src: &str, piece_bytes: usize) -> Option<std::ops::Range<usize>> {
    let b = src.as_bytes();
    let name_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let name_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    // The parentheses opened before the first operand, outermost first, and whether each
    // opens a call's arguments.
    let mut opens: Vec<(usize, bool)> = Vec::new();
    let mut i = next_token(b, 0);
    while i < b.len() {
        match b[i] {
            b'-' | b'+' => i += 1,
            b'(' => {
                opens.push((i, false));
                i += 1;
            }
            c if name_start(c) => {
                let mut j = i;
                while j < b.len() && name_byte(b[j]) {
                    j += 1;
                }
                j = next_token(b, j);
                if b.get(j) != Some(&b'(') {
                    break; // a name that is an operand
                }
                opens.push((j, true));
                i = j + 1;
            }
            _ => break,
        }
        i = next_token(b, i);
    }
    let &(open, _) = opens.last()?;
    // One scan from the innermost, matching each open parenthesis, innermost first, and
    // noting a `,` or `=` directly inside each.
    let (mut depth, mut i) = (0usize, open);
    let mut closes: Vec<(usize, bool)> = Vec::new(); // (close, one expression), innermost first
    let mut listed = false;
    while i < b.len() && closes.len() < opens.len() {
        match b[i] {
            b'#' => {
                i = skip_comment(b, i);
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' if depth > 1 => depth -= 1,
            b')' | b']' => {
                // Closes the innermost group still open among `opens`; the scan goes on in
                // the group around it, which holds the text scanned so far.
                closes.push((i, !listed && b[i] == b')'));
                listed = false;
            }
            b',' | b'=' if depth == 1 => listed = true,
            _ => {}
        }
        i += 1;
    }
    let chained = |close: usize| {
        let k = next_token(b, close + 1);
        match b.get(k) {
            Some(b'*') => b.get(k + 1) != Some(&b'*'), // `**` is a power
            Some(b'+' | b'-' | b'/') => true,
            _ => false,
        }
    };
    closes.iter().zip(opens.iter().rev()).find_map(|(&(close, single), &(open, call))| {
        let inside = open + 1..close;
        (inside.len() >= 2 * piece_bytes && single && (call || !chained(close))).then_some(inside)
    })
}

/// Parses one piece cut by [`cut_sum`] (as a formula; spans in the whole text), or `Err(())`
/// if it does not parse.
pub fn parse_piece(src: &str, piece: &Piece) -> Result<(Ast, AstId), ()> {
    let at = piece.range.start;
    let tokens = lexer::tokens(&src[piece.range.clone()], false).map(move |t| match t {
        Ok((l, tok, r)) => Ok((l + at, tok, r + at)),
        Err(e) => Err(e),
    });
    let mut ast = Ast::default();
    let root = grammar::FormulaParser::new().parse(&mut ast, tokens).map_err(|_| ())?;
    Ok((ast, root))
}

fn check_nonempty(src: &str, what: &str) -> Result<(), Diagnostic> {
    let only_blank = lexer::tokens(src, false).next().is_none();
    if only_blank {
        return Err(Diagnostic::new(src, Span::new(src.len(), src.len()), "empty input").with_help(
            match what {
                "bindings" => "write values as `x=4,y=2`".to_owned(),
                _ => format!("write {what}, for example `x^2 + 1`"),
            },
        ));
    }
    Ok(())
}

/// The name that ends just before byte `at` (spaces between allowed), if any.
fn name_before(src: &str, at: usize) -> Option<&str> {
    let before = src[..at].trim_end();
    let start = before
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphanumeric() || c == '_')
        .last()
        .map(|(i, _)| i)?;
    let word = &before[start..];
    word.starts_with(|c: char| c.is_alphabetic() || c == '_').then_some(word)
}

/// The name that starts at byte `at`, if any.
fn name_after(src: &str, at: usize) -> Option<&str> {
    let rest = &src[at..];
    let end =
        rest.char_indices().find(|&(_, c)| !(c.is_alphanumeric() || c == '_')).map_or(rest.len(), |(i, _)| i);
    let word = &rest[..end];
    word.starts_with(|c: char| c.is_alphabetic() || c == '_').then_some(word)
}

/// Turns lalrpop's error into a positioned diagnostic with the expected tokens in words.
fn diagnose(src: &str, err: ParseError<usize, Tok, LexError>, is_function: IsFunction<'_>) -> Diagnostic {
    match err {
        ParseError::User { error } => {
            let help = if error.text.starts_with("d/") || error.text.starts_with("d^") {
                Some("derivative operators are written `d/dx` or `d^2/dx^2`".to_owned())
            } else if error.text == "."
                && src[..error.span.start]
                    .rsplit('\n')
                    .next()
                    .is_some_and(|l| l.trim_start().starts_with("data "))
            {
                // `data csv train.csv`: a path on a model file's `data` line.
                Some(
                    "file paths are written in quotes, as in `data csv \"train.csv\" label=COLUMN`"
                        .to_owned(),
                )
            } else if error.text == "."
                && let (Some(a), Some(b)) =
                    (name_before(src, error.span.start), name_after(src, error.span.end))
                && src[..error.span.start].ends_with(a)
            {
                // `dense_1.kernel`: weight files name parameters with a dot, formulas with `_`.
                Some(format!("names in formulas have no `.`: the parameter `{a}.{b}` is written `{a}_{b}`"))
            } else {
                None
            };
            let d = Diagnostic::new(src, error.span, error.message());
            match help {
                Some(h) => d.with_help(h),
                None => d,
            }
        }
        ParseError::UnrecognizedToken { token: (l, tok, r), expected } => {
            let mut d = Diagnostic::new(
                src,
                Span::new(l, r),
                format!("unexpected {tok}; expected {}", expected_words(&expected)),
            );
            let expects = |t: &str| expected.iter().any(|e| e.trim_matches('"') == t);
            let binding_follows =
                src[r..].trim_start().starts_with('=') && !src[r..].trim_start().starts_with("==");
            if matches!(tok, Tok::Caret) && src[..l].trim_end().ends_with(['^', '*']) {
                d = d.with_help("`^` (or `**`) needs an exponent on its right, as in `x^2`");
            } else if matches!(tok, Tok::Ident(_)) && expects(",") && binding_follows {
                // `x=1 y=2`: a list of bindings missing its commas.
                let comma = if src.contains(" = ") || src.contains(", ") { ", " } else { "," };
                let fixed = format!("{}{comma}{}", src[..l].trim_end(), &src[l..]);
                d = d.with_help(if fixed.len() <= 60 {
                    format!("separate bindings with commas: `{fixed}`")
                } else {
                    "separate bindings with commas, as in `x=1,y=2`".to_owned()
                });
            } else if matches!(tok, Tok::Ident(_) | Tok::Num(_))
                && expects("(")
                && let Some(f) = name_before(src, l).filter(|f| is_function(f))
            {
                // `sin x`: a function applied without parentheses.
                d = d.with_help(format!("function arguments go in parentheses: `{f}({})`", &src[l..r]));
            } else if matches!(tok, Tok::Ident(_) | Tok::LParen) && expects("*") {
                d = d.with_help("write products with `*`, as in `2*x`");
            } else if matches!(tok, Tok::RParen) {
                d = d.with_help("this `)` has no matching `(`");
            }
            d
        }
        ParseError::UnrecognizedEof { location, expected } => {
            let opened = src.matches('(').count() > src.matches(')').count();
            let d = Diagnostic::new(
                src,
                Span::new(location, location),
                format!("unexpected end of input; expected {}", expected_words(&expected)),
            );
            if opened && expected.iter().any(|e| e == "\")\"") {
                d.with_help("a `(` is not closed")
            } else {
                d
            }
        }
        ParseError::ExtraToken { token: (l, tok, r) } => {
            Diagnostic::new(src, Span::new(l, r), format!("unexpected {tok} after the end of the input"))
        }
        ParseError::InvalidToken { location } => {
            Diagnostic::new(src, Span::new(location, location), "invalid token")
        }
    }
}

/// `["\"number\"", "\"(\""]` to "a number or `(`".
fn expected_words(expected: &[String]) -> String {
    let mut words: Vec<String> = expected
        .iter()
        .map(|e| {
            let e = e.trim_matches('"');
            match e {
                "number" => "a number".to_owned(),
                "name" => "a name".to_owned(),
                "newline" => "end of line".to_owned(),
                "d/dx" => "`d/dx`".to_owned(),
                "size" => "a size like `28x28`".to_owned(),
                "text" => "a text in quotes".to_owned(),
                other => format!("`{other}`"),
            }
        })
        .collect();
    // Most specific first: numbers and names, then punctuation in a fixed order.
    words.sort_by_key(|w| (!w.starts_with('a'), w.clone()));
    words.dedup();
    match words.len() {
        0 => "the end of the input".to_owned(),
        1 => words.remove(0),
        n if n > 8 => {
            // Many operators: name the closers among them, which say where the reader is
            // (`sin(x` expects an operator, `,` or `)`).
            let closers: Vec<&str> =
                ["`,`", "`)`", "`]`"].into_iter().filter(|c| words.iter().any(|w| w == c)).collect();
            match closers.split_last() {
                None => "an operator or the end of the input".to_owned(),
                Some((last, [])) => format!("an operator or {last}"),
                Some((last, rest)) => format!("an operator, {} or {last}", rest.join(", ")),
            }
        }
        _ => {
            let last = words.pop().unwrap_or_default();
            format!("{} or {last}", words.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `wrapped_sum` takes from `src` with pieces of 2 bytes: the text inside the
    /// parentheses, or `None`.
    fn check(src: &str, want: Option<&str>) {
        assert_eq!(wrapped_sum(src, 2).map(|r| &src[r]), want, "{src}");
    }

    #[test]
    fn wrapped_sums_are_found_behind_signs_calls_and_parentheses() {
        check("log(exp(x) + exp(y))", Some("exp(x) + exp(y)"));
        check("-log(exp(x) + exp(y))^2 - z", Some("exp(x) + exp(y)"));
        check(" + ( (a - b) )", Some("a - b"));
        check("sqrt (  a + b  )*y", Some("  a + b  "));
        check("f(g(a + b))", Some("a + b"));
        check("f(g(x) + h(y))", Some("g(x) + h(y)"));
        check("f(g(a) + b)", Some("g(a) + b"));
        check("log(# ( in a comment\n a + b)", Some("# ( in a comment\n a + b"));
        check("log([a, b] + c)", Some("[a, b] + c"));
        // The innermost group with room for pieces (`(x)` holds one byte), one expression and
        // not in a chain.
        check("log(exp(x))", Some("exp(x)"));
        check("log(diff(a + b, x))", Some("diff(a + b, x)"));
        check("((a + b) - c)", Some("(a + b) - c"));
        check("((a*b)*c)", Some("(a*b)*c"));
        check("((a*b)/c + d)", Some("(a*b)/c + d"));
        check("((a + b)*c)", Some("(a + b)*c"));
        check("((a + b)^c)", Some("a + b"));
        check("((a + b)**c)", Some("a + b"));
        check("(f(a + b) - c)", Some("a + b"));
        check("(a + b) - c", None);
        check("(x)", None);
        // An operand before the parentheses, or none at all.
        check("2*(a + b)", None);
        check("x*log(a + b)", None);
        check("a + b", None);
        check("x", None);
        // Not one expression inside.
        check("diff(x + y, x)", None);
        check("sum(i = 0..2, x[i])", None);
        check("log(x + y]", None);
        // Unbalanced: no group closes.
        check("log(x + y", None);
        check("log(exp(x + y)", Some("x + y"));
    }
}
