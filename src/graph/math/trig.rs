//! `sin` and `cos`: what the interpreter evaluates and compiled code calls (`sd_sin`,
//! `sd_cos`, and `sd_sin_x2`, `sd_cos_x2` for two points).
//!
//! **The algorithm.**
//! 1. *Reduction.* `k = round(x * 2/π)` (adding `1.5 * 2^52`, whose sum's low bits hold `k`),
//!    and `r = x - k π/2` with π/2 in three parts: `PIO2_1` and `PIO2_2` of 33 significant bits
//!    each, so `k * PIO2_1` and `k * PIO2_2` are exact for `|k| < 2^20`, and `PIO2_3`, the rest
//!    rounded (together π/2 to about 2^-125). `a = x - k PIO2_1` is exact (the two are close);
//!    `r_hi = a - w` with `w = k PIO2_2 + k PIO2_3` rounded once, its rounding error recovered
//!    exactly (fast two-sum), so `r = r_hi + r_lo` is off by at most `|k| 2^-87`.
//! 2. *Kernels on `|r| <= π/4`*, Taylor series (the first neglected term is below 2^-60
//!    relative there), evaluated by Estrin's scheme (a short dependency chain):
//!    - `sin(r_hi + r_lo) = r_hi + (r_hi^3 (-1/3! + z/5! - ... + z^7/17!) + r_lo (1 - z/2))`
//!      with `z = r_hi^2`: the large part `r_hi` is added last, so the result is rounded once
//!      on top of a small relative error in the rest;
//!    - `cos(r_hi + r_lo) = w + (((1 - w) - z/2) + (z^2 (1/4! - z/6! + ... + z^7/18!) -
//!      r_hi r_lo))` with `w = 1 - z/2`: `(1 - w) - z/2` is exactly `w`'s rounding error
//!      (Sterbenz), which the last addition puts back.
//! 3. *Quadrant.* With `n = k mod 4`, `sin x` is `sin r`, `cos r`, `-sin r`, `-cos r` for `n`
//!    = 0, 1, 2, 3, and `cos x` is `cos r`, `-sin r`, `-cos r`, `sin r`. Only the quadrant's
//!    kernel is computed, and below π/4 not even the reduction (there `k = 0` and it would give
//!    `r_hi = x`, `r_lo = +0` exactly). Two lanes in one quadrant (or both below π/4) run one
//!    vector kernel; two in different quadrants run both and each takes its own; a lane that
//!    libm answers sends both to the one-lane code. Either way a lane's result is the same
//!    operations on the same values.
//!
//! **Where libm answers instead:** `|x| >= 2^19` (where `k` no longer fits the exact
//! products), infinities and NaN, and the rare reduction that cancels to `|r| < |k| 2^-27`
//! (where the reduction's error could pass 2^-60 of `r`).
//! libm's value is then the answer in every form, so lanes and the interpreter still agree.
//!
//! **Error bound:** 0.9 ulp for `|x| < 2^19` against a double-double reference (the tests
//! print the worst case they find, typically about 0.75); `sin(±0) = ±0` and `sin x = x` for
//! `|x| < 2^-27`, where that is the correctly rounded value.
//!
//! Worked example, `sin(2)`: `k = round(1.273...) = 1`, `r = 2 - π/2 = 0.4292...`, `n = 1`, so
//! `sin 2 = cos(0.4292...) = 0.9092974268256817`.

use super::Lanes;
use super::exp::SHIFTER;

/// `2/π`, rounded.
const INV_PIO2: f64 = f64::from_bits(0x3fe4_5f30_6dc9_c883);
/// π/2 in three parts (33, 33 and 53 significant bits).
const PIO2_1: f64 = f64::from_bits(0x3ff9_21fb_5440_0000);
const PIO2_2: f64 = f64::from_bits(0x3dd0_b461_1a60_0000);
const PIO2_3: f64 = f64::from_bits(0x3ba3_198a_2e03_7073);
/// Below this `|x|`, the reduction is exact enough; from it on, libm.
const LIMIT: f64 = 524_288.0; // 2^19
/// A reduced `|r|` below `|k|` times this goes to libm.
const CANCELLED: f64 = 7.450_580_596_923_828e-9; // 2^-27
/// Below this `|x|`, `k = 0` (`x * 2/π` rounds to 0 well before π/4).
const PIO4: f64 = std::f64::consts::FRAC_PI_4;
/// Below this `|x|`, `sin x = x` exactly rounded.
const TINY: f64 = 7.450_580_596_923_828e-9; // 2^-27

