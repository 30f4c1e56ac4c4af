//! Four `f64` lanes: what `eval_many` computes four points with (`jit::runtime`'s four-lane
//! host functions, one call for four points).
//!
//! Two forms, with the same lanes bit for bit: [`Y4`], one 256-bit AVX register, for
//! processors with AVX2 (the host functions check once, at run time), and [`X4`], two SSE
//! pairs, for the others. The host functions are paced by their instruction count, not by
//! latency (measured through the call: `exp` of two pairs cost what one pair does per
//! point, 2.1 ns), so only the wider register makes four lanes cheaper than two pairs.
//!
//! Invariant: as for [`X2`], each operation is the IEEE operation of `f64` in every lane
//! (no fused multiply-add: only the `avx2` feature is enabled, never `fma`), and no lane's
//! result depends on another lane.

use std::ops::{Add, Div, Mul, Sub};

use super::{Lanes, X2};

/// Four lanes as two [`X2`]s, lanes 0 and 1 first: every operation is `X2`'s on each half,
/// so each lane is still `f64`'s. What the four-lane host functions compute with where the
/// processor lacks AVX2 (about what two pairs cost).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(all(target_arch = "x86_64", unix)), allow(dead_code))] // the host functions' platforms
pub struct X4(pub X2, pub X2);

#[cfg(test)]
impl X4 {
    /// The lanes as an array.
    #[inline(always)]
    pub fn to_array(self) -> [f64; 4] {
        let ([a, b], [c, d]) = (self.0.to_array(), self.1.to_array());
        [a, b, c, d]
    }

    /// Four lanes from an array.
    #[inline(always)]
    pub fn from_array([a, b, c, d]: [f64; 4]) -> X4 {
        X4(X2::from_array([a, b]), X2::from_array([c, d]))
    }
}

macro_rules! halves {
    ($($tr:ident, $method:ident);*) => {
        $(impl $tr for X4 {
            type Output = X4;
            #[inline(always)]
            fn $method(self, rhs: X4) -> X4 {
                X4(self.0.$method(rhs.0), self.1.$method(rhs.1))
            }
        })*
    };
}
halves!(Add, add; Sub, sub; Mul, mul; Div, div);

impl Lanes for X4 {
    const N: usize = 4;
    #[inline(always)]
    fn splat(x: f64) -> X4 {
        X4(X2::splat(x), X2::splat(x))
    }
    #[inline(always)]
    fn lane(self, i: usize) -> f64 {
        if i < 2 { self.0.lane(i) } else { self.1.lane(i - 2) }
    }
    #[inline(always)]
    fn from_fn(mut f: impl FnMut(usize) -> f64) -> X4 {
        let low = X2::from_fn(&mut f);
        X4(low, X2::from_fn(|i| f(i + 2)))
    }
    #[inline(always)]
    fn lesser(a: X4, b: X4) -> X4 {
        X4(X2::lesser(a.0, b.0), X2::lesser(a.1, b.1))
    }
    #[inline(always)]
    fn greater(a: X4, b: X4) -> X4 {
        X4(X2::greater(a.0, b.0), X2::greater(a.1, b.1))
    }
    #[inline(always)]
    fn abs(self) -> X4 {
        X4(self.0.abs(), self.1.abs())
    }
    #[inline(always)]
    fn neg(self) -> X4 {
        X4(self.0.neg(), self.1.neg())
    }
    #[inline(always)]
    fn copysign(self, sign: X4) -> X4 {
        X4(self.0.copysign(sign.0), self.1.copysign(sign.1))
    }
    #[inline(always)]
    fn all_within(self, lo: f64, hi: f64) -> bool {
        self.0.all_within(lo, hi) & self.1.all_within(lo, hi)
    }
    #[inline(always)]
    fn table(self) -> (X4, X4) {
        let ((a, b), (c, d)) = (self.0.table(), self.1.table());
        (X4(a, c), X4(b, d))
    }
    #[inline(always)]
    fn less(a: X4, b: X4) -> X4 {
        X4(X2::less(a.0, b.0), X2::less(a.1, b.1))
    }
    #[inline(always)]
    fn select(mask: X4, yes: X4, no: X4) -> X4 {
        X4(X2::select(mask.0, yes.0, no.0), X2::select(mask.1, yes.1, no.1))
    }
    #[inline(always)]
    fn any(mask: X4) -> bool {
        X2::any(mask.0) | X2::any(mask.1)
    }
    #[inline(always)]
    fn all(mask: X4) -> bool {
        X2::all(mask.0) & X2::all(mask.1)
    }
    #[inline(always)]
    fn xor(self, other: X4) -> X4 {
        X4(self.0.xor(other.0), self.1.xor(other.1))
    }
    #[inline(always)]
    fn int_add(self, k: u64) -> X4 {
        X4(self.0.int_add(k), self.1.int_add(k))
    }
    #[inline(always)]
    fn int_and(self, k: u64) -> X4 {
        X4(self.0.int_and(k), self.1.int_and(k))
    }
    #[inline(always)]
    fn int_neg(self) -> X4 {
        X4(self.0.int_neg(), self.1.int_neg())
    }
    #[inline(always)]
    fn int_shl(self, n: u32) -> X4 {
        X4(self.0.int_shl(n), self.1.int_shl(n))
    }
    #[inline(always)]
    fn int_shr(self, n: u32) -> X4 {
        X4(self.0.int_shr(n), self.1.int_shr(n))
    }
    #[inline(always)]
    fn int_sum(self, other: X4) -> X4 {
        X4(self.0.int_sum(other.0), self.1.int_sum(other.1))
    }
    #[inline(always)]
    fn int_sub(self, other: X4) -> X4 {
        X4(self.0.int_sub(other.0), self.1.int_sub(other.1))
    }
}

