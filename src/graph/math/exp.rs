//! `exp`: the definition the interpreter evaluates, compiled code calls (`sd_exp`, and
//! `sd_exp_x2` for two points) and loop bodies compute inline (`jit::scalar::math` emits these
//! operations one for one, two points at a time). One straight sequence of IEEE additions,
//! multiplications, table loads and bit operations (no fused multiply-add, no branches), so
//! every form computes the same bits on every machine.
//!
//! **The algorithm** (the table-driven scheme of Tang, as in glibc's and ARM's `exp`):
//! 1. clamp `x` to `[-746, 710]`: outside it the result is 0 or +inf anyway;
//! 2. `k = round(x * 128 / ln 2)`, by adding `1.5 * 2^52` (the sum's low bits hold `k`), so
//!    `x = k ln2/128 + r` with `|r| <= ln2/256`; `r = (x - k*LN2N_HI) - k*LN2N_LO`, the first
//!    product exact (`LN2N_HI` has 35 significant bits, `|k| < 2^18`) and the difference too;
//! 3. `k = 128 e + j`: `2^(j/128)` is `TABLE[j]`, rounded, with the relative rounding error
//!    `tail` beside it, so `exp(x) = 2^e * TABLE[j] * (1 + tail) * exp(r)`;
//! 4. `exp(r) - 1` by its Taylor series to `r^5` (the next term is below 2^-60 relative);
//! 5. `s1 = TABLE[j] * 2^e1` and `s2 = 2^e2` with `e1 = e >> 1`, `e2 = e - e1`: both normal
//!    for every clamped `x`, so `(s1 + s1*(tail + r + ...)) * s2` rounds once where the result
//!    is normal (the second product is exact) and overflows to +inf where it should.
//!
//! **Error bound:** 0.51 ulp against the exact value where the result is normal (the tests
//! check it against a double-double reference over random and dense inputs and print the
//! worst case); ≤ 1 ulp in the subnormal range, where `* s2` rounds a second time. Special
//! values are IEEE's: `exp(NaN) = NaN`, `exp(+inf) = +inf`, `exp(-inf) = 0`.
//!
//! Worked example, `exp(1)`: `k = round(184.66...) = 185 = 128*1 + 57`, `r = 1 - 185 ln2/128 =
//! -0.0018143...`, `TABLE[57] = 2^(57/128) = 1.3616...`; `s1 = 1.3616... * 2^0`, `s2 = 2^1`,
//! and the result is `2.718281828459045`, correctly rounded.

use super::Lanes;

/// `exp` clamps its argument to `[EXP_LO, EXP_HI]`: the lower end.
pub const EXP_LO: f64 = -746.0;
/// The upper end of `exp`'s clamp.
pub const EXP_HI: f64 = 710.0;
/// `1.5 * 2^52`: adding it to `|y| < 2^51` rounds `y` to an integer in the low mantissa bits.
pub const SHIFTER: f64 = 6_755_399_441_055_744.0;
/// `128 / ln 2`.
pub const INV_LN2N: f64 = f64::from_bits(0x4067_1547_652b_82fe);
/// `ln2/128` in two parts: `LN2N_HI` with 35 significant bits, `LN2N_HI + LN2N_LO = ln2/128`
/// to about 2^-95.
pub const LN2N_HI: f64 = f64::from_bits(0x3f76_2e42_fef8_0000);
/// The low part of `ln2/128` (see [`LN2N_HI`]).
pub const LN2N_LO: f64 = f64::from_bits(0x3d41_cf79_abc9_e3b4);
/// `k + BIAS >= 0` for every clamped `x` (`|k| <= 137758`): the integer steps then shift a
/// non-negative number. A multiple of 256, so it changes neither `j` nor the parity of `e`.
pub const BIAS: i64 = 1088 * 128;
/// `exp(r) - 1 = r + C2 r^2 + C3 r^3 + C4 r^4 + C5 r^5`: Taylor's coefficients.
pub const C2: f64 = 0.5;
/// `1/3!` (see [`C2`]).
pub const C3: f64 = 1.0 / 6.0;
/// `1/4!` (see [`C2`]).
pub const C4: f64 = 1.0 / 24.0;
/// `1/5!` (see [`C2`]).
pub const C5: f64 = 1.0 / 120.0;

