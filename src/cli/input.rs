//! What the formula commands (`diff`, `grad`, `hessian`, `jacobian`, `eval`, `export`)
//! share about their input and their JSON: `--let` values, the variables to differentiate
//! (`--wrt x` for every element `x[i]`), the elements a list in `--at` adds, and gradients
//! grouped back into vectors.
//!
//! **Indexed variables are scalars named `x[3]`** everywhere below the parser (see
//! `graph::lower`). This module is where the command line turns them back into vectors for
//! the user: `--at x=[1, 2, 3]` gives `x[0]`, `x[1]`, `x[2]`; `--wrt x` means all the
//! elements written; and JSON writes `{"x": [g0, g1, g2]}` instead of three keys. Text output
//! keeps one line per element (`d/dx[0] = ...`), so nothing is lost when the elements are
//! sparse. It never changes what is computed, only how names are read and written.

use serde_json::{Map, Value};
use symdiff::{Error, Expr, Point};

/// `--let n=1000,m=3` (repeatable): values for the names of sum bounds and formulas. A
/// value may be a constant formula (`--let n=2^10`), not a list.
///
/// ```text
/// symdiff grad 'sum(i = 0..n-1, x[i]^2)' --let n=3 --at x=[1,2,3]
/// ```
pub fn lets(args: &[String]) -> Result<Vec<(String, f64)>, Error> {
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let p = Point::parse(&args.join(",")).map_err(|e| match e {
        Error::Parse(d) => Error::Parse(d.with_origin("--let")),
        other => other,
    })?;
    let values = p.values();
    if let Some(b) = values.iter().find_map(|(n, _)| base(n)) {
        return Err(Error::Invalid(format!("--let {b}: a let value is one number, not a list")));
    }
    Ok(values.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

/// The text of `--at @FILE`: at most [`symdiff::MAX_INPUT`] bytes (refused before reading,
/// with the size), UTF-8, errors naming the file.
pub fn read_point_file(path: &str) -> Result<String, Error> {
    let fail = |what: String| Error::Invalid(format!("--at @{path}: {what}"));
    let size = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?.len();
    if size > symdiff::MAX_INPUT as u64 {
        return Err(fail(format!("{size} bytes; a point is at most {} bytes", symdiff::MAX_INPUT)));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| fail(format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to())))
}

/// The formula `src` with the `--let` values.
pub fn parse(src: &str, lets: &[(String, f64)]) -> Result<Expr, Error> {
    let pairs: Vec<(&str, f64)> = lets.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    Expr::parse_limited_with_lets(src, &pairs, symdiff::MAX_INPUT)
}

/// Another formula of the same command (a Jacobian's second row), in `first`'s graph.
pub fn parse_beside(first: &Expr, src: &str, lets: &[(String, f64)]) -> Result<Expr, Error> {
    let pairs: Vec<(&str, f64)> = lets.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    first.parse_beside(src, &pairs)
}

/// `Some("x")` for an element name `x[3]` (`a[1,2]`).
fn base(name: &str) -> Option<&str> {
    symdiff::element(name).map(|(b, _)| b)
}

/// The variables `--wrt` names, in its order: a name written in the formulas (`vars`) is
/// itself; the name of an indexed variable stands for its elements among `vars`, in index
/// order (`--wrt x` is `x[0]`, `x[1]`, ...). A name that is neither, or one given twice, is
/// an error.
pub fn wrt(wrt: &[String], vars: &[String]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for w in wrt {
        let mut these: Vec<String> = if vars.contains(w) {
            vec![w.clone()]
        } else {
            vars.iter().filter(|v| base(v) == Some(w.as_str())).cloned().collect()
        };
        if these.is_empty() {
            return Err(Error::Invalid(format!("--wrt {w}: `{w}` does not occur in the expression")));
        }
        these.sort_by(|a, b| symdiff::variable_order(a, b));
        if let Some(twice) = these.iter().find(|t| out.contains(t)) {
            return Err(Error::Invalid(format!("--wrt {w}: `{twice}` is listed twice")));
        }
        out.extend(these);
    }
    Ok(out)
}

/// `vars` and the elements a list in the point gives for a variable indexed in them
/// (`--at x=[1, 2, 3]` when the formula writes only `x[0]` and `x[1]`: `x[2]` too, whose
/// partial is 0), sorted in [`symdiff::variable_order`].
pub fn with_listed(mut vars: Vec<String>, p: &Point) -> Vec<String> {
    let extra: Vec<String> = {
        let indexed: hashbrown::HashSet<&str> = vars.iter().filter_map(|v| base(v)).collect();
        let known: hashbrown::HashSet<&str> = vars.iter().map(String::as_str).collect();
        p.names()
            .filter(|n| base(n).is_some_and(|b| indexed.contains(b)) && !known.contains(n))
            .map(str::to_owned)
            .collect()
    };
    vars.extend(extra);
    vars.sort_by(|a, b| symdiff::variable_order(a, b));
    vars
}

/// A JSON object of `names` to `values`, with the elements of each indexed variable as one
/// array (nested for `a[i,j]`) in index order: `{"x": [1, 2], "y": 3}`. An element not among
/// `names` is `zero` (a partial with respect to an element the formula does not use is 0).
/// A variable keeps its elements' own names (`"x[0]"`) when grouping would not be faithful
/// or would be wasteful: the same name is also a plain variable, its elements have different
/// numbers of indices, or the array would be mostly padding (`x[0]` and `x[100000]`).
pub fn grouped(names: &[String], values: Vec<Value>, zero: &Value) -> Map<String, Value> {
    struct Group {
        elements: Vec<(Vec<usize>, Value)>,
        rank: usize,
        ok: bool,
    }
    let plain: hashbrown::HashSet<&str> =
        names.iter().filter(|n| base(n).is_none()).map(String::as_str).collect();
    let mut groups: Vec<(String, Group)> = Vec::new();
    let mut group_of: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
    // In order of first appearance: a plain name, or a group (its index in `groups`).
    let mut order: Vec<Result<(String, Value), usize>> = Vec::new();
    for (name, value) in names.iter().zip(values) {
        let Some((b, ix)) = symdiff::element(name) else {
            order.push(Ok((name.clone(), value)));
            continue;
        };
        let k = *group_of.entry(b).or_insert_with(|| {
            groups
                .push((b.to_owned(), Group { elements: Vec::new(), rank: ix.len(), ok: !plain.contains(b) }));
            order.push(Err(groups.len() - 1));
            groups.len() - 1
        });
        let g = &mut groups[k].1;
        g.ok &= g.rank == ix.len();
        g.elements.push((ix, value));
    }
    let mut groups: Vec<Option<(String, Group)>> = groups.into_iter().map(Some).collect();
    let mut out = Map::new();
    for item in order {
        let (b, g) = match item {
            Ok((name, value)) => {
                out.insert(name, value);
                continue;
            }
            Err(k) => match groups[k].take() {
                Some(group) => group,
                None => continue,
            },
        };
        let shape: Vec<usize> = (0..g.rank)
            .map(|d| g.elements.iter().map(|(ix, _)| ix.get(d).map_or(0, |i| i + 1)).max().unwrap_or(0))
            .collect();
        let cells = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let dense = cells.is_some_and(|c| c <= 4 * g.elements.len() + 16);
        if !(g.ok && dense) {
            for (ix, v) in g.elements {
                let ix: Vec<String> = ix.iter().map(usize::to_string).collect();
                out.insert(format!("{b}[{}]", ix.join(",")), v);
            }
            continue;
        }
        let mut flat = vec![zero.clone(); cells.unwrap_or(0)];
        for (ix, v) in g.elements {
            let at = ix.iter().zip(&shape).fold(0, |a, (&i, &d)| a * d + i);
            flat[at] = v;
        }
        out.insert(b, nest(flat, &shape));
    }
    out
}

/// Row-major `flat` as nested arrays of `shape`.
fn nest(flat: Vec<Value>, shape: &[usize]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat),
        [_, rest @ ..] => {
            let row: usize = rest.iter().product();
            let mut rows = Vec::new();
            let mut it = flat.into_iter();
            loop {
                let r: Vec<Value> = it.by_ref().take(row).collect();
                if r.is_empty() {
                    break;
                }
                rows.push(nest(r, rest));
            }
            Value::Array(rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(names: &[&str], expected: Value) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let values = (1..=names.len()).map(|i| json!(i)).collect();
        assert_eq!(Value::Object(grouped(&names, values, &json!(0))), expected, "{names:?}");
    }

    #[test]
    fn gradients_group_into_vectors() {
        check(&["x[0]", "x[1]", "y"], json!({"x": [1, 2], "y": 3}));
        check(&["x[0]", "x[2]"], json!({"x": [1, 0, 2]}));
        check(&["a[0,0]", "a[0,1]", "a[1,1]"], json!({"a": [[1, 2], [0, 3]]}));
        check(&["x", "x[0]"], json!({"x": 1, "x[0]": 2}));
        check(&["x[0]", "x[1,1]"], json!({"x[0]": 1, "x[1,1]": 2}));
        check(&["x[0]", "x[100000]"], json!({"x[0]": 1, "x[100000]": 2}));
        check(&["b", "a"], json!({"b": 1, "a": 2}));
        check(&["a[0]", "b", "a[1]"], json!({"a": [1, 3], "b": 2}));
    }
}
