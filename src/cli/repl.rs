//! The REPL front end: rustyline on a terminal (with tab completion), a line-by-line script
//! reader otherwise. What a line means, and what a word could complete to, is
//! [`symdiff::Session`]'s business; this file only moves text.

use std::cell::RefCell;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::rc::Rc;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use symdiff::{Error, Session};

pub fn run() -> ExitCode {
    if std::io::stdin().is_terminal() { interactive() } else { script() }
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
fn script() -> ExitCode {
    let mut session = Session::new();
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut input = std::io::stdin().lock();
    for n in 1.. {
        let bytes = match next_line(&mut input, symdiff::MAX_INPUT) {
            Ok(None) => break,
            Ok(Some(Line::Text(b))) => b,
            Ok(Some(Line::TooLong(len))) => {
                eprintln!(
                    "error: <stdin>:{n}:1: the line is {len} bytes; the limit is {} bytes ({} MiB)",
                    symdiff::MAX_INPUT,
                    symdiff::MAX_INPUT >> 20
                );
                failed = true;
                continue;
            }
            Err(e) => {
                eprintln!("error: cannot read standard input: {e}");
                return ExitCode::FAILURE;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "error: <stdin>:{n}:{}: the line is not valid UTF-8",
                    e.utf8_error().valid_up_to() + 1
                );
                failed = true;
                continue;
            }
        };
        let text = text.trim_end_matches('\r');
        if is_quit(text) {
            break;
        }
        match session.run(text) {
            Ok(out) if out.is_empty() => {}
            Ok(out) => {
                let mut lock = stdout.lock();
                if writeln!(lock, "{out}").is_err() {
                    return ExitCode::FAILURE; // stdout closed
                }
            }
            Err(e) => {
                failed = true;
                eprint!("{}", report(&e, "<stdin>", n));
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
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

/// Tab completion for the line editor: what the session offers (built-in functions, its own
/// names, the `:` commands). It shares the session with the loop, which only changes it
/// between lines.
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

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".symdiff_history"))
}

fn interactive() -> ExitCode {
    let config = Config::builder().completion_type(CompletionType::List).build();
    let mut editor: Editor<Completion, _> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return script();
        }
    };
    let session = Rc::new(RefCell::new(Session::new()));
    editor.set_helper(Some(Completion(Rc::clone(&session))));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h); // no history yet is fine
    }
    println!("symdiff {}: type :help for help, Tab to complete, Ctrl-D to quit", env!("CARGO_PKG_VERSION"));
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
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => println!("{out}"),
                    Err(e) => eprint!("{}", report(&e, "<repl>", 1)),
                }
            }
            Err(ReadlineError::Interrupted) => continue, // Ctrl-C: drop the line
            Err(ReadlineError::Eof) => break,            // Ctrl-D
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    ExitCode::SUCCESS
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
