//! The README's examples, run as a new user would type them: every REPL transcript in it
//! (`symdiff> ` lines and the output below them), in order and in *one* session, and every
//! command-line example whose expected output is written beside it (`symdiff ... # => OUT`, or
//! on the next line as `# => OUT`). The README cannot drift from what the binary does.

use std::io::Write;
use std::process::{Command, Stdio};

const README: &str = include_str!("../README.md");

/// The contents of every fenced block of `lang` in `text`, in order.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_end() == format!("```{lang}") => current = Some(Vec::new()),
            Some(block) if line.trim_end() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => block.push(line),
            None => {}
        }
    }
    out
}

/// Runs the binary with `args` (none: the REPL) on `stdin`; returns stdout, stderr, status.
fn symdiff(args: &[String], stdin: &str) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_symdiff"))
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("symdiff runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("symdiff finishes");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), out.status.code().unwrap_or(-1))
}

#[test]
fn repl_transcripts_in_one_session() {
    let mut script = String::new();
    let mut expected = String::new();
    let mut lines_seen = 0;
    for block in blocks(README, "text") {
        // A transcript starts at a prompt and runs to the end of the block or to a shell
        // line (`$ symdiff`, which starts the session the transcript is typed into).
        let mut in_transcript = false;
        for line in block {
            if line.starts_with("$ ") {
                in_transcript = false;
            } else if let Some(input) = line.strip_prefix("symdiff> ") {
                in_transcript = true;
                script.push_str(input);
                script.push('\n');
                lines_seen += 1;
            } else if in_transcript {
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    assert!(lines_seen >= 10, "the README's REPL transcripts were not found ({lines_seen} lines)");
    let (out, err, code) = symdiff(&[], &script);
    assert_eq!((out.as_str(), err.as_str(), code), (expected.as_str(), "", 0), "script:\n{script}");
}

/// Splits a shell command line of the README (single quotes, `-`, no other quoting).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            _ => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in README line `{line}`");
    if any {
        out.push(word);
    }
    out
}

#[test]
fn command_line_examples() {
    let mut checked = 0;
    for block in blocks(README, "sh") {
        for (i, line) in block.iter().enumerate() {
            let Some(command) = line.strip_prefix("symdiff ") else { continue };
            // The output is written beside the command (`# => OUT`) or on the next line alone.
            let (command, beside) = match command.split_once("# => ") {
                Some((c, e)) => (c.trim(), Some(e.trim())),
                None => (command.split(" # ").next().unwrap_or(command).trim(), None),
            };
            let below = block.get(i + 1).and_then(|l| l.trim_start().strip_prefix("# => ")).map(str::trim);
            let Some(expected) = beside.or(below) else { continue };
            if command.contains('<') || command.contains('|') {
                continue; // redirections need files that the README does not ship
            }
            let (out, err, code) = symdiff(&words(command), "");
            assert_eq!((out.trim_end(), code), (expected, 0), "symdiff {command}\nstderr: {err}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} README command lines had an expected output");
}
