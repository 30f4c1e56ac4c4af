//! Simplifying constructors: the only way nodes are built.
//!
//! Every constructor returns the canonical form of what it is asked for, so simplification
//! happens once, when a node is born, and never as a separate pass. Canonical form:
//!
//! * sums and products are n-ary and flat (no `Add` directly under an `Add`);
//! * a product has at most one numeric factor, the coefficient, stored first;
//!   a sum has at most one numeric term, stored last;
//! * like terms and like factors are combined (`x + x` is `2*x`, `x*x` is `x^2`);
//! * the other arguments of `+` and `*` are sorted by id, so `a*b` and `b*a` are one node.
//!
//! The identities applied are listed in [`RULES`], one row each with an example that a test
//! checks through the parser and printer. The rules for writing rules:
//!
//! 1. **Never rewrite to something bigger.** Every rule keeps or shrinks the node count.
//! 2. **Never change a value where the original is defined.** A rule may *extend* the domain
//!    (`x/x` is `1`, also at `x = 0`), which is what every computer algebra system does; it
//!    never changes the value at a point where the input expression had one.
//! 3. **Constant folding never invents a non-finite number** (`1/0` stays `1/0` and fails at
//!    evaluation with a message) and never trades a short exact form for a long decimal:
//!    `sin(1)` and `2^0.5` stay symbolic, `exp(0)` becomes `1`.
//! 4. `x*0 → 0` holds over the reals. IEEE arithmetic disagrees only when `x` is ±inf or NaN,
//!    and the interpreter reports those as errors before they could reach a product, so the
//!    rule cannot hide a problem. It is the only float identity here that IEEE does not have.
//! 5. **An undefined constant never vanishes.** A constant subexpression the interpreter
//!    rejects (`0/0`, `log(-1)`, `sqrt(-1)`, `exp(1000)`, `1e308*10`) is undefined for every
//!    value of every variable, so no domain extension applies to it: the graph marks it when
//!    it is built (`Graph::is_undefined`, computed by the interpreter's own step), and a
//!    constructor given such an argument simplifies only its other arguments and keeps it as
//!    written (`keep-undefined`). `0*log(-1)`, `1/0 - 1/0`, `log(-1)/log(-1)` and
//!    `exp(log(-1))` therefore fail at evaluation, naming the undefined part, as `log(-1)`
//!    alone does; derivatives keep it too (`diff::forward`).

use smallvec::SmallVec;

use super::func::Func;
use super::node::{ALL_AXES, Constant, Graph, Id, Op, ShapeId, broadcast_shapes};

/// One simplification identity, with an example checked by the tests.
pub struct Rule {
    /// Short name, used in comments at the place the rule is applied.
    pub name: &'static str,
    /// An input formula the rule applies to.
    pub before: &'static str,
    /// How that input prints after simplification.
    pub after: &'static str,
    /// Conditions and caveats.
    pub note: &'static str,
}

