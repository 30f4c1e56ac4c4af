//! The lines of a model file that change training as it goes, as Keras' callbacks and
//! learning-rate schedules do:
//!
//! ```text
//! schedule exponential decay_steps=1000 rate=0.96 staircase=true   # ExponentialDecay
//! schedule step every=2 factor=0.5                                 # lr0 · 0.5^floor(epoch/2)
//! schedule cosine decay_steps=10000 alpha=0                        # CosineDecay
//! reduce_lr_on_plateau monitor=val_loss factor=0.1 patience=10 min_delta=0.0001 cooldown=0 min_lr=0
//! early_stopping monitor=val_loss patience=3 min_delta=0 restore_best=true
//! ```
//!
//! The formulas and their Keras counterparts are in `train/schedule.rs`; this module reads the
//! lines, with Keras' defaults for what a line leaves out, and refuses what cannot go together
//! (a schedule and `reduce_lr_on_plateau` both setting the rate, as Keras refuses too).
//!
//! Invariant: only reads; every value is checked here, with its position.

use crate::model::schedule::{EarlyStopping, Monitor, Plateau, Schedule};
use crate::syntax::{Diagnostic, Item, Name, Span, Spanned, Value};

use super::{Ctx, Options};

/// The kinds of `schedule`.
const SCHEDULES: &[&str] = &["exponential", "step", "cosine"];

fn unexpected_rest(cx: &Ctx<'_>, rest: &[&Item], line: &str) -> Result<(), Diagnostic> {
    match rest.first() {
        Some(extra) => {
            Err(cx.err(extra.span(), format!("unexpected; the options of `{line}` are written `name=value`")))
        }
        None => Ok(()),
    }
}

fn flag(cx: &Ctx<'_>, v: Option<&Spanned<Value>>, name: &str, default: bool) -> Result<bool, Diagnostic> {
    match v {
        None => Ok(default),
        Some(Spanned { value: Value::Word(w), .. }) if w == "true" => Ok(true),
        Some(Spanned { value: Value::Word(w), .. }) if w == "false" => Ok(false),
        Some(v) => Err(cx.err(v.span, format!("{name} is `true` or `false`"))),
    }
}

fn whole(
    cx: &Ctx<'_>,
    v: Option<&Spanned<Value>>,
    name: &str,
    default: usize,
    min: usize,
) -> Result<usize, Diagnostic> {
    let Some(v) = v else { return Ok(default) };
    let x = cx.number(v, name)?;
    if x.fract() == 0.0 && x >= min as f64 && x <= (1u64 << 40) as f64 {
        Ok(x as usize)
    } else {
        Err(cx.err(v.span, format!("{name} must be a whole number from {min}, not {x}")))
    }
}

fn number(
    cx: &Ctx<'_>,
    v: Option<&Spanned<Value>>,
    name: &str,
    default: f64,
) -> Result<(f64, Span), Diagnostic> {
    match v {
        None => Ok((default, Span::new(0, 0))),
        Some(v) => Ok((cx.number(v, name)?, v.span)),
    }
}

fn monitor(cx: &Ctx<'_>, v: Option<&Spanned<Value>>) -> Result<Monitor, Diagnostic> {
    match v {
        None => Ok(Monitor::ValLoss),
        Some(Spanned { value: Value::Word(w), span }) => Monitor::parse(w).ok_or_else(|| {
            let names: Vec<&str> = Monitor::ALL.iter().map(|m| m.name()).collect();
            cx.unknown("metric", &Name { text: w.clone(), span: *span }, &names)
        }),
        Some(v) => Err(cx.err(v.span, "monitor names a metric, as in `monitor=val_loss`")),
    }
}

/// A constructor's refusal at the line, or at the value it names.
fn refused(cx: &Ctx<'_>, span: Span, o: &Options<'_>, message: String) -> Diagnostic {
    // Point at the first option the message names, if any.
    let at = o.found.iter().find(|(n, _)| message.contains(&n.text)).map_or(span, |(_, v)| v.span);
    cx.err(at, message)
}

