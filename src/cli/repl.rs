//! The REPL front end: rustyline on a terminal (with Tab completion), a line-by-line script
//! reader otherwise. What a line means is [`symdiff::Session`]'s business; this file only
//! moves text.
//!
//! Results go to stdout through [`Out`], like every command's: a closed pipe ends the session
//! quietly (a script's status is still 1 when one of its lines failed), any other write error
//! is reported and the exit status is 1 (see `cli`'s module doc). Errors of a line go to stderr
//! and the session goes on.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use symdiff::{Error, Session};

use super::{Out, OutputError, to_stderr};

pub fn run(out: &mut Out) -> ExitCode {
    let result = if std::io::stdin().is_terminal() { interactive(out) } else { script(out) };
    match result.and_then(|code| {
        out.flush().map(|()| code).or_else(|e| if e.is_closed() { Ok(code) } else { Err(e) })
    }) {
        Ok(code) => code,
        Err(e) => e.exit(),
    }
}

fn is_quit(line: &str) -> bool {
    matches!(line.trim(), ":quit" | ":q" | ":exit")
}

fn report(e: &Error, origin: &str, line: usize) -> String {
    match e {
        Error::Parse(d) => d.clone().with_origin(origin).at_line(line).render(),
        other => format!("error: {other}\n"),
    }
}

/// Reads stdin line by line and prints each result, without prompts. The exit code is 1 if
/// any line failed (the others still run).
fn script(out: &mut Out) -> Result<ExitCode, OutputError> {
    let mut session = Session::new();
    let mut failed = false;
    for (i, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let n = i + 1;
        let bytes = match line {
            Ok(b) => b,
            Err(e) => {
                to_stderr(&format!("error: cannot read standard input: {e}\n"));
                return Ok(ExitCode::FAILURE);
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let col = e.utf8_error().valid_up_to() + 1;
                to_stderr(&format!("error: <stdin>:{n}:{col}: the line is not valid UTF-8\n"));
                failed = true;
                continue;
            }
        };
        let text = text.trim_end_matches('\r');
        if is_quit(text) {
            break;
        }
        let written = match session.run(text) {
            Ok(result) if result.is_empty() => Ok(()),
            Ok(result) => out.line(&result),
            Err(e) => {
                failed = true;
                // What came before must be out before the error: stdout is a pipe here.
                let flushed = out.flush();
                to_stderr(&report(&e, "<stdin>", n));
                flushed
            }
        };
        match written {
            Ok(()) => {}
            // The reader has gone: stop reading, with the status of the lines run so far.
            Err(e) if e.is_closed() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".symdiff_history"))
}

/// Tab completion for the terminal: the word before the cursor completed from
/// [`Session::completion_words`], refreshed after every line.
#[derive(Default)]
struct Completion {
    words: Vec<String>,
}

/// The completions of the word that ends at byte `pos` of `line`: where the word starts and
/// the candidates, in order. A word is a run of letters, digits, `_` and `'` (as names are),
/// with a leading `:` for commands; nothing is offered for an empty word.
fn complete(words: &[String], line: &str, pos: usize) -> (usize, Vec<String>) {
    let head = line.get(..pos).unwrap_or(line);
    let start = head
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphanumeric() || c == '_' || c == '\'')
        .last()
        .map_or(head.len(), |(i, _)| i);
    let start =
        if head[..start].ends_with(':') && head[..start].trim().len() == 1 { start - 1 } else { start };
    let word = &head[start..];
    if word.is_empty() || word == ":" && start > 0 {
        return (start, Vec::new());
    }
    (start, words.iter().filter(|w| w.starts_with(word)).cloned().collect())
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = complete(&self.words, line, pos);
        Ok((start, found.into_iter().map(|w| Pair { display: w.clone(), replacement: w }).collect()))
    }
}

impl Hinter for Completion {
    type Hint = String;
}

impl Highlighter for Completion {}

impl Validator for Completion {}

impl Helper for Completion {}

fn interactive(out: &mut Out) -> Result<ExitCode, OutputError> {
    // As in a shell: Tab completes the common prefix, a second Tab lists the candidates.
    let config = rustyline::Config::builder().completion_type(rustyline::CompletionType::List).build();
    let mut editor: Editor<Completion, rustyline::history::DefaultHistory> = match Editor::with_config(config)
    {
        Ok(e) => e,
        Err(e) => {
            to_stderr(&format!("error: cannot start the line editor: {e}\n"));
            return script(out);
        }
    };
    let mut session = Session::new();
    editor.set_helper(Some(Completion { words: session.completion_words() }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h); // no history yet is fine
    }
    out.line(&format!("symdiff {}: type :help for help, Ctrl-D to quit", env!("CARGO_PKG_VERSION")))?;
    out.flush()?;
    loop {
        match editor.readline("symdiff> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if is_quit(&line) {
                    break;
                }
                match session.run(&line) {
                    Ok(result) if result.is_empty() => {}
                    Ok(result) => out.line(&result)?,
                    Err(e) => {
                        out.flush()?;
                        to_stderr(&report(&e, "<repl>", 1));
                    }
                }
                out.flush()?;
                if let Some(helper) = editor.helper_mut() {
                    helper.words = session.completion_words();
                }
            }
            Err(ReadlineError::Interrupted) => continue, // Ctrl-C: drop the line
            Err(ReadlineError::Eof) => break,            // Ctrl-D
            Err(e) => {
                to_stderr(&format!("error: {e}\n"));
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes `line` (cursor at the end, or at `|` when present) in a session that has run
    /// `setup`; checks the replaced word's start and the candidates.
    fn check(setup: &[&str], line: &str, start: usize, expected: &[&str]) {
        let mut session = Session::new();
        for s in setup {
            session.run(s).expect("setup line runs");
        }
        let pos = line.find('|').unwrap_or(line.len());
        let text = line.replace('|', "");
        let (s, found) = complete(&session.completion_words(), &text, pos);
        assert_eq!(
            (s, found.iter().map(String::as_str).collect::<Vec<_>>()),
            (start, expected.to_vec()),
            "{line}"
        );
    }

    #[rustfmt::skip]
    #[test]
    fn tab_completion() {
        check(&[], "si", 0, &["sigmoid", "sign", "sin", "sinh"]);
        check(&[], "d/dx x^3 + sq", 11, &["sqrt"]);
        check(&[], "logs", 0, &["logsoftmax", "logsumexp"]);
        check(&[], "sin(co|) + 1", 4, &["cos", "cosh"]);
        check(&[], ":c", 0, &[":clear"]);
        check(&[], ":", 0, &[":clear", ":funcs", ":help", ":ir", ":latex", ":quit", ":text", ":time", ":vars"]);
        check(&[], "he", 0, &["hessian"]);
        check(&[], "x + ", 4, &[]);
        check(&[], "sin", 0, &["sin", "sinh"]);
        check(&["speed(t) = t^2", "span = 3"], "sp", 0, &["span", "speed"]);
        check(&["θ0 = 1"], "sin(θ", 4, &["θ0"]);
        check(&["x^2"], "an", 0, &["ans"]);
        check(&[], "grad f wr", 7, &["wrt"]);
    }
}