#[rustfmt::skip]
/// Every identity the constructors apply. `before` is parsed and printed; the result must be
/// exactly `after` (see `tests/simplify.rs`).
pub static RULES: &[Rule] = &[
    Rule { name: "add-flatten",   before: "(a + b) + (c + a)", after: "2*a + b + c",   note: "sums are n-ary (nested ones up to FLATTEN_LIMIT terms)" },
    Rule { name: "add-zero",      before: "x + 0",            after: "x",             note: "" },
    Rule { name: "add-fold",      before: "x + 2 + 3",        after: "x + 5",         note: "numeric terms are summed" },
    Rule { name: "add-collect",   before: "2*x + 3*x + x",    after: "6*x",           note: "like terms: coefficients are added" },
    Rule { name: "add-cancel",    before: "x*y - y*x",        after: "0",             note: "" },
    Rule { name: "add-double",    before: "x + x",            after: "2*x",           note: "" },
    Rule { name: "add-distribute", before: "(x + 1) - 2*(x - 1)", after: "3 - x",     note: "a number times a small sum, inside a sum, is spread over it" },
    Rule { name: "mul-flatten",   before: "2*(3*x^2)",        after: "6*x^2",         note: "products are n-ary; coefficients combine" },
    Rule { name: "mul-one",       before: "x*1",              after: "x",             note: "" },
    Rule { name: "mul-zero",      before: "sin(x)*0",         after: "0",             note: "over the reals; see rule 4" },
    Rule { name: "mul-fold",      before: "2*x*3",            after: "6*x",           note: "" },
    Rule { name: "mul-square",    before: "x*x",              after: "x^2",           note: "like factors: exponents are added" },
    Rule { name: "mul-collect",   before: "x^2*y*x^3",        after: "x^5*y",         note: "" },
    Rule { name: "mul-cancel",    before: "x/x",              after: "1",             note: "extends the domain to x = 0 (rule 2)" },
    Rule { name: "mul-neg-neg",   before: "-(-x)",            after: "x",             note: "negation is a coefficient of -1" },
    Rule { name: "pow-one",       before: "x^1",              after: "x",             note: "" },
    Rule { name: "pow-zero",      before: "x^0",              after: "1",             note: "IEEE pow agrees, even for 0 and NaN" },
    Rule { name: "pow-base-one",  before: "1^x",              after: "1",             note: "IEEE pow agrees" },
    Rule { name: "pow-base-zero", before: "0^3",              after: "0",             note: "positive numeric exponents only" },
    Rule { name: "pow-fold",      before: "2^10 + 4^0.5",     after: "1026",          note: "integer exponents, or a short exact result" },
    Rule { name: "pow-keep",      before: "2^0.5",            after: "sqrt(2)",       note: "no long decimals (rule 3)" },
    Rule { name: "pow-coef",      before: "3/(2*x) + (4*y)^0.5", after: "2*sqrt(y) + 3/(2*x)", note: "a numeric coefficient leaves a power when its power is a number" },
    Rule { name: "pow-pow",       before: "(x^2)^3",          after: "x^6",           note: "integer outer exponents only" },
    Rule { name: "pow-pow-keep",  before: "(x^2)^0.5",        after: "sqrt(x^2)",     note: "that is |x|, not x" },
    Rule { name: "pow-e",         before: "e^(2*x)",          after: "exp(2*x)",      note: "" },
    Rule { name: "func-fold",     before: "exp(0) + cos(0)",  after: "2",             note: "only short exact results (rule 3)" },
    Rule { name: "func-keep",     before: "sin(1)",           after: "sin(1)",        note: "" },
    Rule { name: "log-e",         before: "log(e)",           after: "1",             note: "" },
    Rule { name: "log-exp",       before: "log(exp(x))",      after: "x",             note: "on a constant, only where it gives the value as written" },
    Rule { name: "exp-log",       before: "exp(log(x))",      after: "x",             note: "extends the domain to x <= 0 (rule 2); on a constant, only where it gives the value as written (`exp(log(3))` is 3.0000000000000004)" },
    Rule { name: "keep-undefined", before: "(x - x)*log(-1) + 1/0 - 1/0", after: "0*log(-1) + 1/0 - 1/0", note: "a constant without a value never vanishes (rule 5)" },
    Rule { name: "commute",       before: "y*x - x*y + b + a - (a + b)", after: "0", note: "canonical order: one node per sum or product" },
];

/// Is `x` worth writing as a number? Yes when its shortest decimal has at most 6 significant
/// digits (`0.5`, `1024`, `1e-3`); `0.8414709848078965` is not (rule 3).
fn short(x: f64) -> bool {
    if !x.is_finite() {
        return false;
    }
    let s = format!("{x:e}");
    let mantissa = s.split('e').next().unwrap_or("");
    mantissa.chars().filter(|c| c.is_ascii_digit()).count() <= 6
}

fn is_integer(x: f64) -> bool {
    x.is_finite() && x.fract() == 0.0
}

/// A term of a sum seen as `coef * key`, where `key` is the term without its coefficient.
struct Term {
    coef: f64,
    node: Id,
    /// For a product, the key is its arguments from this index on (1 when the first is the
    /// coefficient, else 0); for anything else the key is `[node]`.
    skip: Option<usize>,
}

/// Inner sums up to this many terms are distributed over (rule `add-distribute`).
const DISTRIBUTE_LIMIT: usize = 8;

/// Nested sums and products with more arguments than this are not flattened into their
/// parent but kept as one argument. Building a long chain one step at a time (the chain
/// rule through `sin(sin(...(x)))`, an adjoint collecting many contributions) then costs
/// O(limit) per step instead of O(length): linear overall, not quadratic.
pub const FLATTEN_LIMIT: usize = 64;

