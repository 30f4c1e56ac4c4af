//! `tanh`: what the interpreter evaluates and compiled code calls (`sd_tanh`, and
//! `sd_tanh_x2` for two points).
//!
//! **The algorithm.** By the size of `|x|` (and `tanh(-x) = -tanh x`):
//! - below 2^-28, `tanh x = x` (the correctly rounded value; `±0` keeps its sign);
//! - below 1/16, the odd Taylor series `x + x^3 T(x^2)` to `x^15`;
//! - below `ln(3)/2` (where `tanh x = 1/2`), `t / (t + 2)` with `t = expm1(2|x|) = e^(2|x|) - 1`;
//! - below 22, `1 - 2 / (t + 2)`, which rounds the small `2/(t + 2)` instead of cancelling;
//! - from 22 on, `±1` (`1 - tanh x < 2^-62`).
//!
//! `expm1(y)` for `0 < y < 44` comes from the `exp` table (`exp.rs`):
//! `y = (128 e + j) ln2/128 + r` with `|r| <= ln2/256`, so with `s = 2^e · 2^(j/128)` (exact: a
//! table entry times a power of two) and `tail` the entry's relative rounding error,
//!
//! ```text
//! expm1(y) = s (1 + tail) e^r - 1  ≈  (s - 1) + s (tail + expm1(r))
//! ```
//!
//! where `s - 1` is exact (Sterbenz for `s <= 2`; for larger `s` a multiple of its own unit),
//! `expm1(r)` is the Taylor series of `exp.rs` without its leading 1, and the sum is kept as
//! `hi + lo` (its rounding error recovered exactly). The quotients are then corrected, to first
//! order, for `lo` and for the rounding of `t + 2`, so what remains is about one rounding of
//! the division and one of the result.
//!
//! One value computes only the form its size takes. Two lanes stay one vector: they compute
//! each form that either of them takes, and each lane keeps its own by masks (a branch per
//! lane would mispredict on mixed arguments); `1 - 2/(t + 2)` alone, the common case, needs
//! one division instead of two. Only a pair with a NaN or an infinity is computed one value
//! at a time.
//!
//! **Error bound:** 1.05 ulp against a double-double reference (the tests print the worst case
//! they find); every step is a plain IEEE operation, so two lanes compute what one does.
//!
//! Worked example, `tanh(0.5)`: `y = 1`, `expm1(1) = 1.718281828459045`, and `t / (t + 2) =
//! 0.46211715726000974`.

use super::Lanes;
use super::exp::{BIAS, C2, C3, C4, C5, INV_LN2N, LN2N_HI, LN2N_LO, SHIFTER, entry};

/// Below this `|x|`, `tanh x = x`.
const TINY: f64 = 3.725_290_298_461_914e-9; // 2^-28
/// Below this `|x|`, the odd Taylor series.
const SMALL: f64 = 0.0625;
/// From this `|x|` on (where `tanh x` passes 1/2), `1 - 2/(t + 2)`.
const HALF: f64 = 0.549_306_144_334_054_8; // ln(3)/2
/// From this `|x|` on, `tanh x = ±1`.
const HUGE: f64 = 22.0;

/// `tanh x = x (1 + z T(z))`, `z = x^2`, for `|x| < SMALL`: Taylor's coefficients (the
/// first neglected term is below 2^-64 relative there).
const T: [f64; 7] = [
    -1.0 / 3.0,
    2.0 / 15.0,
    -17.0 / 315.0,
    62.0 / 2835.0,
    -1382.0 / 155_925.0,
    21844.0 / 6_081_075.0,
    -929_569.0 / 638_512_875.0,
];

