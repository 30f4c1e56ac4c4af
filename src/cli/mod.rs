//! The command line: argument parsing (clap), the one-shot commands and their output formats.
//!
//! Exit codes: 0 success, 1 a symdiff error (bad formula, evaluation failure, bad values,
//! standard output that cannot be written), 2 a usage error (clap). Errors go to stderr;
//! results to stdout.
//!
//! Every result goes to stdout through one writer, [`Out`], whose errors propagate instead of
//! panicking as `println!` does; it is flushed explicitly at the end, so a full disk is
//! noticed. Two cases:
//!
//! * **stdout closed** (EPIPE: `symdiff show M | head`): the command ends quietly, with no
//!   message and exit status 0, as ripgrep and most Unix filters do: the reader has all it
//!   asked for. `train` stops at that point: the checkpoint of the epoch whose line could not
//!   be written is already on disk (a checkpoint is written before anything is printed about
//!   its epoch), so `symdiff train M --json | head -1` keeps epoch 2, and `--resume` continues
//!   from it, as after Ctrl-C.
//! * **any other write error** (ENOSPC on `> /dev/full`): `error: writing to stdout: ...`,
//!   exit 1 (`train` also names its checkpoint).
//!
//! Messages on stderr go through [`note!`] and [`to_stderr`], which ignore a failed write:
//! there is nowhere left to report it, and the exit code still tells.

use std::io::Write as _;

/// `eprintln!` that never panics: a write to a closed or full stderr is dropped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod input;
mod matrix;
mod model;
mod repl;

use std::process::ExitCode;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use symdiff::{Error, Expr, Point};

#[derive(Parser)]
#[command(name = "symdiff", version, about = "Symbolic differentiation and expression compiler")]
#[command(after_help = "With no command, symdiff starts the REPL.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The point a formula command evaluates at, and values for names: the options every
/// formula command shares (one definition, so their help and parsing cannot drift apart).
#[derive(Args)]
struct PointArgs {
    /// The point, e.g. --at x=4,y=2 or x=[1,2,3] for x[0], x[1], x[2] (every variable needs a
    /// value); --at @FILE reads it from a file.
    #[arg(long, value_name = "VAR=VALUE,...")]
    at: Vec<String>,
    #[command(flatten)]
    lets: Lets,
}

