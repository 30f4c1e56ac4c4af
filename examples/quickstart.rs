// Parse a formula, differentiate it symbolically, print and evaluate the derivative.
fn main() -> Result<(), symdiff::Error> {
    let f = symdiff::Expr::parse("x^3 + 2*x^2 + 1")?;
    let df = f.diff("x"); // symbolic, simplified
    assert_eq!(df.to_string(), "3*x^2 + 4*x");
    assert_eq!(df.eval(&[("x", 4.0)])?, 64.0);

    // Several variables: the gradient, and a derivative of higher order.
    let g = symdiff::Expr::parse("x^2*y + sin(x*y)")?;
    let grad = g.gradient(&["x", "y"]);
    assert_eq!(grad[0].to_string(), "2*x*y + y*cos(x*y)");
    assert_eq!(grad[1].to_string(), "x^2 + x*cos(x*y)");
    assert_eq!(g.nth_diff("y", 2).to_string(), "-x^2*sin(x*y)");

    // Compiled: reverse mode builds the gradient graph, Cranelift compiles value + gradient.
    let compiled = symdiff::compile_gradient(&f, &["x"])?;
    let mut grad = [0.0];
    assert_eq!(compiled.eval(&[4.0], &mut grad), 97.0);
    assert_eq!(grad, [64.0]);

    // Built in code: the same nodes as the text parsed, no string in between.
    let x = symdiff::Expr::var("x");
    let built = x.powi(3) + 2.0 * x.powi(2) + 1.0;
    assert_eq!(built.to_string(), f.to_string());
    assert_eq!(built.diff("x").to_string(), "3*x^2 + 4*x");
    let xs: Vec<symdiff::Expr> = (0..3).map(|i| symdiff::Expr::var(&format!("x{i}"))).collect();
    let sum: symdiff::Expr = xs.iter().map(|xi| xi.sin()).sum();
    assert_eq!(sum.to_string(), "sin(x0) + sin(x1) + sin(x2)");

    // Bad input is an error with a position, never a panic.
    let err = symdiff::Expr::parse("x^^2").unwrap_err();
    assert!(err.to_string().starts_with("formula:1:3:"));
    Ok(())
}