/// `TABLE[j] = [bits of 2^(j/128) rounded, bits of its relative error]`; compiled code reads
/// it at its address (the JIT's code runs in this process). Generated with Python's `decimal`
/// at 60 digits (`2^(j/128)`, then `(exact - rounded) / rounded`); the test `table_is_exact`
/// recomputes every entry in double-double.
pub static TABLE: [[u64; 2]; 128] = [
    [0x3ff0000000000000, 0x0000000000000000],
    [0x3ff0163da9fb3335, 0x3c9b3b4f1a88bf6e],
    [0x3ff02c9a3e778061, 0xbc7160139cd8dc5d],
    [0x3ff04315e86e7f85, 0xbc905e7a108766d1],
    [0x3ff059b0d3158574, 0x3c8cd2523567f613],
    [0x3ff0706b29ddf6de, 0xbc8bce8023f98efa],
    [0x3ff0874518759bc8, 0x3c60f74e61e6c861],
    [0x3ff09e3ecac6f383, 0x3c90a3e45b33d399],
    [0x3ff0b5586cf9890f, 0x3c979aa65d837b6d],
    [0x3ff0cc922b7247f7, 0x3c8eb51a92fdeffc],
    [0x3ff0e3ec32d3d1a2, 0x3c3ebe3d702f9cd1],
    [0x3ff0fb66affed31b, 0xbc6a033489906e0b],
    [0x3ff11301d0125b51, 0xbc9556522a2fbd0e],
    [0x3ff12abdc06c31cc, 0xbc5080ef8c4eea55],
    [0x3ff1429aaea92de0, 0xbc91c923b9d5f416],
    [0x3ff15a98c8a58e51, 0x3c80d3e3e95c55af],
    [0x3ff172b83c7d517b, 0xbc801b15eaa59348],
    [0x3ff18af9388c8dea, 0xbc8f1ff055de323d],
    [0x3ff1a35beb6fcb75, 0x3c8b898c3f1353bf],
    [0x3ff1bbe084045cd4, 0xbc96d99c7611eb26],
    [0x3ff1d4873168b9aa, 0x3c9aecf73e3a2f60],
    [0x3ff1ed5022fcd91d, 0xbc8fe782cb86389d],
    [0x3ff2063b88628cd6, 0x3c8a6f4144a6c38d],
    [0x3ff21f49917ddc96, 0x3c807a05b0e4047d],
    [0x3ff2387a6e756238, 0x3c968efde3a8a894],
    [0x3ff251ce4fb2a63f, 0x3c875e18f274487d],
    [0x3ff26b4565e27cdd, 0x3c80472b981fe7f2],
    [0x3ff284dfe1f56381, 0xbc96b87b3f71085e],
    [0x3ff29e9df51fdee1, 0x3c82f7e16d09ab31],
    [0x3ff2b87fd0dad990, 0xbc3d219b1a6fbffa],
    [0x3ff2d285a6e4030b, 0x3c8b3782720c0ab4],
    [0x3ff2ecafa93e2f56, 0x3c6e149289cecb8f],
    [0x3ff306fe0a31b715, 0x3c834d754db0abb6],
    [0x3ff32170fc4cd831, 0x3c864201e2ac744c],
    [0x3ff33c08b26416ff, 0x3c8fdd395dd3f84a],
    [0x3ff356c55f929ff1, 0xbc86a3803b8e5b04],
    [0x3ff371a7373aa9cb, 0xbc924aedcc4b5068],
    [0x3ff38cae6d05d866, 0xbc9907f81b512d8e],
    [0x3ff3a7db34e59ff7, 0xbc71d1e83e9436d2],
    [0x3ff3c32dc313a8e5, 0xbc991919b3ce1b15],
    [0x3ff3dea64c123422, 0x3c859f48a72a4c6d],
    [0x3ff3fa4504ac801c, 0xbc9312607a28698a],
    [0x3ff4160a21f72e2a, 0xbc58a78f4817895b],
    [0x3ff431f5d950a897, 0xbc7c2c9b67499a1b],
    [0x3ff44e086061892d, 0x3c4363ed60c2ac11],
    [0x3ff46a41ed1d0057, 0x3c9666093b0664ef],
    [0x3ff486a2b5c13cd0, 0x3c6ecce1daa10379],
    [0x3ff4a32af0d7d3de, 0x3c93ff8e3f0f1230],
    [0x3ff4bfdad5362a27, 0x3c7690cebb7aafb0],
    [0x3ff4dcb299fddd0d, 0x3c931dbdeb54e077],
    [0x3ff4f9b2769d2ca7, 0xbc8f94340071a38e],
    [0x3ff516daa2cf6642, 0xbc87deccdc93a349],
    [0x3ff5342b569d4f82, 0xbc78dec6bd0f385f],
    [0x3ff551a4ca5d920f, 0xbc861246ec7b5cf6],
    [0x3ff56f4736b527da, 0x3c93350518fdd78e],
    [0x3ff58d12d497c7fd, 0x3c7b98b72f8a9b05],
    [0x3ff5ab07dd485429, 0x3c9063e1e21c5409],
    [0x3ff5c9268a5946b7, 0x3c34c7855019c6ea],
    [0x3ff5e76f15ad2148, 0x3c9432e62b64c035],
    [0x3ff605e1b976dc09, 0xbc8ce44a6199769f],
    [0x3ff6247eb03a5585, 0xbc8c33c53bef4da8],
    [0x3ff6434634ccc320, 0xbc845378892be9ae],
    [0x3ff6623882552225, 0xbc93cedd78565858],
    [0x3ff68155d44ca973, 0x3c5710aa807e1964],
    [0x3ff6a09e667f3bcd, 0xbc93b3efbf5e2228],
    [0x3ff6c012750bdabf, 0xbc6a12ad8734b982],
    [0x3ff6dfb23c651a2f, 0xbc6367efb86da9ee],
    [0x3ff6ff7df9519484, 0xbc80dc3d54e08851],
    [0x3ff71f75e8ec5f74, 0xbc781f647e5a3ecf],
    [0x3ff73f9a48a58174, 0xbc86ee4ac08b7db0],
    [0x3ff75feb564267c9, 0xbc8619321e55e68a],
    [0x3ff780694fde5d3f, 0x3c909ccb5e09d4d3],
    [0x3ff7a11473eb0187, 0xbc7b32dcb94da51d],
    [0x3ff7c1ed0130c132, 0x3c94ecfd5467c06b],
    [0x3ff7e2f336cf4e62, 0x3c65ebe1abd66c55],
    [0x3ff80427543e1a12, 0xbc88a1c52fb3cf42],
    [0x3ff82589994cce13, 0xbc9369b6f13b3734],
    [0x3ff8471a4623c7ad, 0xbc805e843a19ff1e],
    [0x3ff868d99b4492ed, 0xbc94d450d872576e],
    [0x3ff88ac7d98a6699, 0x3c90ad675b0e8a00],
    [0x3ff8ace5422aa0db, 0x3c8db72fc1f0eab4],
    [0x3ff8cf3216b5448c, 0xbc65b6609cc5e7ff],
    [0x3ff8f1ae99157736, 0x3c7bf68359f35f44],
    [0x3ff9145b0b91ffc6, 0xbc93091fa71e3d83],
    [0x3ff93737b0cdc5e5, 0xbc5da9b88b6c1e29],
    [0x3ff95a44cbc8520f, 0xbc6c23f97c90b959],
    [0x3ff97d829fde4e50, 0xbc92434322f4f9aa],
    [0x3ff9a0f170ca07ba, 0xbc85ca6cd7668e4b],
    [0x3ff9c49182a3f090, 0x3c71affc2b91ce27],
    [0x3ff9e86319e32323, 0x3c6dd235e10a73bb],
    [0x3ffa0c667b5de565, 0xbc87c50422622263],
    [0x3ffa309bec4a2d33, 0x3c8b1c86e3e231d5],
    [0x3ffa5503b23e255d, 0xbc91bbd1d3bcbb15],
    [0x3ffa799e1330b358, 0x3c90cc319cee31d2],
    [0x3ffa9e6b5579fdbf, 0x3c8469846e735ab3],
    [0x3ffac36bbfd3f37a, 0xbc82dfcd978e9db4],
    [0x3ffae89f995ad3ad, 0x3c8c1a7792cb3387],
    [0x3ffb0e07298db666, 0xbc907b8f4ad1d9fa],
    [0x3ffb33a2b84f15fb, 0xbc55c3d956dcaeba],
    [0x3ffb59728de5593a, 0xbc90a40e3da6f640],
    [0x3ffb7f76f2fb5e47, 0xbc68d6f438ad9334],
    [0x3ffba5b030a1064a, 0xbc91eee26b588a35],
    [0x3ffbcc1e904bc1d2, 0x3c74ffd70a5fddcd],
    [0x3ffbf2c25bd71e09, 0xbc91bdfbfa9298ac],
    [0x3ffc199bdd85529c, 0x3c736eae30af0cb3],
    [0x3ffc40ab5fffd07a, 0x3c8ee3325c9ffd94],
    [0x3ffc67f12e57d14b, 0x3c84e08fd10959ac],
    [0x3ffc8f6d9406e7b5, 0x3c63cdaf384e1a67],
    [0x3ffcb720dcef9069, 0x3c676b2c6c921968],
    [0x3ffcdf0b555dc3fa, 0xbc808a1883ccb5d2],
    [0x3ffd072d4a07897c, 0xbc8fad5d3ffffa6f],
    [0x3ffd2f87080d89f2, 0xbc900dae3875a949],
    [0x3ffd5818dcfba487, 0x3c74a385a63d07a7],
    [0x3ffd80e316c98398, 0xbc82919e2040220f],
    [0x3ffda9e603db3285, 0x3c8e5a50d5c192ac],
    [0x3ffdd321f301b460, 0x3c843a59ac016b4b],
    [0x3ffdfc97337b9b5f, 0xbc82d52107b43e1f],
    [0x3ffe264614f5a129, 0xbc892ab93b470dc9],
    [0x3ffe502ee78b3ff6, 0x3c74b604603a88d3],
    [0x3ffe7a51fbc74c83, 0x3c83c5ec519d7271],
    [0x3ffea4afa2a490da, 0xbc8ff7128fd391f0],
    [0x3ffecf482d8e67f1, 0xbc8dae98e223747d],
    [0x3ffefa1bee615a27, 0x3c8ec3bc41aa2008],
    [0x3fff252b376bba97, 0x3c842b94c3a9eb32],
    [0x3fff50765b6e4540, 0x3c8a64a931d185ee],
    [0x3fff7bfdad9cbe14, 0xbc8e37bae43be3ed],
    [0x3fffa7c1819e90d8, 0x3c77893b4d91cd9d],
    [0x3fffd3c22b8f71f1, 0x3c5305c14160cc89],
];

