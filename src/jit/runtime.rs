//! Host functions the generated code calls: every transcendental that has no Cranelift
//! instruction (Cranelift has none for exp, log, sin, ...).
//!
//! Each is an `extern "C"` wrapper around **the same Rust function the interpreter uses**
//! (the function table's `eval`), so compiled code and interpreter agree to the bit on them.
//! Registered by name with the JIT builder; an unregistered name would panic inside Cranelift
//! at finalize time, so `lower.rs` only ever names functions from [`HOST_FUNCTIONS`].

use crate::graph::Func;

macro_rules! host {
    ($($name:ident => $func:expr),* $(,)?) => {
        $(
            extern "C" fn $name(x: f64) -> f64 {
                Func::eval($func, x)
            }
        )*
        /// `(symbol, address, function)` for every unary host function.
        pub fn unary() -> Vec<(&'static str, *const u8, Func)> {
            vec![$((stringify!($name), $name as extern "C" fn(f64) -> f64 as *const u8, $func)),*]
        }
    };
}

host! {
    sd_exp => Func::Exp,
    sd_log => Func::Log,
    sd_sin => Func::Sin,
    sd_cos => Func::Cos,
    sd_tan => Func::Tan,
    sd_asin => Func::Asin,
    sd_acos => Func::Acos,
    sd_atan => Func::Atan,
    sd_sinh => Func::Sinh,
    sd_cosh => Func::Cosh,
    sd_tanh => Func::Tanh,
    sd_sigmoid => Func::Sigmoid,
    sd_softplus => Func::Softplus,
}

/// `b^e` for exponents the generated code does not expand inline (same as the interpreter).
pub extern "C" fn sd_pow(b: f64, e: f64) -> f64 {
    crate::graph::eval::pow(b, e)
}

/// The symbol of the host function computing `f`, if `f` is computed by a call.
pub fn symbol_of(f: Func) -> Option<&'static str> {
    unary().into_iter().find(|(_, _, g)| *g == f).map(|(name, _, _)| name)
}

/// Every host symbol with its address, for the JIT builder.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    let mut v: Vec<(&'static str, *const u8)> = unary().into_iter().map(|(n, p, _)| (n, p)).collect();
    v.push(("sd_pow", sd_pow as extern "C" fn(f64, f64) -> f64 as *const u8));
    type Gemm =
        unsafe extern "C" fn(i64, i64, i64, *const f32, i64, i64, *const f32, i64, i64, *mut f32, i64, i64);
    v.push(("sd_sgemm", sd_sgemm as Gemm as *const u8));
    v.push(("sd_sgemm_sparse_lhs", sd_sgemm_sparse_lhs as Gemm as *const u8));
    v
}

/// `c = a @ b` in f32 (`m×k` times `k×n`), every operand given by a pointer and its row and
/// column strides in elements: the GEMM that compiled training steps call.
///
/// # Safety
/// Every pointer must be valid for the elements its strides and sizes reach; `c` must not
/// overlap `a` or `b`. Compiled steps only pass slices of their arena checked when planned.
pub unsafe extern "C" fn sd_sgemm(
    m: i64,
    n: i64,
    k: i64,
    a: *const f32,
    rsa: i64,
    csa: i64,
    b: *const f32,
    rsb: i64,
    csb: i64,
    c: *mut f32,
    rsc: i64,
    csc: i64,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        matrixmultiply::sgemm(
            m as usize,
            k as usize,
            n as usize,
            1.0,
            a,
            rsa as isize,
            csa as isize,
            b,
            rsb as isize,
            csb as isize,
            0.0,
            c,
            rsc as isize,
            csc as isize,
        )
    }
}

