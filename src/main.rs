//! The `symdiff` command: a REPL and one-shot commands over the symdiff library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