/// `tanh x` in each lane (see the module doc).
#[inline(always)]
pub fn tanh<L: Lanes>(x: L) -> L {
    let lanes = || L::from_fn(|i| tanh_one(x.lane(i)));
    // One value branches.
    if L::N == 1 {
        return lanes();
    }
    let ax = x.abs();
    // The common cases first: every lane takes a quotient, or every lane the series.
    if x.all_within(SMALL, HUGE) {
        return quotient(ax, &Quotients::new(ax)).copysign(x);
    }
    if x.all_within(TINY, SMALL) {
        return series(ax).copysign(x);
    }
    // A NaN or an infinity: one lane at a time.
    if !x.all_within(0.0, f64::INFINITY) {
        return lanes();
    }
    // Any other pair stays one vector: each form some lane takes is computed for both lanes,
    // and each lane keeps its own (by masks).
    let small = L::less(ax, L::splat(SMALL));
    let m = if L::all(small) {
        series(ax)
    } else {
        let q = quotient(ax, &Quotients::new(ax));
        if L::any(small) { L::select(small, series(ax), q) } else { q }
    };
    // `x` itself below TINY, 1 from HUGE on.
    let m = L::select(L::less(ax, L::splat(TINY)), ax, m);
    let m = L::select(L::less(ax, L::splat(HUGE)), m, L::splat(1.0));
    m.copysign(x)
}

/// The quotient form of each lane's size, of two lanes: the one both take (`high` saves a
/// division), or both and each lane's own.
#[inline(always)]
fn quotient<L: Lanes>(ax: L, q: &Quotients<L>) -> L {
    let low = L::less(ax, L::splat(HALF));
    if !L::any(low) {
        q.high()
    } else if L::all(low) {
        q.low()
    } else {
        L::select(low, q.low(), q.high())
    }
}

/// [`tanh`] of one value, by branches: the form its size takes, computed as two lanes
/// compute it.
#[inline(always)]
fn tanh_one(x: f64) -> f64 {
    let ax = x.abs();
    // A NaN `x` comes through.
    let m = if ax.is_nan() || ax < TINY {
        return x;
    } else if ax < SMALL {
        series(ax)
    } else if ax < HUGE {
        let q = Quotients::new(ax);
        if ax < HALF { q.low() } else { q.high() }
    } else {
        1.0
    };
    m.copysign(x)
}

/// `|x| (1 + x^2 T(x^2))` for `|x| < SMALL`.
#[inline(always)]
fn series<L: Lanes>(ax: L) -> L {
    let z = ax * ax;
    let c = |i: usize| L::splat(T[i]);
    let p = c(0) + z * (c(1) + z * (c(2) + z * (c(3) + z * (c(4) + z * (c(5) + z * c(6))))));
    ax + ax * (z * p)
}

/// What both quotient forms share, from `t = expm1(2|x|)`: [`low`](Self::low) is `t / (t +
/// 2)` and [`high`](Self::high) is `1 - 2 / (t + 2)`, each corrected for the roundings of
/// `t` and `t + 2` (see the module doc).
struct Quotients<L> {
    t: L,
    t_lo: L,
    d: L,
    e: L,
    q2: L,
    inv: L,
}

impl<L: Lanes> Quotients<L> {
    #[inline(always)]
    fn new(ax: L) -> Self {
        // Clamped so that `expm1` stays in its range in lanes that do not use it.
        let y = L::lesser(ax, L::splat(HUGE));
        let y = y + y;
        let (t, t_lo) = expm1(y);
        // `t + t_lo + 2 = d + e` exactly (two-sum), so the quotients can be corrected for
        // the rounding of `t` and of `d` to first order.
        let two = L::splat(2.0);
        let d = t + two;
        let bv = d - t;
        let av = d - bv;
        let e = (t - av) + (two - bv) + t_lo;
        // The corrections are small, so `1/d = q2/2` (exact) multiplies instead of dividing.
        let q2 = two / d;
        let inv = L::splat(0.5) * q2;
        Quotients { t, t_lo, d, e, q2, inv }
    }

    /// `t / (t + 2)`, for `|x| < HALF`: the form that needs a second division.
    #[inline(always)]
    fn low(&self) -> L {
        let q = self.t / self.d;
        q + (self.t_lo - q * self.e) * self.inv
    }

    /// `1 - 2 / (t + 2)`, for `|x| >= HALF`.
    #[inline(always)]
    fn high(&self) -> L {
        L::splat(1.0) - (self.q2 - self.q2 * (self.e * self.inv))
    }
}