/// Derivatives multiply and add *shared* values: an adjoint is used by every contribution
/// its node passes down, a derivative `d(arg)` by every user of `arg`. Flattening a shared
/// product or sum into each use copies its arguments there, and along a chain
/// (`sin(sin(...(x)))`, where each adjoint is the one above times a cosine) the copies grow
/// by one argument per step up to [`FLATTEN_LIMIT`]: 64 times the operations the chain
/// needs. [`Graph::mul_shared`] and [`Graph::add_shared`] flatten only nested products and
/// sums of at most this many arguments, so a derivative costs a bounded number of
/// operations per edge (the cheap-gradient bound), and keep the rest as one argument.
/// Reverse mode uses this limit; symbolic `d/dx`, whose results are printed, uses
/// [`PRINTED_SHARE_LIMIT`].
pub const SHARE_LIMIT: usize = 2;

/// The share limit of symbolic `d/dx` (forward mode): its results are read by people, so a
/// coefficient or a short product still merges into its use (`-2*x*(1 - x)`, not
/// `(1 - x)*(-2*x)`), at a cost of at most this many copied arguments per use.
pub const PRINTED_SHARE_LIMIT: usize = 8;

impl Graph {
    /// `t = c * (sum)` with a number `c` and a small sum: `(c, sum)`.
    fn scaled_sum(&self, t: Id) -> Option<(f64, Id)> {
        if self.op(t) != Op::Mul {
            return None;
        }
        match self.args(t) {
            &[c, inner] if self.op(inner) == Op::Add && self.args(inner).len() <= DISTRIBUTE_LIMIT => {
                Some((self.as_num(c)?, inner))
            }
            _ => None,
        }
    }

    fn key<'a>(&'a self, t: &'a Term) -> &'a [Id] {
        match t.skip {
            Some(k) => &self.args(t.node)[k..],
            None => std::slice::from_ref(&t.node),
        }
    }

    /// The broadcast shape of `ids` (scalar when all are scalars).
    fn broadcast_of(&mut self, ids: &[Id]) -> ShapeId {
        if ids.iter().all(|&a| self.is_scalar(a)) {
            return ShapeId::SCALAR;
        }
        let mut out: Vec<usize> = Vec::new();
        for &a in ids {
            out = broadcast_shapes(&out, self.shape(a)).unwrap_or(out);
        }
        self.shape_id(&out)
    }

    /// `r` with shape `shape`: simplification can turn `x*0` (a tensor) into the scalar `0`,
    /// which must still have `x`'s shape.
    fn fit(&mut self, r: Id, shape: ShapeId) -> Id {
        if self.shape_id_of(r) == shape { r } else { self.broadcast(r, shape) }
    }

    /// `terms[0] + terms[1] + ...` in canonical form.
    pub fn add(&mut self, terms: &[Id]) -> Id {
        let shape = self.broadcast_of(terms);
        let r = if terms.iter().any(|&t| self.is_undefined(t)) {
            self.keep_undefined(Op::Add, terms, FLATTEN_LIMIT)
        } else {
            self.add_elementwise(terms)
        };
        self.fit(r, shape)
    }

    /// `factors[0] * factors[1] * ...` in canonical form.
    pub fn mul(&mut self, factors: &[Id]) -> Id {
        let shape = self.broadcast_of(factors);
        let r = if factors.iter().any(|&f| self.is_undefined(f)) {
            self.keep_undefined(Op::Mul, factors, FLATTEN_LIMIT)
        } else {
            self.mul_elementwise(factors)
        };
        self.fit(r, shape)
    }

    /// `base ^ exp` in canonical form.
    pub fn pow(&mut self, base: Id, exp: Id) -> Id {
        let shape = self.broadcast_of(&[base, exp]);
        let r = if self.is_undefined(base) || self.is_undefined(exp) {
            self.intern(Op::Pow, &[base, exp]) // keep-undefined: no rule may drop either
        } else {
            self.pow_elementwise(base, exp)
        };
        self.fit(r, shape)
    }

