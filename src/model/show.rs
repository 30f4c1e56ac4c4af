//! `symdiff show`: a model's forward equations and the backward equations reverse mode
//! derived, printed symbolically over named intermediates, or the whole training graph as
//! Graphviz DOT (each output labelled with what it is: `loss`, `d_dense_1.kernel`).

use hashbrown::{HashMap, HashSet};

use super::ModelSpec;
use super::build::build;
use crate::diff::reverse::gradient_with_adjoints;
use crate::graph::print::Names;
use crate::graph::{Graph, Id, Op, Style, print_named, show_shape};
use crate::syntax::Diagnostic;

/// The equations of `spec`'s training graph, as text.
///
/// Each equation is printed over the names of the ones before it (`print_named`), so the
/// text and the time grow with the model, not with the square of its depth; an equation whose
/// expression is large in itself (a deep loss formula and its derivative) prints its shared
/// subexpressions once, in a `where` block under it.
pub fn equations(spec: &ModelSpec) -> Result<String, Diagnostic> {
    let mut built = build(spec, spec.train.batch, true)?;
    let g = &mut built.graph;
    let mut names = Names::default();
    names.insert(built.input, "input");
    names.insert(built.labels, "labels");
    for (name, id) in &built.layer_outputs {
        // A layer that changes nothing (dropout at rate 0) shares its input's node.
        names.insert_new(*id, name.clone());
    }
    let mut out = String::new();
    out += &format!(
        "model {}: {} parameters, batch {}, data {}\n\nforward\n",
        spec.origin,
        spec.parameter_count(),
        spec.train.batch,
        spec.data
    );
    let width = built.layer_outputs.iter().map(|(n, _)| n.len()).max().unwrap_or(6).max(8);
    out += &format!("  {:width$}   {}\n", "input", show_shape(g.shape(built.input)));
    let mut shown: HashSet<Id> = HashSet::new();
    shown.insert(built.input);
    for (name, id) in &built.layer_outputs {
        if !shown.insert(*id) {
            continue;
        }
        let rhs = print_named(g, *id, Style::Text, &mut names);
        equation(&mut out, name, width, &rhs, &format!("      [{}]", show_shape(g.shape(*id))));
    }
    let rhs = print_named(g, built.loss, Style::Text, &mut names);
    equation(&mut out, "loss", width, &rhs, "");
    // Backward: the adjoints of the layer outputs, then the parameter gradients, each over the
    // named forward values and the adjoints printed before it.
    let keep: Vec<Id> = built.layer_outputs.iter().map(|(_, id)| *id).collect();
    let vars: Vec<Id> = built.params.iter().map(|p| p.var).collect();
    let (grads, adjoints) = gradient_with_adjoints(g, built.loss, &vars, &keep);
    out += "\nbackward (reverse mode; d_X is ∂loss/∂X)\n";
    let mut back: Vec<(String, Id)> = Vec::new();
    let mut adjoint_seen: HashSet<Id> = HashSet::new();
    for ((name, _), adj) in built.layer_outputs.iter().zip(&adjoints).rev() {
        if let Some(a) = adj
            && adjoint_seen.insert(*a)
        {
            back.push((format!("d_{name}"), *a));
        }
    }
    for (p, gid) in built.params.iter().zip(&grads).rev() {
        back.push((format!("d_{}", p.name), *gid));
    }
    let width = back.iter().map(|(n, _)| n.len()).max().unwrap_or(8);
    for (name, id) in &back {
        let rhs = print_named(g, *id, Style::Text, &mut names);
        equation(&mut out, name, width, &rhs, "");
        names.insert(*id, name.clone());
    }
    Ok(out)
}

/// One line `  name = rhs{suffix}`; a `where` block the printer added goes under it, indented.
fn equation(out: &mut String, name: &str, width: usize, rhs: &str, suffix: &str) {
    let (head, rest) = match rhs.split_once("\nwhere") {
        Some((h, r)) => (h, Some(r)),
        None => (rhs, None),
    };
    *out += &format!("  {name:width$} = {head}{suffix}\n");
    if let Some(rest) = rest {
        *out += "    where";
        for line in rest.split('\n') {
            if !line.is_empty() {
                *out += &format!("    {line}");
            }
            *out += "\n";
        }
    }
}

/// The training graph (forward, loss and gradients) as Graphviz DOT.
pub fn dot(spec: &ModelSpec) -> Result<String, Diagnostic> {
    let built = build(spec, spec.train.batch, true)?;
    let g: &Graph = &built.graph;
    let mut roots = vec![built.loss];
    roots.extend(&built.grads);
    // The outputs, by name: `loss`, and `d_dense_1.kernel` for each parameter's gradient (one
    // node can be several outputs: gradients that are the same number).
    let mut outputs: HashMap<Id, Vec<String>> = HashMap::new();
    outputs.entry(built.loss).or_default().push("loss".into());
    for (p, &gid) in built.params.iter().zip(&built.grads) {
        outputs.entry(gid).or_default().push(format!("d_{}", p.name));
    }
    let order = g.reachable(&roots);
    let mut out =
        String::from("digraph symdiff {\n  rankdir=BT;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for &id in &order {
        let label = match g.op(id) {
            Op::Var(_) => g.var_name(id).unwrap_or("?").to_owned(),
            Op::Num(b) => crate::graph::print::format_number(f64::from_bits(b)),
            Op::Const(c) => c.name().to_owned(),
            Op::Add => "+".into(),
            Op::Mul => "*".into(),
            Op::Pow => "^".into(),
            Op::Func(f) => f.name().into(),
            Op::MatMul => "@".into(),
            Op::Sum(a) if a == crate::graph::ALL_AXES => "sum".into(),
            Op::Sum(a) => format!("sum axis {a}"),
            Op::Max(a) if a == crate::graph::ALL_AXES => "max".into(),
            Op::Max(a) => format!("max axis {a}"),
            Op::Broadcast(_) => "broadcast".into(),
            Op::Reshape(_) => "reshape".into(),
            Op::Transpose => "transpose".into(),
            Op::LogSoftmax => "logsoftmax".into(),
            Op::OneHot(k) => format!("onehot {k}"),
        };
        let shape = show_shape(g.shape(id));
        let style = match g.op(id) {
            Op::Var(_) => ", shape=box, style=filled, fillcolor=\"#e8f0ff\"",
            _ if outputs.contains_key(&id) => ", style=filled, fillcolor=\"#ffe8e8\"",
            _ => "",
        };
        let named = outputs.get(&id).map(|n| format!("\\n{}", n.join("\\n"))).unwrap_or_default();
        let label = format!("{label}\\n{shape}{named}").replace('"', "'");
        out += &format!("  n{} [label=\"{label}\"{style}];\n", id.index());
        for a in g.args(id) {
            out += &format!("  n{} -> n{};\n", a.index(), id.index());
        }
    }
    out += "}\n";
    Ok(out)
}