/// `c = a @ b` for a left operand that is data and often mostly zeros (MNIST pixels are 81 %
/// zeros): the products with a zero are skipped, which is exact, except that `0 * inf` and
/// `0 * NaN` are skipped too instead of giving NaN (a NaN weight still reaches the loss
/// through the nonzero entries, where the training loop's checks see it).
///
/// `a` is read along its contiguous direction, 16 values at a time into a bit mask, listing
/// the nonzero entries of each line; if more than a third are nonzero the dense GEMM is faster
/// and is called instead. With rows contiguous (`x @ W`), each row of `c` gathers the rows of
/// `b` its nonzeros pick: `c[i,:] = Σ_k a[i,k]·b[k,:]`. With columns contiguous (`xᵀ @ δ`),
/// each column scatters: `c[i,:] += a[i,k]·b[k,:]` for its nonzeros `i`. Both are AXPYs over
/// contiguous rows, compiled for AVX-512 or AVX2+FMA when the processor has them. The list
/// lives in a per-thread buffer that grows once, so steady-state calls allocate nothing.
///
/// # Safety
/// As [`sd_sgemm`].
pub unsafe extern "C" fn sd_sgemm_sparse_lhs(
    m: i64,
    n: i64,
    k: i64,
    a: *const f32,
    rsa: i64,
    csa: i64,
    b: *const f32,
    rsb: i64,
    csb: i64,
    c: *mut f32,
    rsc: i64,
    csc: i64,
) {
    let dense = || {
        // SAFETY: forwarded from this function's contract.
        unsafe { sd_sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, rsc, csc) }
    };
    let by_rows = csa == 1;
    if csb != 1
        || csc != 1
        || m <= 0
        || n <= 0
        || k <= 0
        || !(by_rows || rsa == 1)
        || m.max(k) > u32::MAX as i64
    {
        return dense();
    }
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    // Lines of `a` along its contiguous direction: rows (len k) or columns (len m).
    let (lines, len, stride) = if by_rows { (mu, ku, rsa as isize) } else { (ku, mu, csa as isize) };
    let sparse =
        Sparse { lines, len, stride, a, by_rows, m: mu, n: nu, b, rsb: rsb as isize, c, rsc: rsc as isize };
    let done = ENTRIES.with_borrow_mut(|buf| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the features were detected; pointers as in the contract.
                return unsafe { sparse.avx512(buf) };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                return unsafe { sparse.avx2(buf) };
            }
        }
        // SAFETY: pointers as in the contract.
        unsafe { sparse.run::<false>(buf) }
    });
    if !done {
        dense();
    }
}

/// Where each line's entries start, and the `(index, value)` entries.
type Lines = (Vec<u32>, Vec<(u32, f32)>);

thread_local! {
    /// Line starts and `(index, value)` entries of the last sparse operand.
    static ENTRIES: std::cell::RefCell<Lines> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A sparse-times-dense product in progress (see [`sd_sgemm_sparse_lhs`]).
struct Sparse {
    lines: usize,
    len: usize,
    stride: isize,
    a: *const f32,
    by_rows: bool,
    m: usize,
    n: usize,
    b: *const f32,
    rsb: isize,
    c: *mut f32,
    rsc: isize,
}

impl Sparse {
    /// Lists the nonzeros and, unless there are too many (then `false`, nothing written),
    /// computes the product. `FMA` rounds each term once.
    ///
    /// # Safety
    /// The pointers and strides are valid as in [`sd_sgemm`], `b` and `c` rows contiguous.
    #[inline(always)]
    unsafe fn run<const FMA: bool>(&self, (starts, entries): &mut Lines) -> bool {
        starts.clear();
        entries.clear();
        entries.reserve(self.lines * self.len);
        let limit = self.lines * self.len / 3;
        for l in 0..self.lines {
            starts.push(entries.len() as u32);
            // SAFETY: line `l` holds `len` contiguous floats (contract).
            let line =
                unsafe { std::slice::from_raw_parts(self.a.offset(l as isize * self.stride), self.len) };
            let mut chunks = line.chunks_exact(16);
            let mut at = 0u32;
            for chunk in &mut chunks {
                let mut mask = 0u32;
                for (t, x) in chunk.iter().enumerate() {
                    mask |= u32::from(*x != 0.0) << t;
                }
                while mask != 0 {
                    let t = mask.trailing_zeros();
                    entries.push((at + t, chunk[t as usize]));
                    mask &= mask - 1;
                }
                at += 16;
            }
            for (t, x) in chunks.remainder().iter().enumerate() {
                if *x != 0.0 {
                    entries.push((at + t as u32, *x));
                }
            }
            if entries.len() > limit {
                return false;
            }
        }
        starts.push(entries.len() as u32);
        let fma = |v: f32, y: f32, x: f32| if FMA { v.mul_add(y, x) } else { x + v * y };
        let brow = |k: u32| {
            // SAFETY: row `k` of `b` holds `n` contiguous floats (contract).
            unsafe { std::slice::from_raw_parts(self.b.offset(k as isize * self.rsb), self.n) }
        };
        let crow = |i: u32| {
            // SAFETY: row `i` of `c` holds `n` contiguous floats (contract), and no other
            // slice of it is alive while this one is.
            unsafe { std::slice::from_raw_parts_mut(self.c.offset(i as isize * self.rsc), self.n) }
        };
        if !self.by_rows {
            // Columns were listed: column k scatters `c[i,:] += a[i,k]·b[k,:]` into the rows
            // of its nonzeros. (Regrouping by row to gather instead measured no faster.)
            for i in 0..self.m {
                crow(i as u32).fill(0.0);
            }
            for (kk, w) in starts.windows(2).enumerate() {
                let b = brow(kk as u32);
                for &(i, v) in &entries[w[0] as usize..w[1] as usize] {
                    for (x, y) in crow(i).iter_mut().zip(b) {
                        *x = fma(v, *y, *x);
                    }
                }
            }
            return true;
        }
        // Rows were listed: c[i,:] = Σ v·b[k,:] over row i's entries, four entries per pass
        // over the row, so that `c` is loaded and stored once per four rows of `b` read.
        for (i, w) in starts.windows(2).enumerate() {
            let crow = crow(i as u32);
            crow.fill(0.0);
            let mut quads = entries[w[0] as usize..w[1] as usize].chunks_exact(4);
            for q in &mut quads {
                let (b0, b1, b2, b3) = (brow(q[0].0), brow(q[1].0), brow(q[2].0), brow(q[3].0));
                let (v0, v1, v2, v3) = (q[0].1, q[1].1, q[2].1, q[3].1);
                for ((((x, y0), y1), y2), y3) in crow.iter_mut().zip(b0).zip(b1).zip(b2).zip(b3) {
                    *x = fma(v3, *y3, fma(v2, *y2, fma(v1, *y1, fma(v0, *y0, *x))));
                }
            }
            for &(k, v) in quads.remainder() {
                for (x, y) in crow.iter_mut().zip(brow(k)) {
                    *x = fma(v, *y, *x);
                }
            }
        }
        true
    }

    /// [`Self::run`] compiled for AVX-512.
    ///
    /// # Safety
    /// As `run`, on a processor with AVX-512F and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512(&self, buf: &mut Lines) -> bool {
        // SAFETY: forwarded.
        unsafe { self.run::<true>(buf) }
    }

    /// [`Self::run`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// As `run`, on a processor with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(&self, buf: &mut Lines) -> bool {
        // SAFETY: forwarded.
        unsafe { self.run::<true>(buf) }
    }
}

