//! Sparse Jacobians and Hessians against three oracles: the interpreter's dense derivatives
//! (every entry outside the pattern must be exactly zero, every entry inside equal within
//! the rounding guarantee of a reordered sum), central finite differences of the compiled
//! gradient, and the dense compiled Hessian. Straight-line and loop-assembled Hessians both,
//! including members whose two slots read one variable, and property-generated formulas.

#![allow(clippy::needless_range_loop)] // entry k indexes the pattern and the values together

use proptest::prelude::*;
use symdiff::{
    Expr, Triangle, compile_gradient, compile_hessian, compile_sparse_hessian, compile_sparse_jacobian,
};

/// A point with distinct, moderate coordinates.
fn point(n: usize) -> Vec<f64> {
    (0..n).map(|i| 0.3 + 0.9 * ((i as f64 * 0.618).fract()) - 0.1 * (i % 3) as f64).collect()
}

fn names(f: &Expr) -> Vec<String> {
    f.variables()
}

/// The sparse Hessian of `src` (lower and full) against the interpreter, finite differences
/// and the dense compiled Hessian; `nnz` is the lower triangle's entry count, `looped`
/// whether loops assemble it.
fn check(src: &str, nnz: usize, looped: bool) {
    let f = Expr::parse(src).unwrap();
    let names = names(&f);
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = vars.len();
    let x = point(n);
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let exact: Vec<f64> = Expr::eval_all(&f.hessian(&vars).concat(), &bound).unwrap();
    let scale = exact.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    // Finite differences of the compiled gradient, column by column.
    let g = compile_gradient(&f, &vars).unwrap();
    let fd = |i: usize, j: usize| {
        let h = 1e-6 * (1.0 + x[j].abs());
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[j] += h;
        xm[j] -= h;
        let (mut gp, mut gm) = (vec![0.0; n], vec![0.0; n]);
        g.eval(&xp, &mut gp);
        g.eval(&xm, &mut gm);
        (gp[i] - gm[i]) / (2.0 * h)
    };
    let mut dense = vec![0.0; n * n];
    compile_hessian(&f, &vars).unwrap().eval(&x, &mut dense).unwrap();
    let mut diagonal = 0;
    for triangle in [Triangle::Lower, Triangle::Full] {
        let h = compile_sparse_hessian(&f, &vars, triangle).unwrap();
        assert_eq!(!h.stats().classes.is_empty(), looped, "{src}: loops ({triangle:?})");
        let p = h.pattern();
        if triangle == Triangle::Lower {
            assert_eq!(p.nnz(), nnz, "{src}: entries");
            diagonal = p.rows().iter().zip(p.cols()).filter(|(r, c)| r == c).count();
        } else {
            assert_eq!(p.nnz(), 2 * nnz - diagonal, "{src}: entries in full");
        }
        let mut values = vec![f64::NAN; p.nnz()];
        h.eval(&x, &mut values).unwrap();
        let mut seen = vec![false; n * n];
        for k in 0..p.nnz() {
            let (i, j) = (p.rows()[k] as usize, p.cols()[k] as usize);
            assert!(triangle == Triangle::Full || j <= i, "{src}: ({i},{j}) above the diagonal");
            seen[i * n + j] = true;
            let v = values[k];
            assert!(
                (v - exact[i * n + j]).abs() <= 1e-11 * scale,
                "{src}: H[{i}][{j}] {v} vs {}",
                exact[i * n + j]
            );
            assert!(
                (v - dense[i * n + j]).abs() <= 1e-11 * scale,
                "{src}: H[{i}][{j}] {v} vs dense {}",
                dense[i * n + j]
            );
            let d = fd(i, j);
            assert!(
                (v - d).abs() <= 1e-5 * (scale + d.abs()),
                "{src}: H[{i}][{j}] {v} vs finite differences {d}"
            );
        }
        for i in 0..n {
            for j in 0..n {
                let stored = seen[i * n + j] || (triangle == Triangle::Lower && j > i && seen[j * n + i]);
                assert!(
                    stored || exact[i * n + j] == 0.0,
                    "{src}: H[{i}][{j}] = {} is not in the pattern",
                    exact[i * n + j]
                );
            }
        }
    }
}

fn sum(n: usize, term: impl Fn(usize) -> String) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(" + ")
}

#[test]
fn hessians() {
    // Straight-line: small functions, an entry that vanishes at points but not structurally.
    check("x^2*y + z^2", 3, false);
    check("x*y*(x - 1)", 2, false);
    check("exp(x*y*z)", 6, false);
    check("sign(x)*y + y", 0, false);
    check(&format!("log({})", sum(20, |i| format!("exp(x{i:02})"))), 210, false);
    // Loops: banded sums, a fit with a shared operand, a pair potential.
    let rosen = |n: usize| sum(n - 1, |i| format!("100*(x{:03} - x{i:03}^2)^2 + (1 - x{i:03})^2", i + 1));
    check(&rosen(200), 2 * 200 - 1, true);
    check(&(rosen(60) + " + sin(x000*x059)"), 2 * 60 - 1 + 1, true);
    check(&sum(40, |i| format!("x{:02}*x{:02}*x{:02}", i, (i + 1) % 40, (i + 2) % 40)), 40 + 40, true);
    // Members 0 and 20 read one variable in both factors: not like the other 38, so they
    // stay straight-line, and their diagonal entries meet the loop's.
    check(&sum(40, |i| format!("sin(x{:02})*cos(x{:02})", i, (i * 7) % 40)), 40 + 35, true);
}