/// Values for names in sum bounds and formulas.
#[derive(Args)]
struct Lets {
    /// Values for names in sum bounds and formulas, e.g. --let n=1000.
    #[arg(long = "let", value_name = "NAME=VALUE,...")]
    lets: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive session (the default). Reads a script when stdin is not a terminal.
    Repl,
    /// Print the simplified derivative of a formula.
    Diff {
        /// The formula, e.g. 'x^3 + 2*x^2 + 1' ('-' reads it from stdin).
        #[arg(allow_hyphen_values = true)]
        expr: String,
        /// Differentiate with respect to VAR (repeatable; `x` for every element `x[i]`);
        /// default: every variable.
        #[arg(long, value_name = "VAR")]
        wrt: Vec<String>,
        #[command(flatten)]
        point: PointArgs,
        /// Output format of the expressions.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print JSON: {"derivatives":{...}} plus "values" with --at.
        #[arg(long)]
        json: bool,
    },
    /// Print the value and every partial derivative at a point (compiled to native code).
    Grad {
        /// The formula ('-' reads it from stdin).
        #[arg(allow_hyphen_values = true)]
        expr: String,
        #[command(flatten)]
        point: PointArgs,
        /// Print JSON: {"value":...,"grad":{...}}, with the partials of x[0], x[1], ... as one
        /// array "x".
        #[arg(long)]
        json: bool,
        /// Evaluate with the interpreter instead of compiled code.
        #[arg(long)]
        interp: bool,
        /// Print parse, gradient, compile and evaluation times to stderr.
        #[arg(long)]
        timings: bool,
    },
    /// Print the value and the Hessian at a point (compiled; dense, or --sparse).
    Hessian {
        /// The formula ('-' reads it from stdin).
        #[arg(allow_hyphen_values = true)]
        expr: String,
        #[command(flatten)]
        point: PointArgs,
        /// Differentiate with respect to VAR (repeatable, in this order); default: every
        /// variable, as they first appear. The others keep their values from --at.
        #[arg(long, value_name = "VAR")]
        wrt: Vec<String>,
        /// Only the entries that are not identically zero, lower triangle (col <= row).
        #[arg(long)]
        sparse: bool,
        /// Print JSON: {"value","variables","hessian"}; with --sparse, "entries":
        /// [[row, col, value], ...] (0-based indices into "variables").
        #[arg(long)]
        json: bool,
    },
    /// Print the values and the Jacobian of formulas at a point: 'f1, f2, ...'.
    Jacobian {
        /// The formulas, separated by commas or given as separate arguments (after `--`
        /// when the first starts with `-`).
        #[arg(required = true)]
        exprs: Vec<String>,
        #[command(flatten)]
        point: PointArgs,
        /// Differentiate with respect to VAR (repeatable, in this order); default: every
        /// variable, as they first appear.
        #[arg(long, value_name = "VAR")]
        wrt: Vec<String>,
        /// Only the entries that are not identically zero.
        #[arg(long)]
        sparse: bool,
        /// Print JSON: {"values","variables","jacobian"}; with --sparse, "entries".
        #[arg(long)]
        json: bool,
    },
    /// Print the gradient of a formula as standalone C or Rust source.
    Export {
        /// The formula ('-' reads it from stdin).
        #[arg(allow_hyphen_values = true)]
        expr: String,
        /// Target language.
        #[arg(long, value_enum, default_value_t = Lang::C)]
        lang: Lang,
        /// Name of the generated function.
        #[arg(long, default_value = "f")]
        name: String,
        #[command(flatten)]
        lets: Lets,
    },
    /// Print the value of a formula at a point; or, with --weights, a model's test accuracy.
    Eval {
        /// The formula ('-' reads it from stdin), or a model file with --weights.
        #[arg(allow_hyphen_values = true)]
        expr: String,
        #[command(flatten)]
        point: PointArgs,
        /// Weights of the model (a .safetensors file from `train --save`).
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// Directory with the MNIST files, for `data mnist` (default: $SYMDIFF_DATA, then the
        /// cache); a `data` line that names files reads them relative to the model file.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Train a model file (the data set is fetched on first use).
    Train(model::TrainArgs),
    /// Measure training: compile time, median step time at batch 32 and 256 (compiled, and
    /// the interpreter as the baseline of the same run), the whole fit, GFLOP/s, peak memory.
    Bench {
        /// The model file, e.g. examples/mnist.model.
        file: PathBuf,
        /// Directory with the MNIST files, for `data mnist` (default: $SYMDIFF_DATA, then the
        /// cache); a `data` line that names files reads them relative to the model file.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Override the file's epochs for the fit.
        #[arg(long)]
        epochs: Option<usize>,
        /// Steps timed per batch size (the median is reported).
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's layers with their output shapes and parameter counts, and the totals
    /// (as Keras' model.summary() does; train prints it first).
    Summary {
        /// The model file.
        file: PathBuf,
        /// Print one JSON object: {"model", "layers": [{"name", "type", "output_shape", "params"}], "total", "trainable", "non_trainable"}.
        #[arg(long)]
        json: bool,
    },
    /// Print a model's forward equations and the backward equations reverse mode derived.
    Show {
        /// The model file.
        file: PathBuf,
        /// Print the training graph as Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
    },
    /// Classify the images of an IDX file with a trained model.
    Predict {
        /// The model file.
        file: PathBuf,
        /// The trained weights.
        #[arg(long, value_name = "FILE", required = true)]
        weights: PathBuf,
        /// What to classify: a picture of a digit (PNG or JPEG: made grayscale, inverted when
        /// the background is light, fitted into 28×28 and centred by mass, as MNIST's are),
        /// IDX images (raw or gzip), or a CSV file of feature rows with a header.
        images: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage data sets.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// Download and verify a data set (`mnist`) into the cache, or into --dir.
    Fetch {
        /// The data set.
        name: String,
        /// Where to put it (default: the per-user cache).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Lang {
    C,
    Rust,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Latex,
}

/// Standard output, the one way results leave the program: a locked handle whose write
/// errors are returned, never panicked on.
pub struct Out(std::io::StdoutLock<'static>);

/// Standard output could not be written. (Deliberately not `Display`: it has its own path to
/// the user, [`OutputError::exit`], and converts into `model::Failure` as itself.)
#[derive(Debug)]
pub struct OutputError(std::io::Error);

impl OutputError {
    /// The reader went away (EPIPE): not an error, the command just ends.
    pub fn is_closed(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }

    /// The message of a write error that is not a closed pipe.
    pub fn message(&self) -> String {
        format!("writing to stdout: {}", self.0)
    }

    /// Ends the program: quietly with 0 for a closed pipe, otherwise with the error and 1.
    pub fn exit(&self) -> ExitCode {
        if self.is_closed() {
            ExitCode::SUCCESS
        } else {
            note!("error: {}", self.message());
            ExitCode::FAILURE
        }
    }
}

impl Out {
    pub fn new() -> Out {
        Out(std::io::stdout().lock())
    }

    /// Writes `text` and a newline (stdout is line-buffered, so the line leaves at once).
    pub fn line(&mut self, text: &str) -> Result<(), OutputError> {
        self.0.write_all(text.as_bytes()).and_then(|()| self.0.write_all(b"\n")).map_err(OutputError)
    }

    /// Writes `text` as it is.
    pub fn text(&mut self, text: &str) -> Result<(), OutputError> {
        self.0.write_all(text.as_bytes()).map_err(OutputError)
    }

    /// Flushes what is buffered (a full disk may only show here).
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.0.flush().map_err(OutputError)
    }
}

/// Writes an already rendered message (it ends with its own newline) to stderr, dropping a
/// failed write like [`note!`].
pub fn to_stderr(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Parses the command line. Help and `--version` go through `out` like every other result
/// when stdout is not a terminal (clap would drop a write error and exit 0).
fn parse_args(out: &mut Out) -> Result<Cli, ExitCode> {
    use std::io::IsTerminal as _;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if e.use_stderr() || std::io::stdout().is_terminal() => e.exit(),
        Err(e) => {
            let code = ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1));
            match out.text(&e.render().to_string()).and_then(|()| out.flush()) {
                Ok(()) => Err(code),
                Err(w) => Err(w.exit()),
            }
        }
    }
}

pub fn main() -> ExitCode {
    let mut out = Out::new();
    let mut cli = match parse_args(&mut out) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(
        Command::Diff { expr, .. }
        | Command::Grad { expr, .. }
        | Command::Hessian { expr, .. }
        | Command::Eval { expr, .. }
        | Command::Export { expr, .. },
    ) = &mut cli.command
        && expr == "-"
    {
        match read_stdin() {
            Ok(text) => *expr = text,
            Err(e) => {
                note!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let formula = |r: Result<String, Error>| r.map_err(|e| model::Failure::Message(render(&e)));
    let result = match cli.command {
        None | Some(Command::Repl) => return repl::run(&mut out),
        Some(Command::Diff { expr, wrt, point, format, json }) => {
            formula(diff(&expr, &wrt, &point.at, &point.lets.lets, format, json))
        }
        Some(Command::Grad { expr, point, json, interp, timings }) => {
            formula(grad(&expr, &point.at, &point.lets.lets, json, interp, timings))
        }
        Some(Command::Hessian { expr, point, wrt, sparse, json }) => {
            formula(matrix::hessian(&expr, &wrt, &point.at, &point.lets.lets, sparse, json))
        }
        Some(Command::Jacobian { exprs, point, wrt, sparse, json }) => {
            formula(matrix::jacobian(&exprs, &wrt, &point.at, &point.lets.lets, sparse, json))
        }
        Some(Command::Export { expr, lang, name, lets }) => formula(export(&expr, lang, &name, &lets.lets)),
        Some(Command::Eval { expr, weights: Some(w), data, json, .. }) => {
            model::evaluate(Path::new(&expr), &w, data.as_deref(), json)
        }
        Some(Command::Eval { expr, point, json, .. }) => eval(&expr, &point.at, &point.lets.lets, json)
            .map_err(|e| model::Failure::Message(render_eval_error(e, &expr))),
        Some(Command::Train(args)) => {
            return finish(model::train(args, &mut out).and_then(|()| Ok(out.flush()?)));
        }
        Some(Command::Predict { file, weights, images, json }) => {
            model::predict(&file, &weights, &images, json)
        }
        Some(Command::Summary { file, json }) => model::summary(&file, json),
        Some(Command::Show { file, dot }) => model::show(&file, dot),
        Some(Command::Bench { file, data, epochs, steps, json }) => {
            model::bench(&file, data.as_deref(), epochs, steps, json)
        }
        Some(Command::Data { action: DataAction::Fetch { name, dir } }) => {
            model::fetch(&name, dir.as_deref())
        }
    };
    finish(result.and_then(|text| {
        out.line(&text)?;
        Ok(out.flush()?)
    }))
}

/// The exit code of a command, after its failure (if any) is on stderr.
fn finish(r: Result<(), model::Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(model::Failure::Message(message)) => {
            to_stderr(&message);
            ExitCode::FAILURE
        }
        Err(model::Failure::Output(e)) => e.exit(),
    }
}

/// The formula from standard input (for formulas too long for a command line).
fn read_stdin() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("cannot read standard input: {e}"))?;
    String::from_utf8(bytes)
        .map(|s| s.trim_end().to_owned())
        .map_err(|e| format!("standard input is not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()))
}

/// An error as the user sees it: parse errors with the source line and a caret.
fn render(e: &Error) -> String {
    match e {
        Error::Parse(d) => d.render(),
        other => format!("error: {other}\n"),
    }
}

/// A failed `eval` of a formula; when the "formula" is a model file's path (it ends in
/// `.model` or names an existing file), the error says that `--weights` is what was missing.
fn render_eval_error(e: Error, src: &str) -> String {
    let path = Path::new(src.trim());
    let is_model = path.extension().is_some_and(|x| x == "model");
    if !is_model && !path.is_file() {
        return render(&e);
    }
    let shown = path.display();
    let what = if is_model { "is a model file" } else { "names a file" };
    let hint = format!(
        "`{shown}` {what}, not a formula; to evaluate a trained model, give its weights: \
         `symdiff eval {shown} --weights W.safetensors`"
    );
    match e {
        Error::Parse(d) => d.with_help(hint).render(),
        other => format!("{}  = help: {hint}\n", render(&other)),
    }
}

/// Numbers in JSON: integers without a fraction, everything else with full precision.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
        json!(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The point of `--at` (repeatable, joined by commas). `--at @FILE` reads it from a file,
/// for vectors longer than a command line may be (`x = [...]` over lines); errors then point
/// into the file.
fn point(at: &[String]) -> Result<Option<Point>, Error> {
    if at.is_empty() {
        return Ok(None);
    }
    let (text, origin) = match at {
        [one] if one.starts_with('@') => {
            let path = &one[1..];
            (input::read_point_file(path)?, path.to_owned())
        }
        _ if at.iter().any(|a| a.starts_with('@')) => {
            return Err(Error::Invalid(
                "--at @FILE gives the whole point; give no other --at with it".into(),
            ));
        }
        _ => (at.join(","), "--at".to_owned()),
    };
    Point::parse(&text).map(|p| Some(p.with_origin(origin.clone()))).map_err(|e| match e {
        Error::Parse(d) => Error::Parse(d.with_origin(origin)),
        other => other,
    })
}

fn value_at(e: &Expr, p: &Point) -> Result<f64, Error> {
    e.eval(&p.values())
}

fn diff(
    src: &str,
    wrt: &[String],
    at: &[String],
    lets: &[String],
    format: Format,
    json_out: bool,
) -> Result<String, Error> {
    let f = input::parse(src, &input::lets(lets)?)?;
    let mut vars = f.written_variables();
    vars.sort_by(|a, b| symdiff::variable_order(a, b));
    let wrt: Vec<String> = if wrt.is_empty() { vars.clone() } else { input::wrt(wrt, &vars)? };
    let p = point(at)?;
    if vars.is_empty() {
        // A constant's derivative is 0 only where the constant has a value (`0/0` has none).
        f.eval(&[])?;
    }
    if p.is_none() && !json_out && wrt.len() > 1 {
        // Partials that share much (a product's) print once over named shared parts,
        // decided before the textbook forms are built (those are n² factors for a product).
        let names: Vec<&str> = wrt.iter().map(String::as_str).collect();
        if let Some((texts, block)) = f.shared_partials(&names, format == Format::Latex)? {
            let mut lines: Vec<String> =
                wrt.iter().zip(texts).map(|(v, t)| format!("d/d{v} = {t}")).collect();
            lines.push(block);
            return Ok(lines.join("\n"));
        }
    }
    let derivs = wrt
        .iter()
        .map(|v| Ok((v.clone(), f.try_diff(v)?)))
        .collect::<Result<Vec<(String, Expr)>, Error>>()?;
    let show = |e: &Expr| {
        if format == Format::Latex { e.to_latex() } else { e.to_string() }
    };
    let mut values = Vec::new();
    if let Some(p) = &p {
        p.check_names(&vars)?;
        for (_, d) in &derivs {
            p.check_complete(&d.variables())?;
            values.push(value_at(d, p)?);
        }
    }
    if json_out {
        let mut out = Map::new();
        let names: Vec<String> = derivs.iter().map(|(v, _)| v.clone()).collect();
        let d = derivs.iter().map(|(_, e)| Value::String(show(e))).collect();
        out.insert("derivatives".into(), Value::Object(input::grouped(&names, d, &json!("0"))));
        if p.is_some() {
            let v = values.iter().map(|x| number(*x)).collect();
            out.insert("values".into(), Value::Object(input::grouped(&names, v, &number(0.0))));
        }
        return Ok(Value::Object(out).to_string());
    }
    let lines: Vec<String> = derivs
        .iter()
        .enumerate()
        .map(|(i, (v, e))| {
            let body = match values.get(i) {
                Some(x) => symdiff_value(*x),
                None => show(e),
            };
            if derivs.len() == 1 { body } else { format!("d/d{v} = {body}") }
        })
        .collect();
    Ok(if lines.is_empty() { "0".to_owned() } else { lines.join("\n") })
}

fn symdiff_value(x: f64) -> String {
    match number(x) {
        Value::Number(n) => n.to_string(),
        _ => x.to_string(),
    }
}

fn grad(
    src: &str,
    at: &[String],
    lets: &[String],
    json_out: bool,
    interp: bool,
    timings: bool,
) -> Result<String, Error> {
    let lets = input::lets(lets)?;
    let start = Instant::now();
    let f = input::parse(src, &lets)?;
    let parse_time = start.elapsed();
    // Every variable written, sorted: one cancelled by simplification has the partial 0, as
    // has an element a list in --at gives and the formula does not use.
    let vars = f.written_variables();
    let p = point(at)?.unwrap_or_default();
    p.check_names(&vars)?;
    let vars = input::with_listed(vars, &p);
    p.check_complete(&vars)?;
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let x: Vec<f64> = names.iter().map(|v| p.get(v).unwrap_or(f64::NAN)).collect();
    let mut grad = vec![0.0; names.len()];
    let value;
    let mut report = vec![("parse", parse_time)];
    let mut structure = None;
    // The compiled program's operations: (all, the function's alone).
    let mut ops = None;
    if interp {
        let t = Instant::now();
        let grads = f.try_gradient(&names)?;
        report.push(("gradient graph", t.elapsed()));
        let t = Instant::now();
        value = value_at(&f, &p)?;
        // One pass over the shared graph, not one walk per partial.
        grad = Expr::eval_all(&grads, &p.values())?;
        report.push(("evaluate (interpreter)", t.elapsed()));
    } else {
        let compiled = symdiff::compile_gradient(&f, &names)?;
        report.push(("gradient graph", compiled.build_time()));
        report.push(("compile", compiled.compile_time()));
        structure = Some(compiled.stats().structure());
        ops = Some(compiled.stats().clone());
        let t = Instant::now();
        value = compiled.eval(&x, &mut grad);
        report.push(("evaluate (native)", t.elapsed()));
        if timings {
            // A steadier per-call figure than one cold call.
            let reps = 1000;
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(compiled.eval(std::hint::black_box(&x), &mut grad));
            }
            report.push(("evaluate (native, per call, warm)", t.elapsed() / reps));
        }
        if !value.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            // Compiled code does not check domains; the interpreter says what went wrong.
            value_at(&f, &p)?;
            Expr::eval_all(&f.try_gradient(&names)?, &p.values())?;
        }
    }
    if timings {
        for (what, d) in &report {
            note!("{what:>34}: {d:?}");
        }
        if let Some(s) = structure {
            note!("{:>34}: {s}", "structure");
        }
        if let Some(s) = ops {
            note!(
                "{:>34}: {} ({} for the function alone: {:.2}x)",
                "operations (value and gradient)",
                s.ops,
                s.value_ops,
                s.gradient_ratio()
            );
            note!(
                "{:>34}: {} nodes, {} chunks, {} values through scratch, {} allocator, {} bytes of code",
                "compiled as",
                s.nodes,
                s.chunks,
                s.spilled,
                s.allocator,
                s.code_bytes
            );
        }
    }
    if json_out {
        let g = input::grouped(&vars, grad.iter().map(|x| number(*x)).collect(), &number(0.0));
        return Ok(json!({"value": number(value), "grad": Value::Object(g)}).to_string());
    }
    let mut lines = vec![format!("value = {}", symdiff_value(value))];
    lines.extend(vars.iter().zip(&grad).map(|(n, x)| format!("d/d{n} = {}", symdiff_value(*x))));
    Ok(lines.join("\n"))
}

fn export(src: &str, lang: Lang, name: &str, lets: &[String]) -> Result<String, Error> {
    let f = input::parse(src, &input::lets(lets)?)?;
    let vars = f.variables();
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    match lang {
        Lang::C => symdiff::export_c(&f, &names, name),
        Lang::Rust => symdiff::export_rust(&f, &names, name),
    }
}

fn eval(src: &str, at: &[String], lets: &[String], json_out: bool) -> Result<String, Error> {
    let f = input::parse(src, &input::lets(lets)?)?;
    let vars = f.variables();
    let p = point(at)?.unwrap_or_default();
    p.check_names(&vars)?;
    p.check_complete(&vars)?;
    let value = value_at(&f, &p)?;
    Ok(if json_out { json!({"value": number(value)}).to_string() } else { symdiff_value(value) })
}
