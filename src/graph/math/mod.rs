//! symdiff's own `exp`, `sigmoid`, `sin`, `cos` and `tanh` in f64: the definitions the interpreter
//! evaluates and compiled code calls (`jit::runtime`'s `sd_exp`, `sd_sin`, ... and their pair
//! and four-lane forms `sd_exp_x2`, `sd_exp_x4`, ...), one point at a time, two or four
//! (`eval_many`).
//!
//! Why not libm's: compiled code must agree with the interpreter to the bit, and points
//! computed together must each get what one point computed alone gets. libm computes one
//! value per call, so two points cost two calls; these functions are written once,
//! generically over [`Lanes`], and run on one `f64`, on two in one SSE register ([`X2`]) or
//! on four (`lanes4.rs`: [`X4`], two SSE registers, or `Y4`, one AVX register) with the same
//! IEEE operations in the same order (no fused multiply-add, no operation that depends on
//! another lane), so every lane is bit-identical to the one-lane result. Where the lanes take
//! the same path (the same quadrant, the same form of `tanh`), several cost about what one
//! does: the arithmetic is one vector instruction for all, integer steps too, and only the
//! table loads run lane by lane (one gather with AVX2). Where they take different paths, both
//! paths run as vectors and each lane keeps its own result by masks ([`Lanes::select`]).
//!
//! What each owns, and its measured error against a double-double reference (the tests print
//! the worst case they find):
//! - [`exp`](exp::exp) (`exp.rs`): Tang's table-driven scheme, ≤ 0.51 ulp; and `sigmoid`, two
//!   quotients of it that cannot overflow;
//! - [`sin`](trig::sin), [`cos`](trig::cos) (`trig.rs`): Cody–Waite reduction by π/2 in three
//!   parts and Taylor kernels on `[-π/4, π/4]`, ≤ 0.9 ulp for `|x| < 2^19`; beyond that, and
//!   in the rare case where the reduction cancels too many bits, libm's value (the same in
//!   every lane and in the interpreter);
//! - [`tanh`](tanh::tanh) (`tanh.rs`): an odd series near 0, else `t / (t + 2)` or
//!   `1 - 2 / (t + 2)` with `t = expm1(2|x|)` from the `exp` table, ≤ 1.05 ulp.
//!
//! The JIT also emits `exp` inline in loop bodies (`jit::scalar::math`), one instruction per
//! operation of `exp.rs`; the other transcendentals (`log`, `tan`, ...) are libm's.
//!
//! Invariant: nothing here allocates or reads global state, and a lane's result never depends
//! on another lane (a form of several lanes looks at all to choose *how* to compute, never
//! *what*): each function's `X2`, `X4` and `Y4` forms equal its `f64` form applied to each
//! lane, to the bit (tested over random and special inputs).

mod exp;
mod lanes4;
mod tanh;
mod trig;

pub use exp::{BIAS, C2, C3, C4, C5, EXP_HI, EXP_LO, INV_LN2N, LN2N_HI, LN2N_LO, SHIFTER, TABLE};
pub use exp::{exp as exp_lanes, sigmoid as sigmoid_lanes};
pub use tanh::tanh as tanh_lanes;
pub use trig::{cos as cos_lanes, sin as sin_lanes};

use std::ops::{Add, Div, Mul, Sub};

/// `e^x` of one value (see [`exp::exp`]).
pub fn exp(x: f64) -> f64 {
    exp::exp(x)
}

/// The logistic function of one value (see [`exp::sigmoid`]).
pub fn sigmoid(x: f64) -> f64 {
    exp::sigmoid(x)
}

/// `sin x` of one value (see [`trig::sin`]).
pub fn sin(x: f64) -> f64 {
    trig::sin(x)
}

/// `cos x` of one value (see [`trig::cos`]).
pub fn cos(x: f64) -> f64 {
    trig::cos(x)
}

/// `tanh x` of one value (see [`tanh::tanh`]).
pub fn tanh(x: f64) -> f64 {
    tanh::tanh(x)
}