/// Sparse Jacobians against the interpreter's dense one.
fn check_jacobian(srcs: &[&str], nnz: usize) {
    let first = Expr::parse(srcs[0]).unwrap();
    let fs: Vec<Expr> = srcs.iter().map(|s| first.parse_with(s).unwrap()).collect();
    let mut names: Vec<String> = fs.iter().flat_map(|f| f.variables()).collect();
    names.sort();
    names.dedup();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let x = point(vars.len());
    let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
    let j = compile_sparse_jacobian(&fs, &vars).unwrap();
    let p = j.pattern();
    assert_eq!((p.nrows(), p.ncols(), p.nnz()), (fs.len(), vars.len(), nnz), "{srcs:?}");
    let mut values = vec![0.0; p.nnz()];
    j.eval(&x, &mut values).unwrap();
    let mut seen = vec![false; fs.len() * vars.len()];
    for k in 0..p.nnz() {
        let (r, c) = (p.rows()[k] as usize, p.cols()[k] as usize);
        seen[r * vars.len() + c] = true;
        let exact = fs[r].diff(vars[c]).eval(&bound).unwrap();
        assert!((values[k] - exact).abs() <= 1e-12 * (1.0 + exact.abs()), "{srcs:?}: J[{r}][{c}]");
    }
    for (r, f) in fs.iter().enumerate() {
        for (c, v) in vars.iter().enumerate() {
            assert!(
                seen[r * vars.len() + c] || f.diff(v).eval(&bound).unwrap() == 0.0,
                "{srcs:?}: J[{r}][{c}] missing"
            );
        }
    }
}

#[test]
fn jacobians() {
    check_jacobian(&["x*y", "y + z"], 4);
    check_jacobian(&["x + y - y", "3 + z - z", "sin(x)*cos(y)"], 3);
    let banded: Vec<String> = (0..300)
        .map(|i| format!("(3 - 2*x{i:03})*x{i:03} - x{:03} - 2*x{:03} + 1", i.max(1) - 1, (i + 1).min(299)))
        .collect();
    let refs: Vec<&str> = banded.iter().map(String::as_str).collect();
    check_jacobian(&refs, 3 * 300 - 2);
    // Like entries in a loop, numbers from the template and a few irregular ones
    // straight-line, all in one call.
    let mut more = refs.clone();
    more.push("sin(x000)*x001 + x299");
    check_jacobian(&more, 3 * 300 - 2 + 3);
}

/// Dense matrices that would not fit are refused before anything is allocated, pointing
/// at the sparse form; wrong lengths are errors.
#[test]
fn refusals() {
    let names: Vec<String> = (0..100_000).map(|i| format!("x{i}")).collect();
    let vars: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Expr::parse("x0*x1").unwrap();
    let e = compile_hessian(&f, &vars).err().expect("refused").to_string();
    assert!(e.contains("compile_sparse_hessian") && e.contains("100000 x 100000"), "{e}");
    let e = symdiff::compile_jacobian(std::slice::from_ref(&f), &vars).err();
    assert!(e.is_none(), "a 1 x 100000 Jacobian fits");
    let h = compile_sparse_hessian(&f, &vars, Triangle::Lower).unwrap();
    assert_eq!(h.pattern().nnz(), 1);
    let mut v = [7.0; 2];
    assert!(h.eval(&[1.0, 2.0], &mut v).is_err());
    assert_eq!(v, [7.0; 2], "nothing written on wrong lengths");
}

fn formula() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        Just("z".to_owned()),
        Just("w".to_owned()),
        (1u32..6).prop_map(|n| n.to_string()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
            (inner.clone(), -2i32..4).prop_map(|(a, n)| format!("({a})^{n}")),
            inner.clone().prop_map(|a| format!("sin({a})")),
            inner.clone().prop_map(|a| format!("exp({a}/4)")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Generated formulas (entries that cancel numerically included): the lower pattern
    /// holds every entry the interpreter's dense Hessian does not prove zero at the point.
    #[test]
    fn generated(src in formula()) {
        let f = Expr::parse(&src).unwrap();
        let names = names(&f);
        let vars: Vec<&str> = names.iter().map(String::as_str).collect();
        let n = vars.len();
        let x = point(n);
        let bound: Vec<(&str, f64)> = vars.iter().copied().zip(x.iter().copied()).collect();
        let Ok(exact) = Expr::eval_all(&f.hessian(&vars).concat(), &bound) else { return Ok(()) };
        let scale = exact.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let h = compile_sparse_hessian(&f, &vars, Triangle::Lower).unwrap();
        let p = h.pattern();
        let mut values = vec![0.0; p.nnz()];
        h.eval(&x, &mut values).unwrap();
        let mut seen = vec![false; n * n];
        for k in 0..p.nnz() {
            let (i, j) = (p.rows()[k] as usize, p.cols()[k] as usize);
            prop_assert!(j <= i);
            seen[i * n + j] = true;
            prop_assert!((values[k] - exact[i * n + j]).abs() <= 1e-9 * scale, "{}: H[{}][{}]", src, i, j);
        }
        for i in 0..n {
            for j in 0..=i {
                prop_assert!(seen[i * n + j] || exact[i * n + j] == 0.0, "{}: H[{}][{}] missing", src, i, j);
            }
        }
    }
}