/// `e^x`, to 0.51 ulp (see the module doc), in each lane. The JIT's `math::exp` emits these
/// operations.
#[inline(always)]
pub fn exp<L: Lanes>(x: L) -> L {
    // min and max as the vector code's selects: a NaN `x` passes through both.
    let x = L::lesser(L::splat(EXP_HI), x);
    let x = L::greater(L::splat(EXP_LO), x);
    let t = x * L::splat(INV_LN2N) + L::splat(SHIFTER);
    let kf = t - L::splat(SHIFTER);
    let r = (x - kf * L::splat(LN2N_HI)) - kf * L::splat(LN2N_LO);
    let (s1, s2, tail) = scales(t);
    let r2 = r * r;
    let (c2, c3, c4, c5) = (L::splat(C2), L::splat(C3), L::splat(C4), L::splat(C5));
    let p = tail + r + r2 * (c2 + r * c3) + r2 * r2 * (c4 + r * c5);
    (s1 + s1 * p) * s2
}

/// The logistic function `1 / (1 + e^-x)`, without overflow: with `e = exp(-|x|)`, `1 / (1 + e)`
/// for `x >= 0` and `e / (1 + e)` below (exactly 1/2 at 0, 0 far below). One value computes
/// only its own quotient; two lanes compute both and each takes its own.
#[inline(always)]
pub fn sigmoid<L: Lanes>(x: L) -> L {
    let e = exp(x.abs().neg());
    let d = L::splat(1.0) + e;
    if L::N == 1 {
        return if x.lane(0) >= 0.0 { L::splat(1.0) / d } else { e / d };
    }
    let (above, below) = (L::splat(1.0) / d, e / d);
    L::from_fn(|i| if x.lane(i) >= 0.0 { above.lane(i) } else { below.lane(i) })
}