    /// keep-undefined (rule 5): a sum or product (`op`) some of whose `args` are undefined.
    /// Nested sums (products) of at most `flatten` arguments are flattened first, one level,
    /// as the other constructors flatten them, so that `(u + x) + y` is `u + x + y`; then the
    /// defined arguments are simplified together as usual (and their sum or product spread
    /// into the result, so that `-(x*u)` is `-x*u`) and the undefined ones are kept as written
    /// (sorted), so no identity (`0*u`, `u - u`, `u/u`) can make them vanish. A nested node
    /// that is undefined only as a whole (`1e300*1e300`) is one undefined argument, never
    /// flattened.
    fn keep_undefined(&mut self, op: Op, args: &[Id], flatten: usize) -> Id {
        let additive = op == Op::Add;
        let mut flat: SmallVec<[Id; 8]> = SmallVec::new();
        for &a in args {
            // A nested sum (product) is flattened only when its undefined part survives as
            // an argument: `1e300*1e300` is undefined though both its factors are defined,
            // and spread into `0*(1e300*1e300)` the zero would cancel it.
            let spreads = !self.is_undefined(a) || self.args(a).iter().any(|&b| self.is_undefined(b));
            if self.op(a) == op && self.args(a).len() <= flatten && spreads {
                flat.extend_from_slice(self.args(a));
            } else {
                flat.push(a);
            }
        }
        let (mut bad, clean): (SmallVec<[Id; 8]>, SmallVec<[Id; 8]>) =
            flat.iter().copied().partition(|&a| self.is_undefined(a));
        bad.sort_unstable();
        let rest = match clean.len() {
            0 => None,
            _ if additive => Some(self.add(&clean)),
            _ => Some(self.mul(&clean)),
        };
        // The neutral element adds nothing (`fit` restores a tensor shape it carried).
        let neutral = if additive { 0.0 } else { 1.0 };
        let rest = rest.filter(|&r| self.as_num(r).or_else(|| self.broadcast_num(r)) != Some(neutral));
        // The defined part's own arguments, if it is a sum (product) that would be flattened:
        // then a coefficient stays the coefficient (`-x*u`, not `(-x)*u`).
        let rest: SmallVec<[Id; 8]> = match rest {
            Some(r) if self.op(r) == op && self.args(r).len() <= flatten => self.args(r).into(),
            Some(r) => smallvec::smallvec![r],
            None => SmallVec::new(),
        };
        let mut out: SmallVec<[Id; 8]> = SmallVec::new();
        if additive {
            // A constant term comes last in a sum, a coefficient first in a product.
            out.extend(bad);
            out.extend(rest);
        } else {
            out.extend(rest);
            out.extend(bad);
        }
        match out.len() {
            1 => out[0],
            _ => self.intern(op, &out),
        }
    }

    /// `a * b` where `a` or `b` is shared (see [`SHARE_LIMIT`]): canonical, except that a
    /// product argument of more than [`SHARE_LIMIT`] factors stays one factor.
    pub fn mul_shared(&mut self, a: Id, b: Id) -> Id {
        self.mul_within(&[a, b], SHARE_LIMIT)
    }

    /// [`Graph::mul_shared`] with another share limit.
    pub fn mul_shared_within(&mut self, a: Id, b: Id, limit: usize) -> Id {
        self.mul_within(&[a, b], limit)
    }

    /// `a * b` with neither flattened: a step of a prefix or suffix product, whose
    /// predecessor is shared by the next step and by a partial.
    pub fn mul_step(&mut self, a: Id, b: Id) -> Id {
        self.mul_within(&[a, b], 0)
    }

    /// The sum of `terms`, some of which are shared (see [`SHARE_LIMIT`]): canonical, except
    /// that a sum argument of more than [`SHARE_LIMIT`] terms stays one term.
    pub fn add_shared(&mut self, terms: &[Id]) -> Id {
        self.add_shared_within(terms, SHARE_LIMIT)
    }

    /// [`Graph::add_shared`] with another share limit.
    pub fn add_shared_within(&mut self, terms: &[Id], limit: usize) -> Id {
        let shape = self.broadcast_of(terms);
        let r = if terms.iter().any(|&t| self.is_undefined(t)) {
            self.keep_undefined(Op::Add, terms, limit)
        } else {
            self.add_elementwise_within(terms, limit)
        };
        self.fit(r, shape)
    }

    /// [`Graph::mul`], flattening nested products of at most `flatten` factors.
    fn mul_within(&mut self, factors: &[Id], flatten: usize) -> Id {
        let shape = self.broadcast_of(factors);
        let r = if factors.iter().any(|&f| self.is_undefined(f)) {
            self.keep_undefined(Op::Mul, factors, flatten)
        } else {
            self.mul_elementwise_within(factors, flatten)
        };
        self.fit(r, shape)
    }

    fn add_elementwise(&mut self, terms: &[Id]) -> Id {
        self.add_elementwise_within(terms, FLATTEN_LIMIT)
    }

