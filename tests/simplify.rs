//! The simplifier's rule table is executable documentation: every row's `before` must print
//! as its `after`, and no rule may make an expression bigger (rule 1 of the rules for rules).

use symdiff::{Expr, RULES};

fn check(name: &str, before: &str, after: &str) {
    let e = Expr::parse(before).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(e.to_string(), after, "rule {name}: `{before}`");
    let written = Expr::parse(after).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert!(e.node_count() <= written.node_count() + 1, "rule {name} grew `{before}`");
}

#[test]
fn every_rule_holds() {
    assert!(RULES.len() >= 25);
    for r in RULES {
        check(r.name, r.before, r.after);
    }
}

#[test]
fn hash_consing_makes_equal_subexpressions_one_node() {
    // sin(x*y) appears three times but is stored once; so do x*y and the two variables.
    let e = Expr::parse("sin(x*y) + sin(y*x)^2 + exp(sin(x*y))").unwrap();
    assert_eq!(e.node_count(), Expr::parse("a + a^2 + exp(a)").unwrap().node_count() + 3);
}

#[test]
fn constant_folding_never_creates_infinities() {
    for (src, shown) in [("1/0", "1/0"), ("0^-1", "1/0"), ("10^400", "10^400"), ("1e308*10", "1e308*10")] {
        let e = Expr::parse(src).unwrap();
        assert_eq!(e.to_string(), shown, "{src}");
        assert!(e.eval(&[]).is_err(), "{src} must not evaluate silently");
    }
}

/// Rule 5: a constant subexpression without a value keeps the whole expression an error,
/// whatever identity would apply around it; the error names the undefined part.
#[rustfmt::skip]
const UNDEFINED: &[(&str, &str)] = &[
    ("0/0",                      "division by zero in `1/0`"),
    ("(1/0) - (1/0)",            "division by zero in `1/0`"),
    ("log(-1)/log(-1)",          "domain error in `log(-1)`"),
    ("0*log(-1)",                "domain error in `log(-1)`"),
    ("exp(1000) - exp(1000)",    "overflow: `exp(1000)`"),
    ("exp(log(-1))",             "domain error in `log(-1)`"),
    ("log(exp(1000))",           "overflow: `exp(1000)`"),
    ("sqrt(-1)^2",               "square root of a negative number"),
    ("(0/0)^0",                  "division by zero in `1/0`"),
    ("1^log(-1)",                "domain error in `log(-1)`"),
    ("asin(2)*0",                "asin(x) is defined for -1 <= x <= 1"),
    ("1e300*1e300*0",            "`1e300*1e300*0` is not a number"),
    ("(0/1)*(1e300*(0 + 1e300))", "overflow: `1e300*1e300`"),
    ("0*(1e300*1e300) + x",      "overflow: `1e300*1e300`"),
    ("(1e308 + 1e308) - (0 + 1e308 + 1e308)", "overflow"),
    ("1e308 + 1e308 - 1e308",    "overflow"),
    ("(x - x)/(x - x)",          "division by zero in `1/0`"),
    ("x + log(-1) - log(-1)",    "domain error in `log(-1)`"),
    ("x/x*log(0)",               "log(x) is defined for x > 0, here x = 0"),
    ("sin(x)^0*(1/0)^0",         "division by zero in `1/0`"),
    ("diff(x + log(-1), x)",     "domain error in `log(-1)`"),
    ("diff(x*sqrt(-3), x, 2)",   "square root of a negative number"),
    ("cos(2)^exp(log(3))",       "a power with a variable exponent needs a positive base"),
];

/// Domain extensions of expressions that do have values, and ordinary constant folding,
/// are unchanged.
#[rustfmt::skip]
const DEFINED: &[(&str, &str, f64)] = &[
    ("x/x",             "1",    1.0),
    ("x - x",           "0",    0.0),
    ("0*x",             "0",    0.0),
    ("x^0",             "1",    1.0),
    ("log(exp(x))",     "x",    0.5),
    ("exp(log(x))",     "x",    0.5),
    ("sin(1)*0",        "0",    0.0),
    ("exp(-1000)",      "0",    0.0),
    ("2^10 + 1/2 + 1/2", "1025", 1025.0),
    ("0^0",             "1",    1.0),
    ("1e300*4/4",       "1e300", 1e300),
    ("log(exp(2))",     "2",    2.0),
    ("exp(log(3))",     "exp(log(3))", 3.0000000000000004),
    ("log(e)",          "1",    1.0),
];

#[test]
fn undefined_constants_stay_errors() {
    for (src, msg) in UNDEFINED {
        let e = Expr::parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
        let err = e.eval(&[("x", 0.5)]).expect_err(&format!("{src} = {e} must not have a value"));
        assert!(err.to_string().contains(msg), "{src}: `{err}` lacks `{msg}`");
        // What it prints reads back as undefined too.
        let back = Expr::parse(&e.to_string()).unwrap_or_else(|err| panic!("{e}: {err}"));
        assert!(back.eval(&[("x", 0.5)]).is_err(), "{src} prints as {e}, which has a value");
    }
    for (src, shown, value) in DEFINED {
        let e = Expr::parse(src).unwrap();
        assert_eq!(e.to_string(), *shown, "{src}");
        assert_eq!(e.eval(&[("x", 0.5)]).unwrap(), *value, "{src}");
    }
}