/// The integer steps of [`exp`], from `t = x * 128/ln2 + SHIFTER`: `s1 = 2^(j/128) * 2^e1`,
/// `s2 = 2^e2` and the table entry's relative error, in each lane (as vector integer
/// operations and one table load per lane, a gather with AVX2).
#[inline(always)]
fn scales<L: Lanes>(t: L) -> (L, L, L) {
    let (kb, top, tail) = entry(t);
    let eb = kb.int_shr(7); // e + 1088
    let e1b = eb.int_shr(1); // e1 + 544
    let e2b = eb.int_sub(e1b); // e2 + 544
    // 2^(j/128) * 2^e1 by adding e1 to the exponent bits; 2^e2 from its exponent bits.
    let s1 = top.int_sum(e1b.int_add(544u64.wrapping_neg()).int_shl(52));
    let s2 = e2b.int_add(1023 - 544).int_shl(52);
    (s1, s2, tail)
}

/// `k + BIAS` (as bits) from the low bits of `t = y * 128/ln2 + SHIFTER`, with the table
/// entry of `j = k mod 128`: `2^(j/128)` rounded (as bits) and its relative error. `j` is in
/// `0..128` whatever `t` holds (a NaN too), so this never reads outside the table.
#[inline(always)]
pub(super) fn entry<L: Lanes>(t: L) -> (L, L, L) {
    let kb = t.int_add((SHIFTER.to_bits() as i64).wrapping_sub(BIAS).wrapping_neg() as u64);
    let (top, tail) = kb.table();
    (kb, top, tail)
}