#[cfg(target_arch = "x86_64")]
pub use avx::Y4;

#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(unix), allow(dead_code))] // the four-lane host functions are Unix's
mod avx {
    use std::arch::x86_64::*;
    use std::ops::{Add, Div, Mul, Sub};

    use super::super::{Lanes, TABLE, X2};

    /// Four `f64` lanes in one AVX register, lane 0 first.
    ///
    /// Its methods are `#[inline(always)]` and use AVX2 instructions: only code compiled
    /// with `#[target_feature(enable = "avx2")]`, run where the processor has it, may use
    /// them (the intrinsics are inlined into that code; anywhere else they would be calls
    /// on a processor that may lack them).
    #[derive(Clone, Copy, Debug)]
    #[repr(transparent)]
    pub struct Y4(pub __m256d);

    // SAFETY (every `unsafe` below): the type's contract: these run only in code compiled
    // for AVX2 on a processor that has it; `__m256d` and `[f64; 4]` have the same size and
    // lane order.
    macro_rules! binary {
        ($($tr:ident, $method:ident, $intr:ident);*) => {
            $(impl $tr for Y4 {
                type Output = Y4;
                #[inline(always)]
                fn $method(self, rhs: Y4) -> Y4 {
                    Y4(unsafe { $intr(self.0, rhs.0) })
                }
            })*
        };
    }
    binary!(Add, add, _mm256_add_pd; Sub, sub, _mm256_sub_pd; Mul, mul, _mm256_mul_pd; Div, div, _mm256_div_pd);

    impl Y4 {
        /// The two pairs `low` (lanes 0, 1) and `high` (lanes 2, 3) as four lanes.
        #[inline(always)]
        pub fn from_pairs(low: X2, high: X2) -> Y4 {
            Y4(unsafe { _mm256_set_m128d(high.0, low.0) })
        }

        /// Stores the four lanes to `to` (no alignment needed).
        ///
        /// # Safety
        /// `to` is valid for writing four `f64`s.
        #[inline(always)]
        pub unsafe fn store(self, to: *mut f64) {
            unsafe { _mm256_storeu_pd(to, self.0) }
        }

        /// Lanes 0, 1 and lanes 2, 3 as pairs.
        #[inline(always)]
        pub fn to_pairs(self) -> (X2, X2) {
            unsafe { (X2(_mm256_castpd256_pd128(self.0)), X2(_mm256_extractf128_pd::<1>(self.0))) }
        }

        /// The lanes as an array.
        #[inline(always)]
        pub fn to_array(self) -> [f64; 4] {
            let (low, high) = self.to_pairs();
            let ([a, b], [c, d]) = (low.to_array(), high.to_array());
            [a, b, c, d]
        }

        /// Four lanes from an array (register moves, as `X2::from_array`).
        #[inline(always)]
        pub fn from_array([a, b, c, d]: [f64; 4]) -> Y4 {
            Y4(unsafe { _mm256_set_pd(d, c, b, a) })
        }

        #[inline(always)]
        fn int(k: u64) -> __m256i {
            unsafe { _mm256_set1_epi64x(k as i64) }
        }

        #[inline(always)]
        fn bits(self) -> __m256i {
            unsafe { _mm256_castpd_si256(self.0) }
        }

        #[inline(always)]
        fn from_bits(x: __m256i) -> Y4 {
            Y4(unsafe { _mm256_castsi256_pd(x) })
        }
    }