/// One `f64` or several, computed on together: IEEE arithmetic lane by lane, and per-lane
/// access for the steps that are not arithmetic (table loads, integer bit work, choices).
pub trait Lanes:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    /// How many lanes.
    const N: usize;
    /// `x` in every lane.
    fn splat(x: f64) -> Self;
    /// Lane `i`.
    fn lane(self, i: usize) -> f64;
    /// The lanes `f(0), f(1), ...`, computed in that order.
    fn from_fn(f: impl FnMut(usize) -> f64) -> Self;
    /// `if a < b { a } else { b }` in each lane (x86's `minpd`: a NaN `b` comes through).
    fn lesser(a: Self, b: Self) -> Self;
    /// `if a > b { a } else { b }` in each lane (x86's `maxpd`).
    fn greater(a: Self, b: Self) -> Self;
    /// `|x|` in each lane (the sign bit cleared).
    fn abs(self) -> Self;
    /// `-x` in each lane (the sign bit flipped).
    fn neg(self) -> Self;
    /// `|self|` with the sign of `sign`, in each lane.
    fn copysign(self, sign: Self) -> Self;

    /// Whether `lo <= |x| < hi` in every lane (false for NaN).
    fn all_within(self, lo: f64, hi: f64) -> bool;

    /// The entry of `exp`'s table ([`TABLE`]) at each lane's bits and 127, as the bits of
    /// its two halves (the value rounded, its relative error).
    fn table(self) -> (Self, Self);

    // Masks and bit patterns: how a two-lane form lets each lane take its own path without
    // leaving the vector. A *mask* has every bit of a lane set (true) or none (false).

    /// The mask of `a < b`, in each lane (false for NaN).
    fn less(a: Self, b: Self) -> Self;
    /// `yes` where `mask` is true, `no` where it is false, in each lane.
    fn select(mask: Self, yes: Self, no: Self) -> Self;
    /// Whether `mask` is true in some lane.
    fn any(mask: Self) -> bool;
    /// Whether `mask` is true in every lane.
    fn all(mask: Self) -> bool;
    /// The bits of `self` and `other`, exclusive-or'ed.
    fn xor(self, other: Self) -> Self;
    /// The bits of each lane as a 64-bit integer, plus `k` (wrapping).
    fn int_add(self, k: u64) -> Self;
    /// The bits of each lane, and'ed with `k`.
    fn int_and(self, k: u64) -> Self;
    /// The bits of each lane as a 64-bit integer, negated (wrapping): `1` becomes a mask.
    fn int_neg(self) -> Self;
    /// The bits of each lane shifted left by `n` (below 64).
    fn int_shl(self, n: u32) -> Self;
    /// The bits of each lane shifted right by `n` (below 64), zeros shifted in.
    fn int_shr(self, n: u32) -> Self;
    /// The bits of each lane of `self` and `other` as 64-bit integers, added (wrapping).
    fn int_sum(self, other: Self) -> Self;
    /// The bits of each lane of `self` and `other` as 64-bit integers, `self - other`
    /// (wrapping).
    fn int_sub(self, other: Self) -> Self;
}