#[cfg(test)]
mod tests {
    //! The error bound against an independent reference: `exp` in double-double arithmetic
    //! (about 100 bits) by a different method, a Taylor series of `exp(r/1024)` squared ten
    //! times.

    use super::super::reference::*;
    use super::*;

    fn exp(x: f64) -> f64 {
        super::exp::<f64>(x)
    }

    const LN2: Dd = (f64::from_bits(0x3fe6_2e42_fefa_39ef), f64::from_bits(0x3c7a_bc9e_3b39_803f));

    /// `exp(x) = m * 2^k` with `m` in double-double, for `|x| < 750`.
    fn exp_dd(x: Dd) -> (Dd, i32) {
        let k = (x.0 / LN2.0).round();
        let r = add(x, mul((-k, 0.0), LN2));
        let s = (r.0 / 1024.0, r.1 / 1024.0);
        let mut term: Dd = (1.0, 0.0);
        let mut sum: Dd = (1.0, 0.0);
        for i in 1..=12 {
            term = div_small(mul(term, s), f64::from(i));
            sum = add(sum, term);
        }
        for _ in 0..10 {
            sum = mul(sum, sum);
        }
        (sum, k as i32)
    }

    /// The error of `got` in units of its last place, against the exact `want = m * 2^k`.
    fn ulps_scaled(got: f64, (m, k): (Dd, i32)) -> f64 {
        // 2^k in two factors: 2^1024 itself is not a float.
        let (a, b) = (2f64.powi(k / 2), 2f64.powi(k - k / 2));
        let ulp = f64::from_bits(got.to_bits() & 0x7ff0_0000_0000_0000) * f64::EPSILON;
        // Compared at m's scale (exact for a normal `got`), where `m.1` does not underflow.
        let (got, ulp) = (got / a / b, ulp / a / b);
        ((got - m.0) - m.1).abs() / ulp
    }