/// `sin(r)` Taylor coefficients: `S[i]` multiplies `r^(2i+3)`.
const S: [f64; 8] = [
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
    -1.0 / 1_307_674_368_000.0,
    1.0 / 355_687_428_096_000.0,
];
/// `cos(r)` Taylor coefficients: `C[i]` multiplies `r^(2i+4)`.
const C: [f64; 8] = [
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
    -1.0 / 87_178_291_200.0,
    1.0 / 20_922_789_888_000.0,
    -1.0 / 6_402_373_705_728_000.0,
];

/// `sin x` in each lane (see the module doc).
#[inline(always)]
pub fn sin<L: Lanes>(x: L) -> L {
    wave(x, SIN)
}

/// `cos x` in each lane (see the module doc).
#[inline(always)]
pub fn cos<L: Lanes>(x: L) -> L {
    wave(x, COS)
}

/// Which of the two [`wave`] computes: the quadrant `cos` starts from, as `cos x = sin(x +
/// π/2)` (`sin`'s table of step 3, one quadrant on).
const SIN: u64 = 0;
const COS: u64 = 1;

/// `sin x` (`shift` = [`SIN`]) or `cos x` ([`COS`]) in each lane.
#[inline(always)]
fn wave<L: Lanes>(x: L, shift: u64) -> L {
    let lanes = || L::from_fn(|i| wave_one(x.lane(i), shift));
    if L::N == 1 {
        return lanes();
    }
    // Every lane below π/4 (and, for `sin`, above the range where `sin x = x`): no reduction.
    if shift == SIN && x.all_within(TINY, PIO4) {
        return sin_kernel(x, L::splat(0.0), x * x);
    }
    if shift == COS && x.all_within(0.0, PIO4) {
        return cos_kernel(x, L::splat(0.0), x * x);
    }
    // Lanes libm answers (beyond 2^19, NaN, infinite; for `sin`, where `sin x = x`) send the
    // pair to the one-lane code. Below π/4 the reduction gives `k = 0`, `r_hi = x`, `r_lo =
    // +0` exactly: what the one-lane code uses there without reducing.
    let low = if shift == SIN { TINY } else { 0.0 };
    if !x.all_within(low, LIMIT) {
        return lanes();
    }
    let (t, hi, lo) = reduce(x);
    if L::any(cancelled(hi, t)) {
        return lanes();
    }
    let z = hi * hi;
    let (odd, sign) = quadrant(t, shift);
    let v = if !L::any(odd) {
        sin_kernel(hi, lo, z)
    } else if L::all(odd) {
        cos_kernel(hi, lo, z)
    } else {
        // Lanes needing different kernels: both, and each lane takes its own.
        L::select(odd, cos_kernel(hi, lo, z), sin_kernel(hi, lo, z))
    };
    v.xor(sign)
}

/// [`wave`] of one value, by branches: what two lanes compute, for the kernel the quadrant
/// takes only. For `|x| < π/4` the reduction is skipped: there `k = 0`, and it would give
/// `r_hi = x`, `r_lo = +0` exactly.
#[inline(always)]
fn wave_one(x: f64, shift: u64) -> f64 {
    let ax = x.abs();
    if ax < PIO4 {
        return match shift {
            SIN if ax < TINY => x,
            SIN => sin_kernel(x, 0.0, x * x),
            _ => cos_kernel(x, 0.0, x * x),
        };
    }
    let (t, hi, lo) = reduce(x);
    // NaN is in no range.
    if !(PIO4..LIMIT).contains(&ax) || f64::any(cancelled(hi, t)) {
        return if shift == SIN { x.sin() } else { x.cos() };
    }
    let z = hi * hi;
    let (odd, sign) = quadrant(t, shift);
    let v = if f64::any(odd) { cos_kernel(hi, lo, z) } else { sin_kernel(hi, lo, z) };
    v.xor(sign)
}