/// `schedule KIND options`.
pub(super) fn schedule(cx: &Ctx<'_>, items: &[Item], span: Span) -> Result<Schedule, Diagnostic> {
    let Some((Item::Value(Spanned { value: Value::Word(kind), span: ks }), items)) = items.split_first()
    else {
        return Err(cx
            .err(
                span,
                "`schedule` takes a kind first, as in `schedule exponential decay_steps=1000 rate=0.96`",
            )
            .with_help(format!("kinds: {}", SCHEDULES.join(", "))));
    };
    let allowed: &[&str] = match kind.as_str() {
        "exponential" => &["decay_steps", "rate", "staircase"],
        "step" => &["every", "factor"],
        "cosine" => &["decay_steps", "alpha"],
        _ => return Err(cx.unknown("schedule", &Name { text: kind.clone(), span: *ks }, SCHEDULES)),
    };
    let line = format!("schedule {kind}");
    let (o, rest) = Options::take(cx, items, allowed, &line)?;
    unexpected_rest(cx, &rest, &line)?;
    let need = |name: &str, example: &str| {
        o.get(name).ok_or_else(|| cx.err(span, format!("`{line}` needs `{name}=`, as in `{example}`")))
    };
    let made = match kind.as_str() {
        "exponential" => {
            need("decay_steps", "decay_steps=1000")?;
            need("rate", "rate=0.96")?;
            let steps = whole(cx, o.get("decay_steps"), "decay_steps", 1, 1)?;
            let (rate, _) = number(cx, o.get("rate"), "rate", 1.0)?;
            Schedule::exponential(steps as u64, rate, flag(cx, o.get("staircase"), "staircase", false)?)
        }
        "step" => {
            need("every", "every=2")?;
            need("factor", "factor=0.5")?;
            let every = whole(cx, o.get("every"), "every", 1, 1)?;
            let (factor, _) = number(cx, o.get("factor"), "factor", 0.5)?;
            Schedule::step(every, factor)
        }
        _ => {
            need("decay_steps", "decay_steps=10000")?;
            let steps = whole(cx, o.get("decay_steps"), "decay_steps", 1, 1)?;
            let (alpha, _) = number(cx, o.get("alpha"), "alpha", 0.0)?;
            Schedule::cosine(steps as u64, alpha)
        }
    };
    made.map_err(|m| refused(cx, span, &o, m))
}

/// `reduce_lr_on_plateau options`.
pub(super) fn plateau(cx: &Ctx<'_>, items: &[Item], span: Span) -> Result<Plateau, Diagnostic> {
    let line = "reduce_lr_on_plateau";
    let (o, rest) = Options::take(
        cx,
        items,
        &["monitor", "factor", "patience", "min_delta", "cooldown", "min_lr"],
        line,
    )?;
    unexpected_rest(cx, &rest, line)?;
    Plateau::new(
        monitor(cx, o.get("monitor"))?,
        number(cx, o.get("factor"), "factor", Plateau::DEFAULT_FACTOR)?.0,
        whole(cx, o.get("patience"), "patience", Plateau::DEFAULT_PATIENCE, 0)?,
        number(cx, o.get("min_delta"), "min_delta", Plateau::DEFAULT_MIN_DELTA)?.0,
        whole(cx, o.get("cooldown"), "cooldown", Plateau::DEFAULT_COOLDOWN, 0)?,
        number(cx, o.get("min_lr"), "min_lr", Plateau::DEFAULT_MIN_LR)?.0,
    )
    .map_err(|m| refused(cx, span, &o, m))
}

/// `early_stopping options`.
pub(super) fn early_stopping(cx: &Ctx<'_>, items: &[Item], span: Span) -> Result<EarlyStopping, Diagnostic> {
    let line = "early_stopping";
    let (o, rest) = Options::take(cx, items, &["monitor", "patience", "min_delta", "restore_best"], line)?;
    unexpected_rest(cx, &rest, line)?;
    EarlyStopping::new(
        monitor(cx, o.get("monitor"))?,
        whole(cx, o.get("patience"), "patience", EarlyStopping::DEFAULT_PATIENCE, 0)?,
        number(cx, o.get("min_delta"), "min_delta", EarlyStopping::DEFAULT_MIN_DELTA)?.0,
        flag(cx, o.get("restore_best"), "restore_best", false)?,
    )
    .map_err(|m| refused(cx, span, &o, m))
}
