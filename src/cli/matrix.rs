//! `symdiff hessian` and `symdiff jacobian`: second derivatives and derivatives of vector
//! functions at a point, compiled, dense or sparse, as text or JSON.
//!
//! **Variables.** In the order of `--wrt` when given, else as they first appear in the
//! formulas (a variable written but cancelled by simplification, as `x` in `x - x + y`, is
//! one: its row and column are zero). Indices in JSON are 0-based into `variables`.
//!
//! **Sparse output** lists the entries that are not identically zero (the structural
//! pattern, found symbolically): `{"value": v, "variables": [...], "triangle": "lower",
//! "entries": [[row, col, value], ...]}`, the Hessian's lower triangle (`col <= row`) in
//! row-major order. An entry that is zero only at this point is listed with its 0.
//!
//! Compiled code does not check domains; when a result is not finite, the interpreter
//! evaluates the same derivatives to say what went wrong (`log(-1)` at which operation).

use serde_json::{Value, json};
use symdiff::{Error, Expr, Triangle};

use super::{input, number, point, symdiff_value};

/// The variables to differentiate by: `wrt` (each written in the formulas, or an indexed
/// variable for all its elements), or every written variable in order of appearance.
fn variables(fs: &[Expr], wrt: &[String]) -> Result<Vec<String>, Error> {
    let mut written: Vec<String> = Vec::new();
    for f in fs {
        for v in f.written_variables() {
            if !written.contains(&v) {
                written.push(v);
            }
        }
    }
    if wrt.is_empty() { Ok(written) } else { input::wrt(wrt, &written) }
}

/// The point: the values of `vars`, and the formulas with every other variable (not in
/// `--wrt`) replaced by its value, so that only `vars` are differentiated. Every variable of
/// the formulas needs a value.
fn at_point(fs: &[Expr], vars: &[String], at: &[String]) -> Result<(Vec<f64>, Vec<Expr>), Error> {
    let p = point(at)?.unwrap_or_default();
    let mut all: Vec<String> = fs.iter().flat_map(|f| f.written_variables()).collect();
    all.sort_by(|a, b| symdiff::variable_order(a, b));
    all.dedup();
    p.check_names(&all)?;
    p.check_complete(&all)?;
    let x = vars.iter().map(|v| p.get(v).unwrap_or(f64::NAN)).collect();
    let mut numbers = Vec::new();
    for v in all.iter().filter(|v| !vars.contains(v)) {
        let value = p.get(v).unwrap_or(f64::NAN);
        numbers.push((v.as_str(), fs[0].parse_with(&format!("({value:?})"))?));
    }
    if numbers.is_empty() {
        return Ok((x, fs.to_vec()));
    }
    let pairs: Vec<(&str, &Expr)> = numbers.iter().map(|(v, e)| (*v, e)).collect();
    Ok((x, fs.iter().map(|f| f.substitute_all(&pairs)).collect()))
}