/// Step 1: `(t, r_hi, r_lo)`, with `k` in `t`'s low bits. The chain from `x` to `r_hi` is
/// six operations long (what a call's latency is made of).
#[inline(always)]
fn reduce<L: Lanes>(x: L) -> (L, L, L) {
    let t = x * L::splat(INV_PIO2) + L::splat(SHIFTER);
    let kf = t - L::splat(SHIFTER);
    let a = x - kf * L::splat(PIO2_1); // exact
    // `k (PIO2_2 + PIO2_3)`, rounded once: off by at most `|k| 2^-87`.
    let w = kf * L::splat(PIO2_2) + kf * L::splat(PIO2_3);
    let hi = a - w;
    // `a - w = hi + ((a - hi) - w)` exactly where `|a| >= |w|`, which holds wherever libm
    // does not answer instead (see `cancelled`).
    let lo = (a - hi) - w;
    (t, hi, lo)
}

/// Step 3 from `t`, whose low bits hold `k` (two's complement, so negative `k` too), for
/// [`SIN`] or [`COS`] (`shift`): with `m = k + shift`, the mask of the lanes that take the
/// `cos` kernel (`m` odd) and the sign bit to flip by (`m mod 4` is 2 or 3).
#[inline(always)]
fn quadrant<L: Lanes>(t: L, shift: u64) -> (L, L) {
    let m = t.int_add(shift.wrapping_sub(SHIFTER.to_bits()));
    (m.int_and(1).int_neg(), m.int_and(2).int_shl(62))
}

/// The mask of the lanes whose reduction cancels too far, which libm answers instead; `t`
/// holds `k`. The reduction is off by at most `|k| 2^-87`, so `|r_hi| >= |k| 2^-27` keeps that
/// below 2^-60 of `r` (and `|a| >= |w|` in `reduce`); smaller `|r_hi|`, one argument in
/// millions for `|x| < 100` and in hundreds near `2^19`, goes to libm (as does `|x| >= 2^19`,
/// NaN and infinity, which the callers check first).
#[inline(always)]
fn cancelled<L: Lanes>(hi: L, t: L) -> L {
    let k = t - L::splat(SHIFTER);
    L::less(hi.abs(), k.abs() * L::splat(CANCELLED))
}

/// `c[0] + c[1] z + ... + c[7] z^7` by Estrin's scheme: pairs, then pairs of pairs, so the
/// chain is three multiply-adds long instead of Horner's seven.
#[inline(always)]
fn poly<L: Lanes>(c: &[f64; 8], z: L) -> L {
    let k = |i: usize| L::splat(c[i]);
    let z2 = z * z;
    let z4 = z2 * z2;
    let p01 = k(0) + k(1) * z;
    let p23 = k(2) + k(3) * z;
    let p45 = k(4) + k(5) * z;
    let p67 = k(6) + k(7) * z;
    (p01 + p23 * z2) + (p45 + p67 * z2) * z4
}

#[inline(always)]
fn sin_kernel<L: Lanes>(hi: L, lo: L, z: L) -> L {
    let p = poly(&S, z);
    let half = L::splat(0.5);
    hi + (z * hi * p + lo * (L::splat(1.0) - half * z))
}

#[inline(always)]
fn cos_kernel<L: Lanes>(hi: L, lo: L, z: L) -> L {
    let q = poly(&C, z);
    let one = L::splat(1.0);
    let hz = L::splat(0.5) * z;
    let w = one - hz;
    w + (((one - w) - hz) + (z * z * q - hi * lo))
}

#[cfg(test)]
mod tests {
    use super::super::reference::*;

    /// π/2 in double-double, and `(sin r, cos r)` of a double-double `|r| <= π/4 + ε` by
    /// Taylor series to `r^29`.
    const PIO2: Dd = (f64::from_bits(0x3ff9_21fb_5444_2d18), f64::from_bits(0x3c91_a626_3314_5c07));

    fn taylor(r: Dd) -> (Dd, Dd) {
        let (mut s, mut c): (Dd, Dd) = ((0.0, 0.0), (0.0, 0.0));
        let mut term: Dd = (1.0, 0.0); // r^n / n!
        for n in 0..30u32 {
            let signed = if (n / 2) % 2 == 0 { term } else { (-term.0, -term.1) };
            if n % 2 == 0 {
                c = add(c, signed);
            } else {
                s = add(s, signed);
            }
            term = div_small(mul(term, r), f64::from(n + 1));
        }
        (s, c)
    }

