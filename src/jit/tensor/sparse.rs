//! Zero-skipping matrix products for a left operand that is data (MNIST pixels are 81 %
//! zeros): `c = a @ b` computed from the list of `a`'s nonzeros. Exact, except that products
//! with a zero are skipped, so `0 * inf` and `0 * NaN` give no NaN (a NaN weight still reaches
//! the loss through the nonzero entries, where the training loop's checks see it) and a sum of
//! only `-0.0` terms is `+0.0`.
//!
//! **Listing.** `a` is read along its contiguous direction (its rows for `x @ W`, its columns
//! for `xᵀ @ δ`), eight values at a time into a bit mask, and each line's nonzeros are written
//! as `(position, value)` into the line's own stretch of the listing, so lines can be listed
//! by different threads. If more than a third of `a` is nonzero, skipping is not worth it and
//! the caller runs the dense GEMM instead.
//!
//! **Gathering.** Every row of `c` is a sum of rows of `b` picked by the nonzeros of one row
//! of `a`: `c[i,:] = Σ a[i,p]·b[p,:]`. A row of `c` is built 64 columns at a time in eight
//! AVX2 registers (when the processor has AVX2 and FMA; plain loops otherwise) and stored
//! once, so `c` is written exactly once and never read. With columns listed (`xᵀ @ δ`), the
//! listing is first regrouped by row of `a` (a counting sort: count per row, prefix sums,
//! place), which keeps the same gather. Rows of `c` are independent: they are shared between
//! the team's threads (`team.rs`), and so are the lines of the listing.
//!
//! **Reuse within a run.** A training step multiplies the same batch twice (`x @ W1` forward,
//! `xᵀ @ δ1` backward), and both read it along the same lines. While a compiled program runs
//! ([`begin_run`]) its data inputs do not change, so a listing made earlier in the same run,
//! of the same memory with the same lines, is used again; outside a run nothing is reused.
//!
//! Worked example: `a = [[0, 2], [3, 0]]` by rows lists line 0 as `[(1, 2)]` and line 1 as
//! `[(0, 3)]`; `c[0,:] = 2·b[1,:]`, `c[1,:] = 3·b[0,:]`. Seen as columns (`aᵀ`), the same
//! memory gives lines `[(1, 2)]`, `[(0, 3)]` that the regrouping turns into row 0 (of `aᵀ`):
//! `[(1, 3)]`, row 1: `[(0, 2)]`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::jit::team;

/// What a listing was made of: the run, the memory and how it was cut into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    run: u64,
    a: usize,
    lines: usize,
    len: usize,
    stride: isize,
}

/// The nonzeros of one operand, by line, and (when asked for) regrouped by position.
#[derive(Default)]
struct Listing {
    key: Option<Key>,
    /// Nonzeros of line `l`: `idx`/`val[l * (len + 8) ..][..count[l]]` (the 8 spare entries
    /// let a line be listed with whole 8-lane stores).
    count: Vec<u32>,
    idx: Vec<u32>,
    val: Vec<f32>,
    total: usize,
    /// Regrouped by position `p`: `(line, value)` at `t_idx`/`t_val[t_start[p]..t_start[p+1]]`.
    regrouped: bool,
    t_start: Vec<u32>,
    /// Scratch of the regrouping: the next free place of each position.
    t_count: Vec<u32>,
    t_idx: Vec<u32>,
    t_val: Vec<f32>,
}

thread_local! {
    /// The run this thread is in (0: none, nothing is reused).
    static RUN: Cell<u64> = const { Cell::new(0) };
    static LISTING: RefCell<Listing> = RefCell::new(Listing::default());
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// Marks the current thread as running a compiled program until the guard drops: data
/// inputs do not change meanwhile, so listings can be reused.
pub fn begin_run() -> RunGuard {
    let id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    RUN.with(|r| r.set(id));
    RunGuard(())
}

/// Ends the run begun by [`begin_run`] when dropped.
pub struct RunGuard(());

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUN.with(|r| r.set(0));
    }
}