impl Lanes for f64 {
    const N: usize = 1;
    #[inline(always)]
    fn splat(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn lane(self, _: usize) -> f64 {
        self
    }
    #[inline(always)]
    fn from_fn(mut f: impl FnMut(usize) -> f64) -> f64 {
        f(0)
    }
    #[inline(always)]
    fn lesser(a: f64, b: f64) -> f64 {
        if a < b { a } else { b }
    }
    #[inline(always)]
    fn greater(a: f64, b: f64) -> f64 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    #[inline(always)]
    fn neg(self) -> f64 {
        -self
    }
    #[inline(always)]
    fn copysign(self, sign: f64) -> f64 {
        f64::copysign(self, sign)
    }
    #[inline(always)]
    fn table(self) -> (f64, f64) {
        let [top, tail] = TABLE[(self.to_bits() & 127) as usize];
        (f64::from_bits(top), f64::from_bits(tail))
    }
    #[inline(always)]
    fn all_within(self, lo: f64, hi: f64) -> bool {
        (lo..hi).contains(&self.abs())
    }
    #[inline(always)]
    fn less(a: f64, b: f64) -> f64 {
        f64::from_bits(0u64.wrapping_sub(u64::from(a < b)))
    }
    #[inline(always)]
    fn select(mask: f64, yes: f64, no: f64) -> f64 {
        let m = mask.to_bits();
        f64::from_bits((yes.to_bits() & m) | (no.to_bits() & !m))
    }
    #[inline(always)]
    fn any(mask: f64) -> bool {
        mask.is_sign_negative()
    }
    #[inline(always)]
    fn all(mask: f64) -> bool {
        mask.is_sign_negative()
    }
    #[inline(always)]
    fn xor(self, other: f64) -> f64 {
        f64::from_bits(self.to_bits() ^ other.to_bits())
    }
    #[inline(always)]
    fn int_add(self, k: u64) -> f64 {
        f64::from_bits(self.to_bits().wrapping_add(k))
    }
    #[inline(always)]
    fn int_and(self, k: u64) -> f64 {
        f64::from_bits(self.to_bits() & k)
    }
    #[inline(always)]
    fn int_neg(self) -> f64 {
        f64::from_bits(self.to_bits().wrapping_neg())
    }
    #[inline(always)]
    fn int_shl(self, n: u32) -> f64 {
        f64::from_bits(self.to_bits() << n)
    }
    #[inline(always)]
    fn int_shr(self, n: u32) -> f64 {
        f64::from_bits(self.to_bits() >> n)
    }
    #[inline(always)]
    fn int_sum(self, other: f64) -> f64 {
        f64::from_bits(self.to_bits().wrapping_add(other.to_bits()))
    }
    #[inline(always)]
    fn int_sub(self, other: f64) -> f64 {
        f64::from_bits(self.to_bits().wrapping_sub(other.to_bits()))
    }
}

pub use lanes2::X2;
pub use lanes4::X4;
#[cfg(target_arch = "x86_64")]
pub use lanes4::Y4;

/// Two lanes in one SSE register on x86-64 (every x86-64 has SSE2), two `f64`s elsewhere.
#[cfg(target_arch = "x86_64")]
mod lanes2 {
    use std::arch::x86_64::*;
    use std::ops::{Add, Div, Mul, Sub};

    use super::Lanes;

    /// Two `f64` lanes, lane 0 first.
    #[derive(Clone, Copy, Debug)]
    #[repr(transparent)]
    pub struct X2(pub __m128d);

    // SAFETY (every `unsafe` below): SSE2 is part of the x86-64 baseline, so its intrinsics
    // are always available; `__m128d` and `[f64; 2]` have the same size and lane order.
    macro_rules! binary {
        ($tr:ident, $method:ident, $intr:ident) => {
            impl $tr for X2 {
                type Output = X2;
                #[inline(always)]
                fn $method(self, rhs: X2) -> X2 {
                    X2(unsafe { $intr(self.0, rhs.0) })
                }
            }
        };
    }
    binary!(Add, add, _mm_add_pd);
    binary!(Sub, sub, _mm_sub_pd);
    binary!(Mul, mul, _mm_mul_pd);
    binary!(Div, div, _mm_div_pd);

    impl X2 {
        /// The lanes as an array (register moves: going through memory would cost a failed
        /// store-to-load forward where the lanes were just computed).
        #[inline(always)]
        pub fn to_array(self) -> [f64; 2] {
            unsafe { [_mm_cvtsd_f64(self.0), _mm_cvtsd_f64(_mm_unpackhi_pd(self.0, self.0))] }
        }

        /// Two lanes from an array (register moves, as `to_array`).
        #[inline(always)]
        pub fn from_array(x: [f64; 2]) -> X2 {
            X2(unsafe { _mm_set_pd(x[1], x[0]) })
        }
    }