    impl Lanes for Y4 {
        const N: usize = 4;
        #[inline(always)]
        fn splat(x: f64) -> Y4 {
            Y4(unsafe { _mm256_set1_pd(x) })
        }
        #[inline(always)]
        fn lane(self, i: usize) -> f64 {
            self.to_array()[i]
        }
        #[inline(always)]
        fn from_fn(mut f: impl FnMut(usize) -> f64) -> Y4 {
            let (a, b, c) = (f(0), f(1), f(2));
            Y4::from_array([a, b, c, f(3)])
        }
        #[inline(always)]
        fn lesser(a: Y4, b: Y4) -> Y4 {
            Y4(unsafe { _mm256_min_pd(a.0, b.0) })
        }
        #[inline(always)]
        fn greater(a: Y4, b: Y4) -> Y4 {
            Y4(unsafe { _mm256_max_pd(a.0, b.0) })
        }
        #[inline(always)]
        fn abs(self) -> Y4 {
            Y4(unsafe { _mm256_andnot_pd(_mm256_set1_pd(-0.0), self.0) })
        }
        #[inline(always)]
        fn neg(self) -> Y4 {
            Y4(unsafe { _mm256_xor_pd(_mm256_set1_pd(-0.0), self.0) })
        }
        #[inline(always)]
        fn copysign(self, sign: Y4) -> Y4 {
            unsafe {
                let m = _mm256_set1_pd(-0.0);
                Y4(_mm256_or_pd(_mm256_andnot_pd(m, self.0), _mm256_and_pd(m, sign.0)))
            }
        }
        #[inline(always)]
        fn all_within(self, lo: f64, hi: f64) -> bool {
            unsafe {
                let a = self.abs().0;
                let ok = _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(a, _mm256_set1_pd(lo)),
                    _mm256_cmp_pd::<_CMP_LT_OQ>(a, _mm256_set1_pd(hi)),
                );
                _mm256_movemask_pd(ok) == 15
            }
        }
        #[inline(always)]
        fn table(self) -> (Y4, Y4) {
            // Two gathers: an entry is two `u64`s, so lane `j`'s halves are at `2j` and `2j + 1`.
            unsafe {
                let at = _mm256_slli_epi64::<1>(_mm256_and_si256(self.bits(), Y4::int(127)));
                let base = TABLE.as_ptr().cast::<i64>();
                let top = _mm256_i64gather_epi64::<8>(base, at);
                let tail = _mm256_i64gather_epi64::<8>(base.add(1), at);
                (Y4::from_bits(top), Y4::from_bits(tail))
            }
        }
        #[inline(always)]
        fn less(a: Y4, b: Y4) -> Y4 {
            Y4(unsafe { _mm256_cmp_pd::<_CMP_LT_OQ>(a.0, b.0) })
        }
        #[inline(always)]
        fn select(mask: Y4, yes: Y4, no: Y4) -> Y4 {
            Y4(unsafe { _mm256_or_pd(_mm256_and_pd(mask.0, yes.0), _mm256_andnot_pd(mask.0, no.0)) })
        }
        #[inline(always)]
        fn any(mask: Y4) -> bool {
            unsafe { _mm256_movemask_pd(mask.0) != 0 }
        }
        #[inline(always)]
        fn all(mask: Y4) -> bool {
            unsafe { _mm256_movemask_pd(mask.0) == 15 }
        }
        #[inline(always)]
        fn xor(self, other: Y4) -> Y4 {
            Y4(unsafe { _mm256_xor_pd(self.0, other.0) })
        }
        #[inline(always)]
        fn int_add(self, k: u64) -> Y4 {
            Y4::from_bits(unsafe { _mm256_add_epi64(self.bits(), Y4::int(k)) })
        }
        #[inline(always)]
        fn int_and(self, k: u64) -> Y4 {
            Y4::from_bits(unsafe { _mm256_and_si256(self.bits(), Y4::int(k)) })
        }
        #[inline(always)]
        fn int_neg(self) -> Y4 {
            Y4::from_bits(unsafe { _mm256_sub_epi64(_mm256_setzero_si256(), self.bits()) })
        }
        #[inline(always)]
        fn int_shl(self, n: u32) -> Y4 {
            Y4::from_bits(unsafe { _mm256_sll_epi64(self.bits(), _mm_cvtsi32_si128(n as i32)) })
        }
        #[inline(always)]
        fn int_shr(self, n: u32) -> Y4 {
            Y4::from_bits(unsafe { _mm256_srl_epi64(self.bits(), _mm_cvtsi32_si128(n as i32)) })
        }
        #[inline(always)]
        fn int_sum(self, other: Y4) -> Y4 {
            Y4::from_bits(unsafe { _mm256_add_epi64(self.bits(), other.bits()) })
        }
        #[inline(always)]
        fn int_sub(self, other: Y4) -> Y4 {
            Y4::from_bits(unsafe { _mm256_sub_epi64(self.bits(), other.bits()) })
        }
    }
}