/// A pointer that may cross to the team's threads (each chunk touches its own part).
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: only used to hand disjoint parts of one buffer to the chunks of one job, which
// all finish before the buffer is touched again.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Whether AVX2 and FMA may be used.
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = a @ b` skipping `a`'s zeros; `false` (nothing written) when the layout does not
/// suit it or `a` is too dense, and the caller must run the dense product.
///
/// # Safety
/// As `runtime::sd_sgemm`: every pointer valid for the elements its strides and sizes
/// reach, `c` not overlapping `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) -> bool {
    let by_rows = csa == 1;
    if csb != 1
        || csc != 1
        || m == 0
        || n == 0
        || k == 0
        || !(by_rows || rsa == 1)
        || m.max(k) > u32::MAX as usize
    {
        return false;
    }
    // Lines of `a` along its contiguous direction: rows (len k) or columns (len m).
    let (lines, len, stride) = if by_rows { (m, k, rsa) } else { (k, m, csa) };
    let key = Key { run: RUN.with(Cell::get), a: a as usize, lines, len, stride };
    let fast = avx2();
    LISTING.with_borrow_mut(|l| {
        if key.run == 0 || l.key != Some(key) {
            // SAFETY: `a` holds `lines` lines of `len` floats `stride` apart (contract).
            unsafe { l.list(key, a, fast) };
        }
        if l.total > lines * len / 3 {
            return false;
        }
        // Rows of `c` gather rows of `b` picked by the nonzeros of a row of `a`: the listing's
        // lines when they are rows, its regrouping when they are columns.
        if !by_rows {
            l.regroup();
        }
        let l = &*l;
        let row = |i: usize| -> (&[u32], &[f32]) {
            let (s, e) = if by_rows {
                (i * (len + 8), i * (len + 8) + l.count[i] as usize)
            } else {
                (l.t_start[i] as usize, l.t_start[i + 1] as usize)
            };
            (&l.idx_of(by_rows)[s..e], &l.val_of(by_rows)[s..e])
        };
        let (b, c) = (Shared(b as *mut f32), Shared(c));
        let chunks = (l.total * n / 32768).clamp(1, m);
        team::for_each(chunks, &|ch| {
            for i in m * ch / chunks..m * (ch + 1) / chunks {
                let (idx, val) = row(i);
                // SAFETY: row `i` of `c` is this chunk's alone; listed rows of `b` exist.
                unsafe { gather(c.get().offset(i as isize * rsc), n, idx, val, b.get(), rsb, fast) };
            }
        });
        true
    })
}

impl Listing {
    /// The positions of the entries: by line, or regrouped.
    fn idx_of(&self, by_line: bool) -> &[u32] {
        if by_line { &self.idx } else { &self.t_idx }
    }

    /// The values of the entries: by line, or regrouped.
    fn val_of(&self, by_line: bool) -> &[f32] {
        if by_line { &self.val } else { &self.t_val }
    }

    /// Lists the nonzeros of `lines` lines of `len` floats, `stride` apart, from `a`.
    ///
    /// # Safety
    /// `a` must hold those lines.
    unsafe fn list(&mut self, key: Key, a: *const f32, fast: bool) {
        let (lines, len) = (key.lines, key.len);
        self.key = None;
        self.regrouped = false;
        self.count.clear();
        self.count.resize(lines, 0);
        let stretch = len + 8;
        if self.idx.len() < lines * stretch {
            self.idx.resize(lines * stretch, 0);
            self.val.resize(lines * stretch, 0.0);
        }
        let (count, idx, val) =
            (Shared(self.count.as_mut_ptr()), Shared(self.idx.as_mut_ptr()), Shared(self.val.as_mut_ptr()));
        let a = Shared(a as *mut f32);
        let chunks = (lines * len / 8192).clamp(1, lines);
        team::for_each(chunks, &|ch| {
            for l in lines * ch / chunks..lines * (ch + 1) / chunks {
                // SAFETY: line `l` is in `a` (contract); its stretch of the listing and its
                // count belong to this chunk alone.
                unsafe {
                    let line = a.get().offset(l as isize * key.stride);
                    let n =
                        list_line(line, len, idx.get().add(l * stretch), val.get().add(l * stretch), fast);
                    *count.get().add(l) = n as u32;
                }
            }
        });
        self.total = self.count.iter().map(|&n| n as usize).sum();
        self.key = Some(key);
    }

    /// Regroups the listing by position (see the module doc), once per listing: a counting
    /// sort (count per position, prefix sums, place), on one thread: split by lines, threads
    /// would write entries of the same position side by side and the cache lines they share
    /// would bounce between processors (measured 2x slower).
    fn regroup(&mut self) {
        if self.regrouped {
            return;
        }
        let Some(key) = self.key else { return };
        let (len, stretch, total) = (key.len, key.len + 8, self.total);
        let Listing { count, idx, val, t_start, t_count, t_idx, t_val, .. } = self;
        t_start.clear();
        t_start.resize(len + 1, 0);
        t_idx.resize(total, 0);
        t_val.resize(total, 0.0);
        let lines = || count.iter().enumerate().map(|(l, &n)| (l, l * stretch, n as usize));
        // SAFETY (both passes): listed positions are below `len`, so `p + 1 <= len` indexes
        // `t_start`; the places handed out are below `total`, the length of `t_idx`/`t_val`.
        // Raw pointers keep the loops free of reloads (the writes could alias the slices).
        unsafe {
            let start = t_start.as_mut_ptr();
            for (_, s, n) in lines() {
                for &p in idx.get_unchecked(s..s + n) {
                    *start.add(p as usize + 1) += 1;
                }
            }
            for p in 0..len {
                *start.add(p + 1) += *start.add(p);
            }
            // Each position's next free place (`t_start` itself stays as computed).
            t_count.clear();
            t_count.extend_from_slice(&t_start[..len]);
            let next = t_count.as_mut_ptr();
            let (t_idx, t_val) = (t_idx.as_mut_ptr(), t_val.as_mut_ptr());
            for (l, s, n) in lines() {
                let (pos, vals) = (idx.as_ptr().add(s), val.as_ptr().add(s));
                for e in 0..n {
                    let p = *pos.add(e) as usize;
                    let at = *next.add(p) as usize;
                    *next.add(p) = at as u32 + 1;
                    *t_idx.add(at) = l as u32;
                    *t_val.add(at) = *vals.add(e);
                }
            }
        }
        self.regrouped = true;
    }
}