/// A matrix as text: one line per row, columns aligned.
fn table(rows: &[Vec<f64>]) -> String {
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|&x| symdiff_value(x)).collect()).collect();
    let width = cells.iter().flatten().map(String::len).max().unwrap_or(1);
    cells
        .iter()
        .map(|r| r.iter().map(|c| format!("{c:>width$}")).collect::<Vec<_>>().join("  "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// When compiled results are not finite, the interpreter's error for the same entries.
fn explain(entries: &[Expr], bound: &[(&str, f64)]) -> Result<(), Error> {
    Expr::eval_all(entries, bound)?;
    Ok(())
}

pub fn hessian(
    src: &str,
    wrt: &[String],
    at: &[String],
    lets: &[String],
    sparse: bool,
    json_out: bool,
) -> Result<String, Error> {
    let parsed = input::parse(src, &input::lets(lets)?)?;
    let vars = variables(std::slice::from_ref(&parsed), wrt)?;
    let (x, fixed) = at_point(std::slice::from_ref(&parsed), &vars, at)?;
    let f = &fixed[0];
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let bound: Vec<(&str, f64)> = names.iter().copied().zip(x.iter().copied()).collect();
    let value = f.eval(&bound)?;
    let n = vars.len();
    if sparse {
        let h = symdiff::compile_sparse_hessian(f, &names, Triangle::Lower)?;
        let p = h.pattern();
        let mut v = vec![0.0; p.nnz()];
        h.eval(&x, &mut v)?;
        if v.iter().any(|x| !x.is_finite()) {
            explain(&f.try_hessian(&names)?.concat(), &bound)?;
        }
        let entries = p.rows().iter().zip(p.cols()).zip(&v);
        if json_out {
            let list: Vec<Value> = entries.map(|((&r, &c), &x)| json!([r, c, number(x)])).collect();
            return Ok(
                json!({"value": number(value), "variables": vars, "triangle": "lower", "entries": list})
                    .to_string(),
            );
        }
        let mut lines = vec![format!("value = {}", symdiff_value(value))];
        lines.extend(entries.map(|((&r, &c), &x)| {
            format!("d2/d{}d{} = {}", vars[r as usize], vars[c as usize], symdiff_value(x))
        }));
        if p.nnz() == 0 {
            lines.push("(every second derivative is identically zero)".into());
        }
        return Ok(lines.join("\n"));
    }
    let h = symdiff::compile_hessian(f, &names)?;
    let mut v = vec![0.0; n * n];
    h.eval(&x, &mut v)?;
    if v.iter().any(|x| !x.is_finite()) {
        explain(&f.try_hessian(&names)?.concat(), &bound)?;
    }
    let rows: Vec<Vec<f64>> = v.chunks(n.max(1)).map(<[f64]>::to_vec).take(n).collect();
    if json_out {
        let m: Vec<Value> =
            rows.iter().map(|r| Value::Array(r.iter().map(|&x| number(x)).collect())).collect();
        return Ok(json!({"value": number(value), "variables": vars, "hessian": m}).to_string());
    }
    let mut out = format!("value = {}\nhessian over {}:", symdiff_value(value), vars.join(", "));
    if n > 0 {
        out += "\n";
        out += &table(&rows);
    }
    Ok(out)
}

/// The formulas of `symdiff jacobian`: each argument split at its commas outside
/// parentheses and brackets (`'f(a, b), g' h` is three formulas: `f(a, b)`, `g`, `h`).
fn split(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for text in args {
        let (mut depth, mut start) = (0i32, 0);
        for (i, c) in text.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(text[start..i].trim().to_owned());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(text[start..].trim().to_owned());
    }
    out.retain(|s| !s.is_empty());
    out
}

pub fn jacobian(
    args: &[String],
    wrt: &[String],
    at: &[String],
    lets: &[String],
    sparse: bool,
    json_out: bool,
) -> Result<String, Error> {
    let lets = input::lets(lets)?;
    let srcs = split(args);
    if srcs.is_empty() {
        return Err(Error::Invalid("no formulas: give them separated by commas, e.g. 'x*y, x + y'".into()));
    }
    let first = input::parse(&srcs[0], &lets)?;
    let mut parsed = vec![first.clone()];
    for s in &srcs[1..] {
        parsed.push(input::parse_beside(&first, s, &lets)?);
    }
    let vars = variables(&parsed, wrt)?;
    let (x, fs) = at_point(&parsed, &vars, at)?;
    let names: Vec<&str> = vars.iter().map(String::as_str).collect();
    let bound: Vec<(&str, f64)> = names.iter().copied().zip(x.iter().copied()).collect();
    let vals = Expr::eval_all(&fs, &bound)?;
    let n = vars.len();
    let m = fs.len();
    let check = |v: &[f64]| -> Result<(), Error> {
        if v.iter().any(|x| !x.is_finite()) {
            let all: Vec<Expr> =
                fs.iter().map(|f| f.try_gradient(&names)).collect::<Result<Vec<_>, _>>()?.concat();
            explain(&all, &bound)?;
        }
        Ok(())
    };
    if sparse {
        let j = symdiff::compile_sparse_jacobian(&fs, &names)?;
        let p = j.pattern();
        let mut v = vec![0.0; p.nnz()];
        j.eval(&x, &mut v)?;
        check(&v)?;
        let entries = p.rows().iter().zip(p.cols()).zip(&v);
        if json_out {
            let list: Vec<Value> = entries.map(|((&r, &c), &x)| json!([r, c, number(x)])).collect();
            let vals: Vec<Value> = vals.iter().map(|&x| number(x)).collect();
            return Ok(json!({"values": vals, "variables": vars, "entries": list}).to_string());
        }
        let mut lines: Vec<String> =
            vals.iter().enumerate().map(|(i, &v)| format!("f{i} = {}", symdiff_value(v))).collect();
        lines.extend(
            entries.map(|((&r, &c), &x)| format!("df{r}/d{} = {}", vars[c as usize], symdiff_value(x))),
        );
        return Ok(lines.join("\n"));
    }
    let j = symdiff::compile_jacobian(&fs, &names)?;
    let mut v = vec![0.0; m * n];
    j.eval(&x, &mut v)?;
    check(&v)?;
    let rows: Vec<Vec<f64>> = (0..m).map(|i| v[i * n..(i + 1) * n].to_vec()).collect();
    if json_out {
        let mat: Vec<Value> =
            rows.iter().map(|r| Value::Array(r.iter().map(|&x| number(x)).collect())).collect();
        let vals: Vec<Value> = vals.iter().map(|&x| number(x)).collect();
        return Ok(json!({"values": vals, "variables": vars, "jacobian": mat}).to_string());
    }
    let mut out: Vec<String> =
        vals.iter().enumerate().map(|(i, &v)| format!("f{i} = {}", symdiff_value(v))).collect();
    out.push(format!("jacobian over {}:", vars.join(", ")));
    if n > 0 {
        out.push(table(&rows));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    /// `split` of the arguments, the formulas joined by ` | `.
    fn check(args: &[&str], expected: &str) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(super::split(&args).join(" | "), expected, "{args:?}");
    }

    #[test]
    fn split() {
        check(&["x*y, x + y"], "x*y | x + y");
        check(&["x*y,", "x + y"], "x*y | x + y");
        check(&["f(a, b), g", "h"], "f(a, b) | g | h");
        check(&["sum([x, y]), (x, y"], "sum([x, y]) | (x, y");
        check(&[",", " , "], "");
    }
}