/// `e^y - 1` for `1/8 <= y <= 44` (see the module doc) as an unevaluated sum `hi + lo`; other
/// lanes get garbage, never a panic.
#[inline(always)]
fn expm1<L: Lanes>(y: L) -> (L, L) {
    let t = y * L::splat(INV_LN2N) + L::splat(SHIFTER);
    let kf = t - L::splat(SHIFTER);
    let r = (y - kf * L::splat(LN2N_HI)) - kf * L::splat(LN2N_LO);
    let (s, tail) = scale(t);
    let r2 = r * r;
    let (c2, c3, c4, c5) = (L::splat(C2), L::splat(C3), L::splat(C4), L::splat(C5));
    let p = r + r2 * (c2 + r * c3) + r2 * r2 * (c4 + r * c5);
    let a = s - L::splat(1.0); // exact
    let b = s * (tail + p);
    // `|a| >= |b|` for `y >= 1/8` (`a >= 2^(23/128) - 1`, `|b| < 0.003 s`): fast two-sum.
    let hi = a + b;
    (hi, (a - hi) + b)
}

/// `(2^e · 2^(j/128), tail)` for the `k = 128 e + j` in `t`'s low bits (`0 <= e <= 63` for
/// the arguments `expm1` takes).
#[inline(always)]
fn scale<L: Lanes>(t: L) -> (L, L) {
    let (kb, top, tail) = entry(t);
    let e = kb.int_shr(7).int_add((BIAS >> 7).wrapping_neg() as u64).int_and(127);
    (top.int_sum(e.int_shl(52)), tail)
}

#[cfg(test)]
mod tests {
    use super::super::reference::*;

    /// `tanh x` in double-double for `2^-28 <= x < 22`, from `e^(2x)` by Taylor series of
    /// `e^(2x/1024)` squared ten times: `(E - 1) / (E + 1)`.
    fn tanh_dd(x: f64) -> Dd {
        let s = (2.0 * x / 1024.0, 0.0);
        // e^s - 1 by its series (no cancellation), then (1 + m)^2 - 1 = m (2 + m), ten times.
        let mut term: Dd = s;
        let mut m: Dd = s;
        for i in 2..=14 {
            term = div_small(mul(term, s), f64::from(i));
            m = add(m, term);
        }
        for _ in 0..10 {
            m = mul(m, add(m, (2.0, 0.0)));
        }
        div(m, add(m, (2.0, 0.0)))
    }

    #[test]
    fn tanh_is_within_one_ulp_and_a_twentieth() {
        let mut st = Stream(5);
        let mut xs: Vec<f64> = Vec::new();
        for scale in [1e-7, 1e-3, 0.05, 0.5, 1.0, 3.0, 10.0, 21.0] {
            xs.extend((0..40_000).map(|_| st.unit() * scale));
        }
        let mut worst = (0.0, 0.0);
        for &x in &xs {
            if x < super::TINY {
                continue;
            }
            let e = ulps(super::tanh(x), tanh_dd(x));
            if e > worst.0 {
                worst = (e, x);
            }
            assert_eq!(super::tanh(-x), -super::tanh(x), "odd at {x}");
        }
        println!("tanh: worst {:.3} ulp at {:e}", worst.0, worst.1);
        assert!(worst.0 <= 1.05, "tanh({:e}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn tanh_edges() {
        let tanh = super::tanh::<f64>;
        assert_eq!(tanh(0.0).to_bits(), 0f64.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0f64).to_bits());
        assert_eq!(tanh(1e-10), 1e-10);
        assert_eq!(tanh(5e-324), 5e-324);
        assert!(tanh(f64::NAN).is_nan());
        for (x, want) in
            [(f64::INFINITY, 1.0), (f64::NEG_INFINITY, -1.0), (22.0, 1.0), (1e300, 1.0), (-50.0, -1.0)]
        {
            assert_eq!(tanh(x), want, "{x}");
        }
        // Against libm: within two units everywhere in between.
        let close = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 2;
        let mut st = Stream(9);
        for _ in 0..100_000 {
            let x = (st.unit() - 0.5) * 50.0 * st.unit().powi(3);
            assert!(close(tanh(x), x.tanh()), "tanh({x:e}) = {:e}, libm {:e}", tanh(x), x.tanh());
        }
    }
}