    /// `(sin x, cos x)` in double-double, for `|x| < 2^19` not too close to a multiple of π/2.
    fn sincos_dd(x: f64) -> (Dd, Dd) {
        let k = (x / PIO2.0).round();
        let r = add((x, 0.0), mul((-k, 0.0), PIO2));
        let (s, c) = taylor(r);
        let neg = |a: Dd| (-a.0, -a.1);
        match (k as i64).rem_euclid(4) {
            0 => (s, c),
            1 => (c, neg(s)),
            2 => (neg(s), neg(c)),
            _ => (neg(c), s),
        }
    }

    #[test]
    fn pio2_parts_are_pio2() {
        // The reference's π/2 (to 2^-106) against the three parts.
        let parts = add(add((super::PIO2_1, 0.0), (super::PIO2_2, 0.0)), (super::PIO2_3, 0.0));
        assert!(((parts.0 - PIO2.0) + (parts.1 - PIO2.1)).abs() < 1e-31);
    }

    #[test]
    fn sin_and_cos_are_within_nine_tenths_of_an_ulp() {
        let mut st = Stream(3);
        let mut xs: Vec<f64> = Vec::new();
        for scale in [1e-6, 0.1, 0.8, 3.0, 10.0, 100.0, 1e4, 5e5] {
            xs.extend((0..40_000).map(|_| (st.unit() - 0.5) * 2.0 * scale));
        }
        xs.extend((1..2000).map(|i| f64::from(i) * std::f64::consts::FRAC_PI_4));
        let (mut worst_s, mut worst_c) = ((0.0, 0.0), (0.0, 0.0));
        for &x in &xs {
            let (s, c) = sincos_dd(x);
            for (got, want, worst) in [(super::sin(x), s, &mut worst_s), (super::cos(x), c, &mut worst_c)] {
                // Near a zero the reference's absolute error dominates: skip results below
                // 2^-30 (the reduction test below covers them against libm).
                if want.0.abs() < 1e-9 {
                    continue;
                }
                let e = ulps(got, want);
                if e > worst.0 {
                    *worst = (e, x);
                }
            }
        }
        println!(
            "sin: worst {:.3} ulp at {:e}; cos: worst {:.3} ulp at {:e}",
            worst_s.0, worst_s.1, worst_c.0, worst_c.1
        );
        assert!(worst_s.0 <= 0.9, "sin({:e}) is {} ulp off", worst_s.1, worst_s.0);
        assert!(worst_c.0 <= 0.9, "cos({:e}) is {} ulp off", worst_c.1, worst_c.0);
    }

    /// Special values, tiny and huge arguments, and agreement with libm to 1 ulp elsewhere.
    #[test]
    fn sin_and_cos_edges() {
        let (sin, cos) = (super::sin::<f64>, super::cos::<f64>);
        assert_eq!(sin(0.0).to_bits(), 0f64.to_bits());
        assert_eq!(sin(-0.0).to_bits(), (-0f64).to_bits());
        assert_eq!(cos(0.0), 1.0);
        assert_eq!(cos(-0.0), 1.0);
        assert_eq!(sin(1e-10), 1e-10);
        assert_eq!(sin(-5e-324), -5e-324);
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(sin(x).is_nan() && cos(x).is_nan(), "{x}");
        }
        for x in [1e6, -3e7, 1e22, 1e300] {
            assert_eq!(sin(x), x.sin(), "{x}: libm's");
            assert_eq!(cos(x), x.cos(), "{x}: libm's");
        }
        let close = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 1;
        let mut st = Stream(11);
        for _ in 0..100_000 {
            let x = (st.unit() - 0.5) * 1e6;
            assert!(close(sin(x), x.sin()), "sin({x:e}) = {:e}, libm {:e}", sin(x), x.sin());
            assert!(close(cos(x), x.cos()), "cos({x:e}) = {:e}, libm {:e}", cos(x), x.cos());
        }
        // Near multiples of π/2 (the reduction's hard cases): within one unit of libm's.
        for k in 1..20_000 {
            let x = f64::from(k) * std::f64::consts::FRAC_PI_2;
            for x in [x, f64::from_bits(x.to_bits() + 1), f64::from_bits(x.to_bits() - 1)] {
                assert!(close(sin(x), x.sin()), "sin({x:e}) = {:e}, libm {:e}", sin(x), x.sin());
                assert!(close(cos(x), x.cos()), "cos({x:e}) = {:e}, libm {:e}", cos(x), x.cos());
            }
        }
    }
}
