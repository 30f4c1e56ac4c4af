//! Every category of malformed input: the message, its line and column, and the rendered
//! report with its caret (one snapshot). Nothing here may panic.

use symdiff::{Error, Expr, Session};

/// Parses `input` as a formula; it must fail at `line:col` with a message containing `msg`.
/// Returns the rendered report for the snapshot.
fn check(input: &str, line: usize, col: usize, msg: &str) -> String {
    let err = Expr::parse(input).expect_err(input);
    let Error::Parse(d) = &err else { panic!("{input}: not a parse error: {err}") };
    assert_eq!(d.line_col(), (line, col), "{input}: {d}");
    assert!(d.message.contains(msg), "{input}: `{}` lacks `{msg}`", d.message);
    format!("### {input:?}\n{}\n", d.render())
}

#[rustfmt::skip]
const CASES: &[(&str, usize, usize, &str)] = &[
    ("(x + 1",          1, 7,  "unexpected end of input"),
    ("x + 1)",          1, 6,  "unexpected `)`"),
    ("((x)",            1, 5,  "expected `)`"),
    ("sin(x",           1, 6,  "expected"),
    ("2**",             1, 4,  "unexpected end of input"),
    ("x^^2",            1, 3,  "unexpected `^`"),
    ("x**^2",           1, 4,  "unexpected `^`"),
    ("",                1, 1,  "empty input"),
    ("   ",             1, 4,  "empty input"),
    ("# only a comment", 1, 17, "empty input"),
    ("x +",             1, 4,  "unexpected end of input"),
    ("* x",             1, 1,  "unexpected `*`"),
    ("2x",              1, 2,  "unexpected name `x`"),
    ("x y",             1, 3,  "unexpected name `y`"),
    ("sinn(x)",         1, 1,  "unknown function `sinn`"),
    ("foo(x)",          1, 1,  "unknown function `foo`"),
    ("sin(x, y)",       1, 1,  "`sin` takes 1 argument"),
    ("pow(x)",          1, 1,  "`pow` takes 2 arguments"),
    ("diff(x^2)",       1, 1,  "`diff` takes 2 or 3 arguments"),
    ("diff(x^2, 3)",    1, 11, "must be a variable name"),
    ("diff(x^2, x, -1)", 1, 14, "whole number"),
    ("diff(x^2, x, 0.5)", 1, 14, "whole number"),
    ("sin",             1, 1,  "is a function, not a value"),
    ("sin + 1",         1, 1,  "is a function, not a value"),
    ("x + ¬y",          1, 5,  "unexpected character"),
    ("x × 2",           1, 3,  "unexpected character"),
    ("2 $ 3",           1, 3,  "unexpected character `$`"),
    ("x\u{0}",          1, 2,  "unexpected character"),
    ("1e999 * x",       1, 1,  "too large for f64"),
    ("x @ y",           1, 1,  "`@` needs an m×k and a k×n matrix; here scalar @ scalar"),
    ("[1, 2]",          1, 1,  "a tensor literal can only be given to a name"),
    ("sum(x, 2)",       1, 1,  "a scalar has no axes"),
    ("onehot(x, 0)",    1, 11, "the number of classes must be a whole number"),
    ("transpose(x)",    1, 1,  "transpose needs a matrix"),
    ("f(,)",            1, 3,  "unexpected `,`"),
    ("x +\n  (y * ",    2, 7,  "unexpected end of input"),
    ("x = 3",           1, 3,  "unexpected `=`"),
    ("1..2",            1, 2,  "unexpected `..`"),
    ("été + (",         1, 8,  "unexpected end of input"),
    ("α²",              1, 2,  "unexpected character"),
    ("sni(x)",          1, 1,  "unknown function `sni`"),
    ("sin x",           1, 5,  "unexpected name `x`"),
    ("exp 2",           1, 5,  "unexpected number `2`"),
    ("dense_1.kernel^2", 1, 8, "unexpected character `.`"),
];