/// Writes the nonzeros of `line[..len]` to `idx`/`val`; returns how many.
///
/// # Safety
/// `line` holds `len` floats; `idx` and `val` have room for `len + 8` entries.
unsafe fn list_line(line: *const f32, len: usize, idx: *mut u32, val: *mut f32, fast: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2 was detected; buffers as in the contract.
        return unsafe { list_line_avx2(line, len, idx, val) };
    }
    let _ = fast;
    let mut n = 0;
    for t in 0..len {
        // SAFETY: `t < len` (contract).
        unsafe {
            let x = *line.add(t);
            if x != 0.0 {
                *idx.add(n) = t as u32;
                *val.add(n) = x;
                n += 1;
            }
        }
    }
    n
}

/// For each 8-bit mask, the positions of its set bits, first to last (then zeros).
static COMPRESS: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut bit, mut n) = (0, 0);
        while bit < 8 {
            if mask & (1 << bit) != 0 {
                t[mask][n] = bit as u32;
                n += 1;
            }
            bit += 1;
        }
        mask += 1;
    }
    t
};

/// [`list_line`] eight values at a time, without branching on the data: the nonzero lanes
/// are moved to the front by a permutation looked up from their mask ([`COMPRESS`]) and all
/// eight lanes are stored; the count advances by the number of nonzeros.
///
/// # Safety
/// As `list_line`, on a processor with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn list_line_avx2(line: *const f32, len: usize, idx: *mut u32, val: *mut f32) -> usize {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_ps();
    let (mut n, mut at) = (0, 0);
    while at + 8 <= len {
        // SAFETY: `at + 8 <= len`; `n <= at`, so the stores end before `len + 8` (contract).
        unsafe {
            let v = _mm256_loadu_ps(line.add(at));
            let mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero)) as usize;
            let perm = _mm256_loadu_si256(COMPRESS[mask].as_ptr() as *const __m256i);
            _mm256_storeu_ps(val.add(n), _mm256_permutevar8x32_ps(v, perm));
            let positions = _mm256_add_epi32(perm, _mm256_set1_epi32(at as i32));
            _mm256_storeu_si256(idx.add(n) as *mut __m256i, positions);
            n += mask.count_ones() as usize;
        }
        at += 8;
    }
    while at < len {
        // SAFETY: `at < len`, `n <= at`.
        unsafe {
            let x = *line.add(at);
            if x != 0.0 {
                *idx.add(n) = at as u32;
                *val.add(n) = x;
                n += 1;
            }
        }
        at += 1;
    }
    n
}

/// `c_row[..n] = Σ val[e] · b[idx[e], ..n]`.
///
/// # Safety
/// `c_row` holds `n` floats not overlapping `b`; every listed row of `b` (`rsb` apart) holds
/// `n` floats.
unsafe fn gather(c_row: *mut f32, n: usize, idx: &[u32], val: &[f32], b: *const f32, rsb: isize, fast: bool) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX2 and FMA were detected; buffers as in the contract.
        return unsafe { gather_avx2(c_row, n, idx, val, b, rsb) };
    }
    let _ = fast;
    for j in 0..n {
        let mut acc = 0.0f32;
        for (&p, &v) in idx.iter().zip(val) {
            // SAFETY: row `p` of `b` holds `n > j` floats (contract).
            acc += v * unsafe { *b.offset(p as isize * rsb + j as isize) };
        }
        // SAFETY: `j < n` (contract).
        unsafe { *c_row.add(j) = acc };
    }
}