    #[test]
    fn exp_is_within_half_an_ulp_and_a_hundredth() {
        let mut s = Stream(1);
        let mut points: Vec<f64> = (0..200_000).map(|_| -708.0 + 1417.0 * s.unit()).collect();
        points.extend((0..100_000).map(|_| (s.unit() - 0.5) * 2.0));
        points.extend((0..2_000).map(|i| f64::from(i - 1000) * std::f64::consts::LN_2 / 2.0));
        points.extend((-60..0).map(|e| 2f64.powi(e)).flat_map(|x| [x, -x]));
        points.extend([0.0, -0.0, 709.78, -708.39, 1.0, -1.0, 0.5]);
        let mut worst = (0.0, 0.0);
        for &x in &points {
            let got = exp(x);
            let want = exp_dd((x, 0.0));
            // Results below the normal range are checked against libm below.
            if got < f64::MIN_POSITIVE {
                continue;
            }
            let e = ulps_scaled(got, want);
            if e > worst.0 {
                worst = (e, x);
            }
        }
        println!("exp: worst error {:.3} ulp at {}", worst.0, worst.1);
        assert!(worst.0 <= 0.51, "exp({}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn exp_edges() {
        let close = |a: f64, b: f64| a == b || (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 1;
        for x in [709.782712893384, 709.79, 710.0, 1e300, f64::INFINITY] {
            assert_eq!(exp(x), x.exp(), "exp({x})");
        }
        for x in [-745.2, -746.0, -1e300, f64::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0, "exp({x})");
        }
        assert!(exp(f64::NAN).is_nan());
        // The subnormal range, rounded once: within one unit of libm's.
        let mut x = -708.5;
        while x > -745.2 {
            assert!(close(exp(x), x.exp()), "exp({x}) = {}, libm {}", exp(x), x.exp());
            x -= 0.0137;
        }
        assert_eq!(exp(-745.1332191019411), f64::from_bits(1));
        assert_eq!(exp(1.0), std::f64::consts::E);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(std::f64::consts::LN_2), 2.0);
    }

    /// Every table entry against `2^(j/128)` in double-double.
    #[test]
    fn table_is_exact() {
        for (j, &[top, tail]) in TABLE.iter().enumerate() {
            let (m, k) = exp_dd(mul((j as f64 / 128.0, 0.0), LN2));
            let exact = add(m, (0.0, 0.0));
            let exact = (exact.0 * 2f64.powi(k), exact.1 * 2f64.powi(k));
            assert_eq!(f64::from_bits(top), exact.0, "entry {j}");
            let want = exact.1 / exact.0;
            let got = f64::from_bits(tail);
            // The reference holds about 96 bits: the tail is checked to 2^-90 of the entry.
            assert!((got - want).abs() <= 2f64.powi(-90), "tail {j}: {got:e}, want {want:e}");
        }
    }
}