    fn add_elementwise_within(&mut self, terms: &[Id], flatten: usize) -> Id {
        // add-flatten, add-fold: split numbers from the rest, one level of nested sums.
        let mut numbers: SmallVec<[f64; 4]> = SmallVec::new();
        let mut rest: SmallVec<[Term; 8]> = SmallVec::new();
        let push = |g: &Graph, t: Id, numbers: &mut SmallVec<[f64; 4]>, rest: &mut SmallVec<[Term; 8]>| {
            // A broadcast number is a number here: `add` restores the sum's shape at the end.
            if let Some(x) = g.as_num(t).or_else(|| g.broadcast_num(t)) {
                numbers.push(x);
            } else if g.op(t) == Op::Mul {
                let (coef, skip) = match g.as_num(g.args(t)[0]) {
                    Some(c) => (c, 1),
                    None => (1.0, 0),
                };
                rest.push(Term { coef, node: t, skip: Some(skip) });
            } else {
                rest.push(Term { coef: 1.0, node: t, skip: None });
            }
        };
        for &t in terms {
            if self.op(t) == Op::Add && self.args(t).len() <= flatten {
                for &u in self.args(t) {
                    push(self, u, &mut numbers, &mut rest);
                }
            } else if let Some((c, inner)) =
                self.scaled_sum(t).filter(|&(_, s)| terms.len() > 1 && self.args(s).len() <= flatten)
            {
                // add-distribute: c*(a + b) inside a sum becomes c*a + c*b, so that like
                // terms meet (`(x + 1) - (x - 1)` is 2). Only small inner sums, so chains
                // of nested sums cannot grow quadratically; and only among other terms (a
                // sum of one term, such as an adjoint with one contribution, is left as it
                // is: spreading it would only cost operations).
                for k in 0..self.args(inner).len() {
                    let u = self.args(inner)[k];
                    let cn = self.num(c);
                    let cu = self.mul(&[cn, u]);
                    push(self, cu, &mut numbers, &mut rest);
                }
            } else {
                push(self, t, &mut numbers, &mut rest);
            }
        }
        // add-collect: sort by key, then merge runs of equal keys.
        rest.sort_by(|a, b| self.key(a).cmp(self.key(b)));
        let mut out: SmallVec<[Id; 8]> = SmallVec::new();
        let mut i = 0;
        while i < rest.len() {
            let mut j = i + 1;
            let mut coef = rest[i].coef;
            while j < rest.len() && self.key(&rest[j]) == self.key(&rest[i]) {
                coef += rest[j].coef;
                j += 1;
            }
            let t = &rest[i];
            if !coef.is_finite() {
                // Rule 3: coefficients that overflow are not combined into inf.
                out.extend(rest[i..j].iter().map(|t| t.node));
            } else if j == i + 1 || coef != 0.0 {
                let term = if j == i + 1 {
                    t.node // a lone term is already canonical
                } else {
                    let mut factors: SmallVec<[Id; 8]> = SmallVec::new();
                    factors.push(self.num(coef));
                    factors.extend_from_slice(self.key(t));
                    self.mul(&factors)
                };
                if !self.is_num(term, 0.0) {
                    out.push(term);
                }
            }
            i = j;
        }
        out.sort_unstable();
        // add-zero, add-fold (only when the sum stays finite: rule 3).
        let total: f64 = numbers.iter().sum();
        if total.is_finite() {
            if total != 0.0 || out.is_empty() {
                out.push(self.num(total));
            }
        } else {
            // keep-undefined (rule 5): numbers whose sum overflows are one term of their own,
            // which has no value.
            let ids: SmallVec<[Id; 4]> = numbers.iter().map(|&x| self.num(x)).collect();
            out.push(if ids.len() == 1 { ids[0] } else { self.intern(Op::Add, &ids) });
        }
        match out.len() {
            1 => out[0],
            _ => self.intern(Op::Add, &out),
        }
    }

    fn mul_elementwise(&mut self, factors: &[Id]) -> Id {
        self.mul_elementwise_within(factors, FLATTEN_LIMIT)
    }