/// [`gather`] in AVX2: 64 columns at a time in eight accumulators, then 8, then one.
///
/// # Safety
/// As `gather`, on a processor with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_avx2(c_row: *mut f32, n: usize, idx: &[u32], val: &[f32], b: *const f32, rsb: isize) {
    use std::arch::x86_64::*;
    let mut j = 0;
    // SAFETY (all blocks below): columns `j..j + width` are below `n`, so every load is
    // inside a listed row of `b` and every store inside `c_row` (contract).
    while j + 64 <= n {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (&p, &v) in idx.iter().zip(val) {
            let vb = _mm256_set1_ps(v);
            let src = unsafe { b.offset(p as isize * rsb + j as isize) };
            for (q, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(vb, unsafe { _mm256_loadu_ps(src.add(8 * q)) }, *a);
            }
        }
        for (q, a) in acc.iter().enumerate() {
            unsafe { _mm256_storeu_ps(c_row.add(j + 8 * q), *a) };
        }
        j += 64;
    }
    while j + 8 <= n {
        let mut acc = _mm256_setzero_ps();
        for (&p, &v) in idx.iter().zip(val) {
            let src = unsafe { b.offset(p as isize * rsb + j as isize) };
            acc = _mm256_fmadd_ps(_mm256_set1_ps(v), unsafe { _mm256_loadu_ps(src) }, acc);
        }
        unsafe { _mm256_storeu_ps(c_row.add(j), acc) };
        j += 8;
    }
    while j < n {
        let mut acc = 0.0f32;
        for (&p, &v) in idx.iter().zip(val) {
            acc = v.mul_add(unsafe { *b.offset(p as isize * rsb + j as isize) }, acc);
        }
        unsafe { *c_row.add(j) = acc };
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    //! The zero-skipping product against a plain triple loop, for both layouts of the sparse
    //! operand, densities on both sides of the switch to the dense GEMM, and reuse in a run.

    use super::{begin_run, product};

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
        let (rsa, csa) = if transposed { (1, m as isize) } else { (k as isize, 1) };
        let at = |i: usize, p: usize| a[(i as isize * rsa + p as isize * csa) as usize];
        let mut sparse = vec![f32::NAN; m * n];
        // SAFETY: every buffer holds the elements its sizes and strides reach.
        let done = unsafe {
            product(
                m,
                n,
                k,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                n as isize,
                1,
                sparse.as_mut_ptr(),
                n as isize,
                1,
            )
        };
        let nonzero = a.iter().filter(|x| **x != 0.0).count();
        assert_eq!(done, nonzero <= m * k / 3, "{m}x{k}@{k}x{n} t={transposed} d={density}");
        if !done {
            return;
        }
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| at(i, p) as f64 * b[p * n + j] as f64).sum();
                let got = sparse[i * n + j] as f64;
                assert!(
                    (want - got).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{m}x{k}@{k}x{n} t={transposed} d={density} ({i},{j}): {want} vs {got}"
                );
            }
        }
    }

    #[test]
    fn zero_skipping_products_equal_dense_ones() {
        let shapes = [(32, 128, 784), (784, 128, 32), (7, 13, 37), (1, 1, 1), (5, 3, 16), (17, 75, 33)];
        for &(m, n, k) in &shapes {
            for transposed in [false, true] {
                for density in [0.0, 0.05, 0.2, 0.5, 1.0] {
                    check(m, n, k, transposed, density);
                }
            }
        }
        // Each inside a run of its own (as a compiled step runs them).
        for &(m, n, k) in &shapes {
            for transposed in [false, true] {
                let _run = begin_run();
                check(m, n, k, transposed, 0.2);
            }
        }
    }

    #[test]
    fn a_listing_is_reused_only_within_a_run() {
        // x (2×6) then xᵀ: the second product reuses the first's listing inside a run.
        let mut x = [0.0f32, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let w = [1.0f32, 10.0, 100.0, 1e3, 1e4, 1e5];
        let d = [1.0f32, 1.0];
        let (mut y, mut g) = ([0.0f32; 2], [0.0f32; 6]);
        let run = begin_run();
        // SAFETY: sizes and strides match the buffers.
        unsafe {
            assert!(product(2, 1, 6, x.as_ptr(), 6, 1, w.as_ptr(), 1, 1, y.as_mut_ptr(), 1, 1));
            assert!(product(6, 1, 2, x.as_ptr(), 1, 6, d.as_ptr(), 1, 1, g.as_mut_ptr(), 1, 1));
        }
        drop(run);
        assert_eq!((y, g), ([20.0, 3.0], [3.0, 2.0, 0.0, 0.0, 0.0, 0.0]));
        // Outside a run, data changed in place is listed afresh.
        x[0] = 5.0;
        // SAFETY: as above.
        unsafe { assert!(product(2, 1, 6, x.as_ptr(), 6, 1, w.as_ptr(), 1, 1, y.as_mut_ptr(), 1, 1)) };
        assert_eq!(y, [25.0, 3.0]);
    }
}