#[cfg(test)]
mod sparse_tests {
    //! The zero-skipping product against the dense one, for both layouts of the sparse
    //! operand and densities on both sides of the switch to the dense GEMM.

    use super::{sd_sgemm, sd_sgemm_sparse_lhs};

    fn check(m: usize, n: usize, k: usize, transposed: bool, density: f64) {
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ (m * 31 + n * 7 + k) as u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let a: Vec<f32> =
            (0..m * k).map(|_| if next() < density { (next() * 2.0 - 1.0) as f32 } else { 0.0 }).collect();
        let b: Vec<f32> = (0..k * n).map(|_| (next() * 2.0 - 1.0) as f32).collect();
        // `a` is m×k: row-major, or the transpose of a row-major k×m matrix.
        let (rsa, csa) = if transposed { (1, m as i64) } else { (k as i64, 1) };
        let (mut dense, mut sparse) = (vec![0.0f32; m * n], vec![f32::NAN; m * n]);
        let (mi, ni, ki) = (m as i64, n as i64, k as i64);
        // SAFETY: every buffer holds the elements its sizes and strides reach.
        unsafe {
            sd_sgemm(mi, ni, ki, a.as_ptr(), rsa, csa, b.as_ptr(), ni, 1, dense.as_mut_ptr(), ni, 1);
            sd_sgemm_sparse_lhs(
                mi,
                ni,
                ki,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                ni,
                1,
                sparse.as_mut_ptr(),
                ni,
                1,
            );
        }
        for (x, y) in dense.iter().zip(&sparse) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "{m}x{k}@{k}x{n} t={transposed} d={density}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn zero_skipping_products_equal_dense_ones() {
        for &(m, n, k) in &[(32, 128, 784), (784, 128, 32), (7, 13, 37), (1, 1, 1), (5, 3, 16), (17, 31, 33)]
        {
            for transposed in [false, true] {
                for density in [0.0, 0.05, 0.2, 0.5, 1.0] {
                    check(m, n, k, transposed, density);
                }
            }
        }
    }
}