    fn mul_elementwise_within(&mut self, factors: &[Id], flatten: usize) -> Id {
        // mul-flatten, mul-fold, mul-zero.
        let mut coef = 1.0;
        let mut numbers: SmallVec<[f64; 4]> = SmallVec::new();
        // The numbers' product in the order given (as written, for a chain `a*b*c`), until it
        // overflows.
        let mut fold = 1.0f64;
        let mut overflow = false;
        let mut zero = false;
        // (base, exponent or None for 1, the factor as given)
        let mut powers: SmallVec<[(Id, Option<Id>, Id); 8]> = SmallVec::new();
        // Each factor, and the factors of a product among them: one level only, so that a
        // chain of nested products built by `mul_step` is not unrolled into every product
        // over it. (A plain nested loop, not a stack collected up front: collecting it and
        // moving it cost a store-forwarding stall on every call.)
        for &top in factors {
            let inner: &[Id] = match self.op(top) {
                Op::Mul if self.args(top).len() <= flatten => self.args(top),
                _ => std::slice::from_ref(&top),
            };
            for &f in inner {
                // A broadcast number is a number here: `mul` restores the shape at the end.
                if let Some(x) = self.as_num(f).or_else(|| self.broadcast_num(f)) {
                    if x == 0.0 && !overflow {
                        zero = true;
                        break;
                    }
                    numbers.push(x);
                    fold *= x;
                    overflow |= !fold.is_finite();
                    continue;
                }
                match self.op(f) {
                    Op::Pow => powers.push((self.args(f)[0], Some(self.args(f)[1]), f)),
                    _ => powers.push((f, None, f)),
                }
            }
            if zero {
                return self.num(0.0);
            }
        }
        for &x in &numbers {
            coef *= x;
        }
        if !coef.is_finite() {
            // Rule 3: keep the numbers apart rather than fold them into inf. That includes a
            // zero after them (`1e300*1e300*0`): the product as written overflows before the
            // zero could cancel it, so it has no value (rule 5).
            coef = 1.0;
        } else {
            numbers.clear();
        }
        // mul-square, mul-collect, mul-cancel: like bases add their exponents.
        powers.sort_unstable_by_key(|&(b, _, f)| (b, f));
        let mut out: SmallVec<[Id; 8]> = SmallVec::new();
        let mut i = 0;
        while i < powers.len() {
            let base = powers[i].0;
            let mut j = i + 1;
            while j < powers.len() && powers[j].0 == base {
                j += 1;
            }
            let factor = if j == i + 1 {
                powers[i].2 // a lone factor is already canonical
            } else {
                let mut exps: SmallVec<[Id; 4]> = SmallVec::new();
                for &(_, e, _) in &powers[i..j] {
                    exps.push(match e {
                        Some(e) => e,
                        None => self.num(1.0),
                    });
                }
                let e = self.add(&exps);
                self.pow(base, e)
            };
            match self.as_num(factor) {
                Some(x) if (coef * x).is_finite() => coef *= x,
                _ => out.push(factor),
            }
            i = j;
        }
        if coef == 0.0 && numbers.is_empty() {
            return self.num(0.0);
        }
        out.sort_unstable();
        let mut args: SmallVec<[Id; 8]> = SmallVec::new();
        if coef != 1.0 || (out.is_empty() && numbers.is_empty()) {
            args.push(self.num(coef));
        }
        for &x in &numbers {
            let n = self.num(x);
            args.push(n);
        }
        args.extend(out);
        match args.len() {
            1 => args[0],
            _ => self.intern(Op::Mul, &args),
        }
    }

    fn pow_elementwise(&mut self, base: Id, exp: Id) -> Id {
        let (b, e) = (self.as_num(base), self.as_num(exp));
        match (b, e) {
            (_, Some(0.0)) => return self.num(1.0),                  // pow-zero
            (_, Some(1.0)) => return base,                           // pow-one
            (Some(1.0), _) => return self.num(1.0),                  // pow-base-one
            (Some(0.0), Some(e)) if e > 0.0 => return self.num(0.0), // pow-base-zero
            (Some(b), Some(e)) => {
                // pow-fold
                let r = b.powf(e);
                if r.is_finite() && r != 0.0 && (is_integer(e) || short(r)) {
                    return self.num(r);
                }
            }
            _ => {}
        }
        if self.op(base) == Op::Const(Constant::E) {
            return self.func(Func::Exp, exp); // pow-e
        }
        if let Some(ev) = e
            && self.op(base) == Op::Mul
            && let Some(c) = self.as_num(self.args(base)[0])
            && (is_integer(ev) || c > 0.0)
        {
            // pow-coef: (c*u)^n = c^n * u^n when c^n is a plain number.
            let cn = self.pow(self.args(base)[0], exp);
            if self.as_num(cn).is_some() {
                let rest: Vec<Id> = self.args(base)[1..].to_vec();
                let u = self.mul(&rest);
                let un = self.pow(u, exp);
                return self.mul(&[cn, un]);
            }
        }
        if self.op(base) == Op::Pow && e.is_some_and(is_integer) {
            // pow-pow
            let [b2, e2] = [self.args(base)[0], self.args(base)[1]];
            let e = self.mul(&[e2, exp]);
            return self.pow(b2, e);
        }
        self.intern(Op::Pow, &[base, exp])
    }