#[test]
fn malformed_formulas() {
    let report: String = CASES.iter().map(|&(i, l, c, m)| check(i, l, c, m)).collect();
    insta::assert_snapshot!(report);
}

/// REPL lines: the error, and the session keeps working afterwards.
fn check_line(line: &str, msg: &str) {
    let mut s = Session::new();
    s.run("f(x, y) = x*y").unwrap();
    let err = s.run(line).expect_err(line);
    assert!(err.to_string().contains(msg), "{line}: `{err}` lacks `{msg}`");
    assert_eq!(s.run("d/dx x^3 + 2*x^2 + 1 at x = 4").unwrap(), "64");
    assert_eq!(s.run("f(2, 3)").unwrap(), "6");
}

#[rustfmt::skip]
#[test]
fn malformed_repl_lines() {
    check_line("d/dx",                      "unexpected end of input");
    check_line("d/dx x^2 at",               "unexpected end of input");
    check_line("d/dx x^2 at y = 1",         "`y` does not occur");
    check_line("d/dx x^2 at x = 1, x = 2",  "given a value twice");
    check_line("x^2 at x = y",              "`y` has no value");
    check_line("d^2/dx^3 x",                "malformed derivative operator");
    check_line("d^99/dx^99 x",              "order above 64");
    check_line("grad f wrt z",              "`z` does not occur");
    check_line("grad x*y wrt x, x",         "listed twice");
    check_line("sin(x) = 3",                "built-in function");
    check_line("pi = 3",                    "constant");
    check_line("g(x, x) = x",               "appears twice");
    check_line("g(2) = 3",                  "plain names");
    check_line("g(e) = 3",                  "is a constant");
    check_line("x + 1 = 3",                 "left side of `=`");
    check_line("a = a + 1",                 "in terms of itself");
    check_line("f(1)",                      "`f` takes 2 arguments");
    check_line("f + 1",                     "is a function, not a value");
    check_line("log(-1)",                   "domain error");
    check_line("sqrt(x) at x = -4",         "square root of a negative number");
    check_line("1/x at x = 0",              "division by zero");
    check_line("exp(x) at x = 1000",        "overflow");
    check_line("asin(x) at x = 2",          "defined for -1 <= x <= 1");
    check_line("log(x) at x = 0",           "defined for x > 0");
    check_line(":frobnicate",               "unknown command");
    check_line("sni(x)",                    "did you mean `sin`?");
    check_line("f 2",                       "function arguments go in parentheses: `f(2)`");
    check_line("x + y at x = 1 y = 2",      "separate bindings with commas: `x + y at x = 1, y = 2`");
}

/// The help a malformed input gets, by the route it takes.
#[rustfmt::skip]
#[test]
fn hints() {
    let help = |e: Error| match e {
        Error::Parse(d) => d.help.unwrap_or_default(),
        other => panic!("not a parse error: {other}"),
    };
    for (src, want) in [
        ("sni(x)",           "did you mean `sin`?"),
        ("cso(x) + 1",       "did you mean `cos`?"),
        ("sin x",            "function arguments go in parentheses: `sin(x)`"),
        ("2*tanh y + 1",     "function arguments go in parentheses: `tanh(y)`"),
        ("x y",              "write products with `*`, as in `2*x`"),
        ("dense_1.kernel",   "names in formulas have no `.`: the parameter `dense_1.kernel` is written `dense_1_kernel`"),
    ] {
        assert_eq!(help(Expr::parse(src).unwrap_err()), want, "{src}");
    }
    for (src, want) in [
        ("x=1 y=2",          "separate bindings with commas: `x=1,y=2`"),
        ("x = 1, y = 2 z=3", "separate bindings with commas: `x = 1, y = 2, z=3`"),
    ] {
        assert_eq!(help(symdiff::Point::parse(src).unwrap_err()), want, "{src}");
    }
}