    impl Lanes for X2 {
        const N: usize = 2;
        #[inline(always)]
        fn splat(x: f64) -> X2 {
            X2(unsafe { _mm_set1_pd(x) })
        }
        #[inline(always)]
        fn lane(self, i: usize) -> f64 {
            self.to_array()[i]
        }
        #[inline(always)]
        fn from_fn(mut f: impl FnMut(usize) -> f64) -> X2 {
            let a = f(0);
            let b = f(1);
            X2::from_array([a, b])
        }
        #[inline(always)]
        fn lesser(a: X2, b: X2) -> X2 {
            X2(unsafe { _mm_min_pd(a.0, b.0) })
        }
        #[inline(always)]
        fn greater(a: X2, b: X2) -> X2 {
            X2(unsafe { _mm_max_pd(a.0, b.0) })
        }
        #[inline(always)]
        fn abs(self) -> X2 {
            X2(unsafe { _mm_andnot_pd(_mm_set1_pd(-0.0), self.0) })
        }
        #[inline(always)]
        fn neg(self) -> X2 {
            X2(unsafe { _mm_xor_pd(_mm_set1_pd(-0.0), self.0) })
        }
        #[inline(always)]
        fn copysign(self, sign: X2) -> X2 {
            unsafe {
                let m = _mm_set1_pd(-0.0);
                X2(_mm_or_pd(_mm_andnot_pd(m, self.0), _mm_and_pd(m, sign.0)))
            }
        }
        #[inline(always)]
        fn all_within(self, lo: f64, hi: f64) -> bool {
            // Both comparisons in one vector each, both lanes read at once.
            unsafe {
                let a = self.abs().0;
                let ok = _mm_and_pd(_mm_cmpge_pd(a, _mm_set1_pd(lo)), _mm_cmplt_pd(a, _mm_set1_pd(hi)));
                _mm_movemask_pd(ok) == 3
            }
        }
        #[inline(always)]
        fn table(self) -> (X2, X2) {
            // Each lane's entry as one vector, then the halves paired up by shuffles (built
            // from scalars, LLVM went through the stack, a failed store-to-load forward).
            let [a, b] = self.to_array().map(|x| &super::TABLE[(x.to_bits() & 127) as usize]);
            unsafe {
                let (a, b) = (_mm_loadu_pd(a.as_ptr().cast()), _mm_loadu_pd(b.as_ptr().cast()));
                (X2(_mm_unpacklo_pd(a, b)), X2(_mm_unpackhi_pd(a, b)))
            }
        }
        #[inline(always)]
        fn less(a: X2, b: X2) -> X2 {
            X2(unsafe { _mm_cmplt_pd(a.0, b.0) })
        }
        #[inline(always)]
        fn select(mask: X2, yes: X2, no: X2) -> X2 {
            X2(unsafe { _mm_or_pd(_mm_and_pd(mask.0, yes.0), _mm_andnot_pd(mask.0, no.0)) })
        }
        #[inline(always)]
        fn any(mask: X2) -> bool {
            unsafe { _mm_movemask_pd(mask.0) != 0 }
        }
        #[inline(always)]
        fn all(mask: X2) -> bool {
            unsafe { _mm_movemask_pd(mask.0) == 3 }
        }
        #[inline(always)]
        fn xor(self, other: X2) -> X2 {
            X2(unsafe { _mm_xor_pd(self.0, other.0) })
        }
        #[inline(always)]
        fn int_add(self, k: u64) -> X2 {
            X2(unsafe {
                _mm_castsi128_pd(_mm_add_epi64(_mm_castpd_si128(self.0), _mm_set1_epi64x(k as i64)))
            })
        }
        #[inline(always)]
        fn int_and(self, k: u64) -> X2 {
            X2(unsafe { _mm_and_pd(self.0, _mm_castsi128_pd(_mm_set1_epi64x(k as i64))) })
        }
        #[inline(always)]
        fn int_neg(self) -> X2 {
            X2(unsafe { _mm_castsi128_pd(_mm_sub_epi64(_mm_setzero_si128(), _mm_castpd_si128(self.0))) })
        }
        #[inline(always)]
        fn int_shl(self, n: u32) -> X2 {
            X2(unsafe {
                _mm_castsi128_pd(_mm_sll_epi64(_mm_castpd_si128(self.0), _mm_cvtsi32_si128(n as i32)))
            })
        }
        #[inline(always)]
        fn int_shr(self, n: u32) -> X2 {
            X2(unsafe {
                _mm_castsi128_pd(_mm_srl_epi64(_mm_castpd_si128(self.0), _mm_cvtsi32_si128(n as i32)))
            })
        }
        #[inline(always)]
        fn int_sum(self, other: X2) -> X2 {
            X2(unsafe {
                _mm_castsi128_pd(_mm_add_epi64(_mm_castpd_si128(self.0), _mm_castpd_si128(other.0)))
            })
        }
        #[inline(always)]
        fn int_sub(self, other: X2) -> X2 {
            X2(unsafe {
                _mm_castsi128_pd(_mm_sub_epi64(_mm_castpd_si128(self.0), _mm_castpd_si128(other.0)))
            })
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod lanes2 {
    use std::ops::{Add, Div, Mul, Sub};

    use super::Lanes;

    /// Two `f64` lanes, lane 0 first.
    #[derive(Clone, Copy, Debug)]
    pub struct X2(pub [f64; 2]);

    macro_rules! binary {
        ($tr:ident, $method:ident, $op:tt) => {
            impl $tr for X2 {
                type Output = X2;
                #[inline(always)]
                fn $method(self, rhs: X2) -> X2 {
                    X2([self.0[0] $op rhs.0[0], self.0[1] $op rhs.0[1]])
                }
            }
        };
    }
    binary!(Add, add, +);
    binary!(Sub, sub, -);
    binary!(Mul, mul, *);
    binary!(Div, div, /);

    impl X2 {
        /// The lanes as an array.
        pub fn to_array(self) -> [f64; 2] {
            self.0
        }

        /// Two lanes from an array.
        pub fn from_array(x: [f64; 2]) -> X2 {
            X2(x)
        }
    }

    impl Lanes for X2 {
        const N: usize = 2;
        fn splat(x: f64) -> X2 {
            X2([x, x])
        }
        fn lane(self, i: usize) -> f64 {
            self.0[i]
        }
        fn from_fn(mut f: impl FnMut(usize) -> f64) -> X2 {
            let a = f(0);
            let b = f(1);
            X2([a, b])
        }
        fn lesser(a: X2, b: X2) -> X2 {
            X2([f64::lesser(a.0[0], b.0[0]), f64::lesser(a.0[1], b.0[1])])
        }
        fn greater(a: X2, b: X2) -> X2 {
            X2([f64::greater(a.0[0], b.0[0]), f64::greater(a.0[1], b.0[1])])
        }
        fn abs(self) -> X2 {
            X2([self.0[0].abs(), self.0[1].abs()])
        }
        fn neg(self) -> X2 {
            X2([-self.0[0], -self.0[1]])
        }
        fn copysign(self, sign: X2) -> X2 {
            X2([self.0[0].copysign(sign.0[0]), self.0[1].copysign(sign.0[1])])
        }
        fn all_within(self, lo: f64, hi: f64) -> bool {
            self.0.iter().all(|x| (lo..hi).contains(&x.abs()))
        }
        fn table(self) -> (X2, X2) {
            let [(a, b), (c, d)] = self.0.map(f64::table);
            (X2([a, c]), X2([b, d]))
        }
        fn less(a: X2, b: X2) -> X2 {
            X2([f64::less(a.0[0], b.0[0]), f64::less(a.0[1], b.0[1])])
        }
        fn select(mask: X2, yes: X2, no: X2) -> X2 {
            X2([f64::select(mask.0[0], yes.0[0], no.0[0]), f64::select(mask.0[1], yes.0[1], no.0[1])])
        }
        fn any(mask: X2) -> bool {
            mask.0.iter().any(|&m| f64::any(m))
        }
        fn all(mask: X2) -> bool {
            mask.0.iter().all(|&m| f64::all(m))
        }
        fn xor(self, other: X2) -> X2 {
            X2([self.0[0].xor(other.0[0]), self.0[1].xor(other.0[1])])
        }
        fn int_add(self, k: u64) -> X2 {
            X2(self.0.map(|x| x.int_add(k)))
        }
        fn int_and(self, k: u64) -> X2 {
            X2(self.0.map(|x| x.int_and(k)))
        }
        fn int_neg(self) -> X2 {
            X2(self.0.map(|x| x.int_neg()))
        }
        fn int_shl(self, n: u32) -> X2 {
            X2(self.0.map(|x| x.int_shl(n)))
        }
        fn int_shr(self, n: u32) -> X2 {
            X2(self.0.map(|x| x.int_shr(n)))
        }
        fn int_sum(self, other: X2) -> X2 {
            X2([self.0[0].int_sum(other.0[0]), self.0[1].int_sum(other.0[1])])
        }
        fn int_sub(self, other: X2) -> X2 {
            X2([self.0[0].int_sub(other.0[0]), self.0[1].int_sub(other.0[1])])
        }
    }
}

/// The independent reference the tests measure errors against: double-double arithmetic
/// (about 100 bits), and a small deterministic generator.
#[cfg(test)]
pub(crate) mod reference {
    /// A double-double: `hi + lo` with `|lo| <= ulp(hi)/2`.
    pub type Dd = (f64, f64);

    /// `a + b` exactly, as `s + e`.
    pub fn two_sum(a: f64, b: f64) -> Dd {
        let s = a + b;
        let v = s - a;
        (s, (a - (s - v)) + (b - v))
    }

    pub fn two_prod(a: f64, b: f64) -> Dd {
        let p = a * b;
        (p, a.mul_add(b, -p))
    }

    pub fn add(a: Dd, b: Dd) -> Dd {
        let (s, e) = two_sum(a.0, b.0);
        two_sum(s, e + a.1 + b.1)
    }

    pub fn mul(a: Dd, b: Dd) -> Dd {
        let (p, e) = two_prod(a.0, b.0);
        two_sum(p, e + a.0 * b.1 + a.1 * b.0)
    }

    pub fn div_small(a: Dd, d: f64) -> Dd {
        let q = a.0 / d;
        let (p, e) = two_prod(q, d);
        let r = ((a.0 - p) - e + a.1) / d;
        two_sum(q, r)
    }

    /// `a / b` in double-double (one Newton step on the quotient).
    pub fn div(a: Dd, b: Dd) -> Dd {
        let q = a.0 / b.0;
        let r = add(a, mul((-q, 0.0), b));
        let q2 = r.0 / b.0;
        two_sum(q, q2)
    }

    /// The error of `got` in units of its last place, against the exact `want`.
    pub fn ulps(got: f64, want: Dd) -> f64 {
        let ulp = f64::from_bits(got.to_bits() & 0x7ff0_0000_0000_0000) * f64::EPSILON;
        let ulp = if ulp == 0.0 { f64::from_bits(1) } else { ulp };
        ((got - want.0) - want.1).abs() / ulp
    }

    /// A small deterministic generator (SplitMix64).
    pub struct Stream(pub u64);
    impl Stream {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reference::Stream;
    use super::*;

    /// Inputs of every kind: random over several scales, integers, special values.
    fn inputs() -> Vec<f64> {
        let mut s = Stream(7);
        let mut xs = Vec::new();
        for scale in [1e-300, 1e-20, 1e-8, 1e-3, 0.5, 2.0, 30.0, 800.0, 1e5, 6e5, 1e22] {
            xs.extend((0..3_000).map(|_| (s.unit() - 0.5) * 2.0 * scale));
        }
        xs.extend((-200..200).map(f64::from));
        xs.extend((0..2_000).map(|_| f64::from_bits(s.next())));
        xs.extend([
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
        ]);
        xs.extend([709.9, -745.5, 22.0, -22.0, std::f64::consts::FRAC_PI_2, std::f64::consts::PI, 524_288.0]);
        xs
    }

    /// The mask and bit operations of `X2` give, lane by lane, the bits of `f64`'s, and
    /// `any`/`all` read both lanes' masks.
    #[test]
    fn two_lane_masks_are_two_single_lanes() {
        type Two = fn(X2, X2) -> X2;
        type One = fn(f64, f64) -> f64;
        let ops: [(Two, One, &str); 8] = [
            (|a, b| X2::less(a, b), |a, b| f64::less(a, b), "less"),
            (|a, b| X2::select(X2::less(a, b), a, b), |a, b| f64::select(f64::less(a, b), a, b), "select"),
            (|a, b| a.xor(b), |a, b| a.xor(b), "xor"),
            (|a, _| a.int_add(0x8000_0000_0000_0001), |a, _| a.int_add(0x8000_0000_0000_0001), "int_add"),
            (|a, _| a.int_and(3), |a, _| a.int_and(3), "int_and"),
            (|a, _| a.int_and(1).int_neg(), |a, _| a.int_and(1).int_neg(), "int_neg"),
            (|a, _| a.int_shl(62), |a, _| a.int_shl(62), "int_shl"),
            (|a, b| X2::lesser(a, b), |a, b| f64::lesser(a, b), "lesser"),
        ];
        let xs = inputs();
        for (i, &a) in xs.iter().enumerate() {
            let (b, c, d) =
                (xs[(i * 7919 + 13) % xs.len()], xs[(i * 31 + 7) % xs.len()], xs[(i ^ 1).min(xs.len() - 1)]);
            for (two, one, name) in ops {
                let got = two(X2::from_array([a, b]), X2::from_array([c, d])).to_array();
                let want = [one(a, c), one(b, d)];
                assert_eq!(
                    got.map(f64::to_bits),
                    want.map(f64::to_bits),
                    "{name} of ({a:e}, {b:e}) and ({c:e}, {d:e})"
                );
            }
            let (m, n) = (f64::less(a, c), f64::less(b, d));
            let mask = X2::less(X2::from_array([a, b]), X2::from_array([c, d]));
            assert_eq!(X2::any(mask), f64::any(m) || f64::any(n), "any");
            assert_eq!(X2::all(mask), f64::all(m) && f64::all(n), "all");
            let quad = X4::less(X4::from_array([a, b, c, d]), X4::from_array([c, d, a, b]));
            let lanes = [m, n, f64::less(c, a), f64::less(d, b)];
            assert_eq!(quad.to_array().map(f64::to_bits), lanes.map(f64::to_bits), "less of four");
            assert_eq!(X4::any(quad), lanes.iter().any(|&m| f64::any(m)), "any of four");
            assert_eq!(X4::all(quad), lanes.iter().all(|&m| f64::all(m)), "all of four");
        }
    }

    /// The AVX2 form ([`Y4`]) of the function `name`, where the processor has AVX2.
    #[cfg(target_arch = "x86_64")]
    fn wide(name: &str) -> Option<fn([f64; 4]) -> [f64; 4]> {
        macro_rules! wide {
            ($($name:literal => $f:path),*) => {
                match name {
                    $($name => {
                        #[target_feature(enable = "avx2")]
                        fn on_y4(x: [f64; 4]) -> [f64; 4] {
                            $f(Y4::from_array(x)).to_array()
                        }
                        // SAFETY: called only where the processor has AVX2 (checked below).
                        (|x| unsafe { on_y4(x) }) as fn([f64; 4]) -> [f64; 4]
                    })*
                    _ => unreachable!("no function {name}"),
                }
            };
        }
        let f = wide!("exp" => exp_lanes, "sigmoid" => sigmoid_lanes, "sin" => sin_lanes, "cos" => cos_lanes, "tanh" => tanh_lanes);
        std::arch::is_x86_feature_detected!("avx2").then_some(f)
    }

    /// Each function's two- and four-lane forms (both of these) give each lane what its
    /// one-lane form gives, to the bit, whatever the other lanes hold.
    #[test]
    fn two_lanes_are_two_single_lanes() {
        type Forms = (fn(f64) -> f64, fn(X2) -> X2, fn(X4) -> X4, &'static str);
        let fs: [Forms; 5] = [
            (exp, exp_lanes::<X2>, exp_lanes::<X4>, "exp"),
            (sigmoid, sigmoid_lanes::<X2>, sigmoid_lanes::<X4>, "sigmoid"),
            (sin, sin_lanes::<X2>, sin_lanes::<X4>, "sin"),
            (cos, cos_lanes::<X2>, cos_lanes::<X4>, "cos"),
            (tanh, tanh_lanes::<X2>, tanh_lanes::<X4>, "tanh"),
        ];
        let xs = inputs();
        let check = |name: &str, lanes: &[f64], got: &[f64], one: fn(f64) -> f64| {
            for (&x, &got) in lanes.iter().zip(got) {
                let want = one(x);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{name}({x:e}): {got:e} in lanes {lanes:?}, {want:e} alone"
                );
            }
        };
        for (one, two, four, name) in fs {
            for (i, &a) in xs.iter().enumerate() {
                // A partner from anywhere (mostly another size), and a neighbour (mostly the
                // same size: the paths the lanes take together).
                let (far, near) = (xs[(i * 7919 + 13) % xs.len()], xs[(i ^ 1).min(xs.len() - 1)]);
                for b in [far, near] {
                    check(name, &[a, b], &two(X2::from_array([a, b])).to_array(), one);
                }
                let near2 = xs[(i ^ 2).min(xs.len() - 1)];
                for lanes in [[a, near, near2, far], [far, a, near, near2]] {
                    check(name, &lanes, &four(X4::from_array(lanes)).to_array(), one);
                    #[cfg(target_arch = "x86_64")]
                    if let Some(wide) = wide(name) {
                        check(name, &lanes, &wide(lanes), one);
                    }
                }
            }
        }
    }
}
