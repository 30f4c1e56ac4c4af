//! The REPL front end: rustyline on a terminal (with Tab completion), a line-by-line script
//! reader otherwise. What a line means is [`symdiff::Session`]'s business; this file only
//! moves text.
//!
//! Results go to stdout through [`Out`], like every command's: a closed pipe ends the session
//! quietly (a script's status is still 1 when one of its lines failed), any other write error
//! is reported and the exit status is 1 (see `cli`'s module doc). Errors of a line go to stderr
//! and the session goes on.

use std::cell::RefCell;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::rc::Rc;

use rustyline::completion::Completer;
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
    let mut input = std::io::stdin().lock();
    for n in 1.. {
        let bytes = match next_line(&mut input, symdiff::MAX_INPUT) {
            Ok(None) => break,
            Ok(Some(Line::Text(b))) => b,
            Ok(Some(Line::TooLong(len))) => {
                to_stderr(&format!(
                    "error: <stdin>:{n}:1: the line is {len} bytes; the limit is {} bytes ({} MiB)\n",
                    symdiff::MAX_INPUT,
                    symdiff::MAX_INPUT >> 20
                ));
                failed = true;
                continue;
            }
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

/// One line of a script: its bytes (without the newline), or only its length when it is
/// longer than the limit.
enum Line {
    Text(Vec<u8>),
    TooLong(usize),
}

/// The next line of `input`, holding at most `limit` bytes of it in memory: a line longer
/// than that (a gigabyte without a newline) is read through and counted, not stored.
fn next_line(input: &mut impl BufRead, limit: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break; // end of input
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let part = &buf[..newline.unwrap_or(buf.len())];
        len += part.len();
        if len <= limit {
            line.extend_from_slice(part);
        } else if !line.is_empty() {
            line = Vec::new(); // too long: stop holding it
        }
        let used = newline.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            break;
        }
    }
    Ok(match (any, len > limit) {
        (false, _) => None,
        (true, true) => Some(Line::TooLong(len)),
        (true, false) => Some(Line::Text(line)),
    })
}

/// Tab completion for the line editor: what the session offers ([`Session::complete`]:
/// built-in functions, its own names, the `:` commands). It shares the session with the loop,
/// which only changes it between lines.
struct Completion(Rc<RefCell<Session>>);

impl Completer for Completion {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.0.borrow().complete(line, pos))
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
    let session = Rc::new(RefCell::new(Session::new()));
    editor.set_helper(Some(Completion(Rc::clone(&session))));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h); // no history yet is fine
    }
    out.line(&format!(
        "symdiff {}: type :help for help, Tab to complete, Ctrl-D to quit",
        env!("CARGO_PKG_VERSION")
    ))?;
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
                let result = session.borrow_mut().run(&line);
                match result {
                    Ok(result) if result.is_empty() => {}
                    Ok(result) => out.line(&result)?,
                    Err(e) => {
                        out.flush()?;
                        to_stderr(&report(&e, "<repl>", 1));
                    }
                }
                out.flush()?;
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

    #[test]
    fn script_lines_are_read_within_the_limit() {
        let text = b"x + 1\n\n0123456789abcdef\nlast";
        let mut input = std::io::BufReader::with_capacity(4, &text[..]);
        let mut lines = Vec::new();
        while let Some(l) = next_line(&mut input, 10).unwrap() {
            lines.push(match l {
                Line::Text(b) => String::from_utf8(b).unwrap(),
                Line::TooLong(n) => format!("<{n} bytes>"),
            });
        }
        assert_eq!(lines, ["x + 1", "", "<16 bytes>", "last"]);
    }
}