#[test]
fn evaluation_errors_name_the_subexpression() {
    let f = Expr::parse("x + log(x - 2)").unwrap();
    let err = f.eval(&[("x", 1.0)]).unwrap_err();
    assert_eq!(err.to_string(), "domain error in `log(x - 2)`: log(x) is defined for x > 0, here x = -1");
    let err = f.eval(&[]).unwrap_err();
    assert_eq!(err.to_string(), "variable `x` has no value");
    let err = Expr::parse("1/(x - 1)").unwrap().eval(&[("x", 1.0)]).unwrap_err();
    assert_eq!(err.to_string(), "division by zero in `1/(x - 1)`: `x - 1` is 0");
    let err = Expr::parse("x").unwrap().eval(&[("x", f64::NAN)]).unwrap_err();
    assert_eq!(err.to_string(), "variable `x` is NaN");
}

#[test]
fn carets_stay_under_the_character_after_wide_text() {
    let err = Expr::parse("ααα + $").unwrap_err();
    let Error::Parse(d) = err else { panic!() };
    assert_eq!(
        d.render(),
        "error: unexpected character `$`\n --> formula:1:7\n  |\n1 | ααα + $\n  |       ^\n"
    );
}

/// A long line is shown as the part around the caret, cut with `…`, with the true column.
#[test]
fn long_lines_show_the_part_around_the_caret() {
    let src = format!("{}$ {}", "x + ".repeat(10_000), "+ x ".repeat(10_000));
    let Error::Parse(d) = Expr::parse(&src).unwrap_err() else { panic!() };
    let report = d.render();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[1], " --> formula:1:40001", "{report}");
    let shown = lines[3].strip_prefix("1 | ").unwrap();
    let caret = lines[4].strip_prefix("  | ").unwrap();
    assert!(shown.starts_with('…') && shown.ends_with('…') && shown.chars().count() <= 102, "{report}");
    let at = caret.find('^').unwrap();
    assert_eq!(shown.chars().nth(at), Some('$'), "the caret is under the `$`:\n{report}");
}

/// Text over its limit is refused before it is parsed, by every parser, at 1:1: lines and
/// points over `MAX_INPUT`, formulas over the limit given to `parse_limited` (the commands
/// give `MAX_INPUT`) or, through `Expr::parse`, over `MAX_FORMULA`.
#[test]
fn text_over_the_size_limit() {
    let big = "x+".repeat(symdiff::MAX_INPUT / 2 + 1);
    let point = format!("x={big}");
    let huge = "x".repeat(symdiff::MAX_FORMULA + 1);
    for (what, len, limit, err) in [
        (
            "the formula",
            big.len(),
            symdiff::MAX_INPUT,
            Expr::parse_limited(&big, symdiff::MAX_INPUT).unwrap_err(),
        ),
        ("the formula", huge.len(), symdiff::MAX_FORMULA, Expr::parse(&huge).unwrap_err()),
        ("the line", big.len(), symdiff::MAX_INPUT, Session::new().run(&big).unwrap_err()),
        ("the point", point.len(), symdiff::MAX_INPUT, symdiff::Point::parse(&point).unwrap_err()),
    ] {
        let Error::Parse(d) = &err else { panic!("{what}: {err}") };
        assert_eq!(d.line_col(), (1, 1), "{what}");
        assert!(d.message.starts_with(&format!("{what} is {len} bytes")), "{what}: {}", d.message);
        assert!(d.message.contains(&format!("the limit is {limit} bytes")), "{what}: {}", d.message);
        assert!(d.source.len() < 100, "{what}: the report does not copy the text");
    }
}

/// The library reads formulas longer than `MAX_INPUT` (a program holds them already; their
/// node budget grows with the text, see `src/expr.rs`), the commands do not.
#[test]
fn large_formulas_are_the_librarys() {
    let long = format!("x^2 #{}", "-".repeat(symdiff::MAX_INPUT));
    let f = Expr::parse(&long).expect("a formula over MAX_INPUT is read by Expr::parse");
    assert_eq!(f.diff("x").to_string(), "2*x");
    assert!(Expr::parse_limited(&long, symdiff::MAX_INPUT).is_err());
}