    /// `f(arg)` in canonical form.
    pub fn func(&mut self, f: Func, arg: Id) -> Id {
        if self.is_undefined(arg) {
            return self.intern(Op::Func(f), &[arg]); // keep-undefined: `exp(log(-1))` stays
        }
        // The value as written, for a constant argument.
        let value = self.constant_value(arg).map(|x| f.eval(x));
        if let Some(r) = value {
            if !r.is_finite() {
                // keep-undefined: `log(exp(sqrt(2) - 1000))` is log(0) as written (exp
                // underflows), so no identity may give it a value.
                return self.intern(Op::Func(f), &[arg]);
            }
            if self.as_num(arg).is_some() && (short(r) || r == 0.0) {
                return self.num(r); // func-fold
            }
        }
        // On a constant an identity applies only where it gives the value as written:
        // `exp(log(3))` is 3.0000000000000004, and `cos(2)^exp(log(3))` has no value (a
        // negative base to a power that is not an integer) where `cos(2)^3` has one.
        let exact = |g: &Graph, id: Id| value.is_none_or(|r| g.constant_value(id) == Some(r));
        match (f, self.op(arg)) {
            (Func::Log, Op::Const(Constant::E)) => {
                let one = self.num(1.0);
                if exact(self, one) {
                    return one; // log-e
                }
            }
            (Func::Log, Op::Func(Func::Exp)) | (Func::Exp, Op::Func(Func::Log)) => {
                let inner = self.args(arg)[0];
                if exact(self, inner) {
                    return inner; // log-exp, exp-log
                }
            }
            _ => {}
        }
        self.intern(Op::Func(f), &[arg])
    }

    /// `r` (a derivative or a gradient of `source`), kept undefined when `source` is (rule 5):
    /// an expression without a value anywhere has no derivative either. Then `r` becomes
    /// `r + 0*u`, with `u` the first undefined constant under `source`, so that evaluating it
    /// fails naming `u` as evaluating `source` does.
    pub fn keep_undefined_of(&mut self, source: Id, r: Id) -> Id {
        if !self.is_undefined(source) || self.is_undefined(r) {
            return r;
        }
        let origin = self
            .reachable(&[source])
            .into_iter()
            .find(|&n| self.is_undefined(n) && self.args(n).iter().all(|&a| !self.is_undefined(a)));
        let Some(u) = origin else { return r };
        let zero = self.num(0.0);
        let hidden = self.mul(&[zero, u]);
        self.add(&[r, hidden])
    }

    /// `a` broadcast to `shape` (numpy rules; the caller checked they are compatible).
    pub fn broadcast(&mut self, a: Id, shape: ShapeId) -> Id {
        if self.shape_id_of(a) == shape {
            return a;
        }
        let inner = if matches!(self.op(a), Op::Broadcast(_)) { self.args(a)[0] } else { a };
        self.intern(Op::Broadcast(shape), &[inner])
    }

    /// `a` with the same elements in shape `shape` (the caller checked the sizes agree).
    pub fn reshape(&mut self, a: Id, shape: ShapeId) -> Id {
        if self.shape_id_of(a) == shape {
            return a;
        }
        if self.is_num(a, 0.0)
            || matches!(self.op(a), Op::Broadcast(_)) && self.as_num(self.args(a)[0]).is_some()
        {
            // A constant tensor stays a broadcast number.
            let n = if self.as_num(a).is_some() { a } else { self.args(a)[0] };
            return self.broadcast(n, shape);
        }
        let inner = if matches!(self.op(a), Op::Reshape(_)) { self.args(a)[0] } else { a };
        if self.shape_id_of(inner) == shape {
            return inner;
        }
        self.intern(Op::Reshape(shape), &[inner])
    }

    /// The matrix product of two 2-D tensors (the caller checked the inner sizes agree).
    pub fn matmul(&mut self, a: Id, b: Id) -> Id {
        if (self.is_zero(a) || self.is_zero(b)) && !self.is_undefined(a) && !self.is_undefined(b) {
            let (m, n) = (self.shape(a)[0], self.shape(b)[1]);
            let zero = self.num(0.0);
            let s = self.shape_id(&[m, n]);
            return self.broadcast(zero, s);
        }
        self.intern(Op::MatMul, &[a, b])
    }

    /// The number a `Broadcast(Num)` node spreads, if `a` is one.
    pub fn broadcast_num(&self, a: Id) -> Option<f64> {
        match self.op(a) {
            Op::Broadcast(_) => self.as_num(self.args(a)[0]),
            _ => None,
        }
    }

