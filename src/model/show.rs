//! `symdiff show`: a model's forward equations and the backward equations reverse mode
//! derived, printed symbolically over named intermediates, or the whole training graph as
//! Graphviz DOT (each output labelled with what it is: `loss`, `d_dense_1.kernel`).

use hashbrown::HashMap;

use super::ModelSpec;
use super::build::build;
use crate::diff::reverse::gradient_with_adjoints;
use crate::graph::{Graph, Id, Op, Style, print_named, show_shape};
use crate::syntax::Diagnostic;

/// The equations of `spec`'s training graph, as text.
pub fn equations(spec: &ModelSpec) -> Result<String, Diagnostic> {
    let mut built = build(spec, spec.train.batch, true)?;
    let g = &mut built.graph;
    let mut names: HashMap<Id, String> = HashMap::new();
    names.insert(built.input, "input".into());
    names.insert(built.labels, "labels".into());
    for (name, id) in &built.layer_outputs {
        // A layer that changes nothing (dropout at rate 0) shares its input's node.
        names.entry(*id).or_insert_with(|| name.clone());
    }
    let logits_name = names.get(&built.logits).cloned().unwrap_or_else(|| "logits".into());
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
    let mut shown: Vec<Id> = vec![built.input];
    for (name, id) in &built.layer_outputs {
        if shown.contains(id) {
            continue;
        }
        shown.push(*id);
        let rhs = print_named(g, *id, Style::Text, &names);
        out += &format!("  {name:width$} = {rhs}      [{}]\n", show_shape(g.shape(*id)));
    }
    out += &format!("  {:width$} = {}\n", "loss", print_named(g, built.loss, Style::Text, &names));
    // Backward: the adjoints of the layer outputs, then the parameter gradients, each over the
    // named forward values and the adjoints printed before it.
    let keep: Vec<Id> = built.layer_outputs.iter().map(|(_, id)| *id).collect();
    let vars: Vec<Id> = built.params.iter().map(|p| p.var).collect();
    let (grads, adjoints) = gradient_with_adjoints(g, built.loss, &vars, &keep);
    out += "\nbackward (reverse mode; d_X is ∂loss/∂X)\n";
    let mut back: Vec<(String, Id)> = Vec::new();
    for ((name, _), adj) in built.layer_outputs.iter().zip(&adjoints).rev() {
        if let Some(a) = adj
            && !back.iter().any(|(_, b)| b == a)
        {
            back.push((format!("d_{name}"), *a));
        }
    }
    for (p, gid) in built.params.iter().zip(&grads).rev() {
        back.push((format!("d_{}", p.name), *gid));
    }
    let width = back.iter().map(|(n, _)| n.len()).max().unwrap_or(8);
    for (name, id) in &back {
        let rhs = print_named(g, *id, Style::Text, &names);
        out += &format!("  {name:width$} = {rhs}\n");
        names.insert(*id, name.clone());
    }
    let _ = logits_name;
    Ok(out)
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
