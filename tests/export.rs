//! Exported C gradients, compiled with the system C compiler, agree with symdiff's compiled
//! code to 4 ulp, or to 4 ulp of 1 where the value is smaller: the same operations in the same
//! order, except that exported code calls libm's `exp`, `sin`, `cos` and `tanh` where compiled
//! code calls symdiff's own (each within about an ulp of the other), and where terms cancel
//! that difference is an absolute one; exported Rust and C compile (`rustc`, `cc`) also when the formula in
//! their header comment prints on many lines.

use std::process::Command;

use symdiff::{Expr, compile_gradient, export_c, export_rust};

mod common;
use common::{POINTS, TABLE};

fn ulps(a: f64, b: f64) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.signum() != b.signum() {
        return u64::MAX;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
}

#[test]
fn exported_c_matches_compiled_code() {
    let dir = std::env::temp_dir().join(format!("symdiff-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One C program: every golden formula as a function, evaluated at every point.
    let mut program = String::from("#include <stdio.h>\n");
    let mut main = String::from("int main(void) {\n  double g[2];\n");
    let mut expected = Vec::new();
    for (k, (src, _)) in TABLE.iter().enumerate() {
        let f = Expr::parse(src).unwrap();
        let vars = f.variables();
        let names: Vec<&str> = vars.iter().map(String::as_str).collect();
        let code = export_c(&f, &names, &format!("f{k}")).unwrap();
        // Helpers are repeated per function; rename them to keep the program valid.
        program +=
            &code.replace("sd_", &format!("sd{k}_")).replace("#include <math.h>", "#include <math.h>\n");
        let compiled = compile_gradient(&f, &names).unwrap();
        for &(x, y) in POINTS {
            let point: Vec<f64> = names.iter().map(|v| if *v == "x" { x } else { y }).collect();
            let mut grad = vec![0.0; names.len()];
            let v = compiled.eval(&point, &mut grad);
            let args = point.iter().map(|p| format!("{p:e}")).collect::<Vec<_>>().join(", ");
            let n = names.len().max(1);
            main += &format!(
                "  {{ double x[{n}] = {{{}}}; double v = f{k}(x, g); printf(\"%.17g\", v); for (int i = 0; i < {}; i++) printf(\" %.17g\", g[i]); printf(\"\\n\"); }}\n",
                if args.is_empty() { "0".to_owned() } else { args },
                names.len()
            );
            let mut line = vec![v];
            line.extend(grad);
            expected.push((src, line));
        }
    }
    main += "  return 0;\n}\n";
    program += &main;
    let c = dir.join("gradients.c");
    std::fs::write(&c, &program).unwrap();
    let exe = dir.join("gradients");
    let cc = Command::new("cc")
        .args(["-O1", "-std=c99", "-o"])
        .arg(&exe)
        .arg(&c)
        .arg("-lm")
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(cc.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len());
    for (line, (src, want)) in lines.iter().zip(&expected) {
        let got: Vec<f64> = line.split(' ').map(|t| t.parse().unwrap()).collect();
        assert_eq!(got.len(), want.len(), "{src}");
        for (a, b) in got.iter().zip(want) {
            let close = ulps(*a, *b) <= 4 || (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0);
            assert!(close, "{src}: exported C gives {a}, compiled code {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exported_rust_has_the_right_shape() {
    let f = Expr::parse("x^2*y + softplus(x)").unwrap();
    let code = export_rust(&f, &["x", "y"], "rosen").unwrap();
    assert!(code.contains("pub fn rosen(x: &[f64; 2], grad: &mut [f64; 2]) -> f64 {"), "{code}");
    assert!(code.contains("fn sd_softplus"), "{code}");
    assert!(export_c(&f, &["x", "y"], "not a name").is_err());
    assert!(export_c(&f, &["x"], "f").is_err(), "every variable must be listed");
}

/// A formula whose printed form has a `where` block (its tree is far larger than its DAG):
/// the header comment holds every line of it, so the exported source still compiles.
#[test]
fn exported_source_compiles_when_the_formula_prints_with_a_where_block() {
    let mut src = "x*y + 1".to_owned();
    for _ in 0..11 {
        src = format!("sin({src}) + cos({src})*x");
    }
    let f = Expr::parse(&src).unwrap();
    assert!(f.to_string().contains("\nwhere\n"), "the test needs a formula with a where block");
    let dir = std::env::temp_dir().join(format!("symdiff-export-where-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rust = dir.join("gradient.rs");
    std::fs::write(&rust, export_rust(&f, &["x", "y"], "f").unwrap()).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "lib", "--emit", "metadata", "-o"])
        .arg(dir.join("libgradient.rmeta"))
        .arg(&rust)
        .output()
        .expect("rustc is needed for this test");
    assert!(out.status.success(), "rustc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let c = dir.join("gradient.c");
    std::fs::write(&c, export_c(&f, &["x", "y"], "f").unwrap()).unwrap();
    let out = Command::new("cc")
        .args(["-std=c99", "-fsyntax-only"])
        .arg(&c)
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