    /// Whether `a` is `0` or a broadcast `0`.
    pub fn is_zero(&self, a: Id) -> bool {
        self.is_num(a, 0.0) || matches!(self.op(a), Op::Broadcast(_)) && self.is_num(self.args(a)[0], 0.0)
    }

    /// Sum over `axis` (removing it), or over everything with `None`.
    pub fn sum(&mut self, a: Id, axis: Option<usize>) -> Id {
        if self.is_scalar(a) {
            return a;
        }
        let op = Op::Sum(axis.map_or(ALL_AXES, |k| k as u8));
        if self.is_zero(a) {
            let zero = self.num(0.0);
            let shape = {
                let mut s = self.shape(a).to_vec();
                match axis {
                    Some(k) => {
                        s.remove(k);
                    }
                    None => s.clear(),
                }
                self.shape_id(&s)
            };
            return self.broadcast(zero, shape);
        }
        if self.op(a) == Op::Mul
            && let Some(c) = self.as_num(self.args(a)[0]).or_else(|| self.broadcast_num(self.args(a)[0]))
        {
            // sum-coef: sum(c*x) is c*sum(x).
            let rest: SmallVec<[Id; 8]> = self.args(a)[1..].iter().copied().collect();
            let shape = self.shape_id_of(a);
            let x = self.mul(&rest);
            let x = self.fit(x, shape);
            let s = self.sum(x, axis);
            let c = self.num(c);
            return self.mul(&[c, s]);
        }
        if let (Op::OneHot(_), Some(k)) = (self.op(a), axis)
            && k + 1 == self.shape(a).len()
        {
            // onehot-rowsum: every one-hot row sums to 1.
            let one = self.num(1.0);
            let s: Vec<usize> = self.shape(a)[..k].to_vec();
            let s = self.shape_id(&s);
            return self.broadcast(one, s);
        }
        self.intern(op, &[a])
    }

    /// Maximum over `axis` (removing it), or over everything with `None`.
    pub fn max(&mut self, a: Id, axis: Option<usize>) -> Id {
        if self.is_scalar(a) {
            return a;
        }
        if let Some(c) = self.broadcast_num(a) {
            let mut s = self.shape(a).to_vec();
            match axis {
                Some(k) => {
                    s.remove(k);
                }
                None => s.clear(),
            }
            let s = self.shape_id(&s);
            let n = self.num(c);
            return self.broadcast(n, s);
        }
        self.intern(Op::Max(axis.map_or(ALL_AXES, |k| k as u8)), &[a])
    }

    /// The transpose of a 2-D tensor (`transpose(transpose(x))` is `x`).
    pub fn transpose(&mut self, a: Id) -> Id {
        if self.shape(a).len() < 2 {
            return a;
        }
        if self.op(a) == Op::Transpose {
            return self.args(a)[0];
        }
        if self.is_zero(a) {
            let s: Vec<usize> = self.shape(a).iter().rev().copied().collect();
            let s = self.shape_id(&s);
            let zero = self.num(0.0);
            return self.broadcast(zero, s);
        }
        self.intern(Op::Transpose, &[a])
    }

    /// `log(softmax(a))` over the last axis.
    pub fn log_softmax(&mut self, a: Id) -> Id {
        self.intern(Op::LogSoftmax, &[a])
    }

    /// One-hot rows of width `classes` for the integer labels `a`.
    pub fn one_hot(&mut self, a: Id, classes: usize) -> Id {
        self.intern(Op::OneHot(classes as u32), &[a])
    }

    /// The number node `x` (a shorthand for tests and builders).
    pub fn num_id(&mut self, x: f64) -> Id {
        self.num(x)
    }

    pub fn neg(&mut self, a: Id) -> Id {
        let m = self.num(-1.0);
        self.mul(&[m, a])
    }

    /// `a / b`.
    pub fn div_by(&mut self, a: Id, b: Id) -> Id {
        let r = self.recip(b);
        self.mul(&[a, r])
    }

    pub fn sub(&mut self, a: Id, b: Id) -> Id {
        let nb = self.neg(b);
        self.add(&[a, nb])
    }

    pub fn recip(&mut self, a: Id) -> Id {
        let m = self.num(-1.0);
        self.pow(a, m)
    }

    pub fn square(&mut self, a: Id) -> Id {
        let two = self.num(2.0);
        self.pow(a, two)
    }

    pub fn powi(&mut self, a: Id, n: f64) -> Id {
        let e = self.num(n);
        self.pow(a, e)
    }
}
