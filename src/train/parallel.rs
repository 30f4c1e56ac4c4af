//! Data-parallel training: N ranks, each holding the whole model, share every global batch.
//!
//! **The contract.** Rank `r` of `n` takes rows `[B r / n, B (r + 1) / n)` of each global
//! batch of `B` samples (the model file's `batch`, and the shorter last batch of an epoch the
//! same way), computes the loss and gradients of its rows, and the ranks exchange them: every
//! rank receives every rank's partial results ([`Collective::all_gather`]) and sums them in
//! rank order, each weighted by its share of the batch, `b_r / B`, so the result is the
//! gradient of the global batch's mean loss, **bit for bit the same on every rank and in every
//! run with the same `n`**. Every rank then applies the same update to the same parameters,
//! so no parameters are ever sent.
//!
//! Against one process at the same global batch, the numbers differ only by the order of
//! additions: one process sums a gradient over all `B` rows inside its matrix products, N
//! ranks over their rows and then across ranks. After 5 steps the parameters agree to about
//! 2e-7 (relative); the tests hold them within 1e-4 of the largest after two epochs.
//!
//! What makes it the same training: every rank draws from the same ChaCha8 stream in the
//! same order (one process's draws): the same shuffle, and each dropout mask drawn for the
//! whole global batch, of which a rank keeps its rows. Refused (`Trainer::join`): batch
//! normalisation, whose statistics would be each rank's rows', and `loss = ...` formulas,
//! which need not be a mean over the samples that the weighted sum assumes.
//!
//! The exchange is a [`Collective`]: MPI across processes (`Mpi`, behind the cargo feature
//! `mpi`), or threads in one process ([`ThreadTeam`], which the tests use to check the
//! contract without MPI).

use std::sync::{Arc, Barrier, Mutex};

/// Rows `[lo, hi)` of a batch of `len` rows that rank `rank` of `size` takes.
pub fn rows(len: usize, rank: usize, size: usize) -> (usize, usize) {
    (len * rank / size, len * (rank + 1) / size)
}

/// An exchange between the ranks of one training job.
pub trait Collective {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// How many ranks train together.
    fn size(&self) -> usize;
    /// Every rank's `local` (all of one length), concatenated in rank order into `all`
    /// (`size * local.len()` values).
    fn all_gather(&self, local: &[f32], all: &mut [f32]);
}

/// `Σ_r weight(r) * parts[r]` into `out`, in f64 (in `acc`, as long as `out`) rounded once to
/// f32, adding rank 0's part first, then rank 1's, ...: the one order every rank uses, so
/// every rank gets the same bits.
pub fn ordered_sum(
    all: &[f32],
    size: usize,
    weight: impl Fn(usize) -> f64,
    acc: &mut [f64],
    out: &mut [f32],
) {
    let n = out.len();
    debug_assert!(all.len() == n * size && acc.len() == n);
    for r in 0..size {
        let w = weight(r);
        let part = &all[r * n..(r + 1) * n];
        if r == 0 {
            acc.iter_mut().zip(part).for_each(|(s, &a)| *s = w * f64::from(a));
        } else {
            acc.iter_mut().zip(part).for_each(|(s, &a)| *s += w * f64::from(a));
        }
    }
    out.iter_mut().zip(acc.iter()).for_each(|(o, &s)| *o = s as f32);
}

/// The ranks whose `digest` (of the model file and the data) differs from rank 0's, found by
/// exchanging it (as four 16-bit pieces, exact in `f32`): a rank started on another file or
/// other data is caught before training, not seen as wrong numbers later.
pub fn disagreeing(team: &dyn Collective, digest: u64) -> Vec<usize> {
    let piece = |k: u32| ((digest >> (16 * k)) & 0xffff) as f32;
    let mine = [piece(0), piece(1), piece(2), piece(3)];
    let mut all = vec![0.0f32; 4 * team.size()];
    team.all_gather(&mine, &mut all);
    (1..team.size()).filter(|&r| all[4 * r..4 * r + 4] != all[..4]).collect()
}

/// Ranks as threads of one process, exchanging through shared memory: the same contract as
/// MPI's ranks, for tests and for checking the arithmetic without an MPI installation.
pub struct ThreadTeam {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

impl ThreadTeam {
    /// One handle per rank, to be moved to that rank's thread.
    pub fn new(size: usize) -> Vec<ThreadTeam> {
        let shared =
            Arc::new(Shared { size, slots: Mutex::new(vec![Vec::new(); size]), barrier: Barrier::new(size) });
        (0..size).map(|rank| ThreadTeam { rank, shared: shared.clone() }).collect()
    }
}

impl Collective for ThreadTeam {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(&self, local: &[f32], all: &mut [f32]) {
        let lock = || self.shared.slots.lock().unwrap_or_else(|e| e.into_inner());
        lock()[self.rank] = local.to_vec();
        self.shared.barrier.wait();
        {
            let slots = lock();
            for (dst, part) in all.chunks_exact_mut(local.len().max(1)).zip(slots.iter()) {
                dst.copy_from_slice(&part[..dst.len()]);
            }
        }
        // Nobody writes the next round's part before everyone has read this one.
        self.shared.barrier.wait();
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_ranks::{Mpi, launched_by_mpirun};

#[cfg(feature = "mpi")]
mod mpi_ranks {
    //! The ranks of an `mpirun` job (rsmpi over the system's MPI library).

    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::CommunicatorCollectives;

    use super::Collective;

    /// Whether this process was started by `mpirun`/`mpiexec` (Open MPI's or MPICH's
    /// launcher sets these): only then is MPI initialised, so that the binary run on its
    /// own behaves exactly as one built without MPI.
    pub fn launched_by_mpirun() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
    }

    /// MPI's world communicator; finalises MPI when dropped.
    pub struct Mpi {
        _universe: mpi::environment::Universe,
        world: SimpleCommunicator,
    }

    impl Mpi {
        /// Initialises MPI; `None` if it was initialised already or cannot be.
        pub fn init() -> Option<Mpi> {
            let universe = mpi::initialize()?;
            let world = universe.world();
            Some(Mpi { _universe: universe, world })
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_gather(&self, local: &[f32], all: &mut [f32]) {
            self.world.all_gather_into(local, all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_the_batch_once_in_rank_order() {
        for len in [0, 1, 5, 64, 100] {
            for size in 1..=5 {
                let mut next = 0;
                for r in 0..size {
                    let (lo, hi) = rows(len, r, size);
                    assert_eq!(lo, next, "len {len}, {size} ranks");
                    next = hi;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn ranks_with_another_digest_are_named() {
        let found: Vec<Vec<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadTeam::new(4)
                .into_iter()
                .map(|t| {
                    s.spawn(move || {
                        let digest =
                            if t.rank() == 2 { 0xdead_beef_0000_0001 } else { 0xdead_beef_0000_0000 };
                        disagreeing(&t, digest)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(found.iter().all(|f| f == &[2]), "{found:?}");
    }

    #[test]
    fn a_thread_team_gathers_in_rank_order_every_round() {
        let team = ThreadTeam::new(3);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = team
                .into_iter()
                .map(|t| {
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        for round in 0..50 {
                            let mine = [t.rank() as f32, round as f32];
                            let mut all = [0.0; 6];
                            t.all_gather(&mine, &mut all);
                            let mut sum = [0.0; 2];
                            ordered_sum(&all, 3, |r| (r + 1) as f64, &mut [0.0; 2], &mut sum);
                            seen.extend(all);
                            seen.extend(sum);
                        }
                        seen
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for round in 0..50 {
            let r = round as f32;
            let want = [0.0, r, 1.0, r, 2.0, r, 8.0, 6.0 * r];
            for seen in &results {
                assert_eq!(seen[round * 8..round * 8 + 8], want);
            }
        }
    }
}

#[cfg(test)]
mod contract {
    //! The contract, with ranks as threads: N ranks against one process at the same global
    //! batch, for every layer kind, both losses and every optimizer, compiled and interpreted;
    //! every rank holds the same bits, and a second run gives them again.

    use ndarray::ArrayD;

    use super::{Collective, ThreadTeam};
    use crate::model::ModelSpec;
    use crate::train::trainer::{Dataset, Trainer};

    const SAMPLES: usize = 53;

    fn data() -> (Vec<u8>, Vec<u32>) {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let images = (0..SAMPLES * 784).map(|_| if next() % 4 == 0 { next() as u8 } else { 0 }).collect();
        let labels = (0..SAMPLES).map(|_| (next() % 10) as u32).collect();
        (images, labels)
    }

    /// Parameters and epoch losses after two epochs, for a team of `ranks` (1: no team).
    fn run(spec: &ModelSpec, ranks: usize, compiled: bool) -> Vec<(Vec<ArrayD<f32>>, Vec<f64>)> {
        let (images, labels) = data();
        let train = |team: Option<ThreadTeam>| {
            let data = Dataset::images(&images, &labels, vec![28, 28]);
            let mut t = Trainer::new(spec.clone()).unwrap();
            if let Some(team) = team {
                t.join(Box::new(team)).unwrap();
            }
            if compiled {
                t.compile(false).unwrap();
            }
            let losses = (1..=2).map(|e| t.train_epoch(&data, e, &mut |_| {}).unwrap().0).collect();
            t.sync();
            (t.params.clone(), losses)
        };
        if ranks == 1 {
            return vec![train(None)];
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = ThreadTeam::new(ranks)
                .into_iter()
                .map(|team| {
                    let train = &train;
                    s.spawn(move || train(Some(team)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn check(name: &str, body: &str, optimizer: &str) {
        // 53 samples at batch 10: five full batches and a last one of 3, split unevenly.
        let src = format!("data mnist\ninput 28x28\n{body}\noptimizer {optimizer}\ntrain batch=10 seed=5\n");
        let spec = ModelSpec::parse(&src, "test").unwrap_or_else(|e| panic!("{}", e.render()));
        for compiled in [false, true] {
            let one = run(&spec, 1, compiled).remove(0);
            for ranks in [2, 3] {
                let team = run(&spec, ranks, compiled);
                let again = run(&spec, ranks, compiled);
                let what = format!("{name}, {ranks} ranks, compiled {compiled}");
                for (r, (params, losses)) in team.iter().enumerate() {
                    assert_eq!(params, &team[0].0, "{what}: rank {r} differs from rank 0");
                    assert_eq!(losses, &team[0].1, "{what}: rank {r}'s losses");
                    assert_eq!(params, &again[r].0, "{what}: a second run differs");
                }
                for (k, (a, b)) in one.0.iter().zip(&team[0].0).enumerate() {
                    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    let err = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(err <= 1e-4 * scale, "{what}: parameter {k} differs by {err} (scale {scale})");
                }
                for (a, b) in one.1.iter().zip(&team[0].1) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{what}: epoch loss {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn ranks_train_as_one_process_does() {
        let sce = "loss softmax_cross_entropy";
        check("seed", &format!("flatten\ndense 12 relu\ndropout 0.3\ndense 10\n{sce}"), "adam");
        check(
            "leaky",
            &format!("flatten\ndense 12\nleaky_relu(0.2)\ndropout 0.5\ndense 10\n{sce}"),
            "sgd lr=0.05",
        );
        check(
            "elu",
            &format!("flatten\ndense 12\nelu(0.7)\ndense 10 l2=0.01\n{sce}"),
            "sgd lr=0.05 momentum=0.9",
        );
        check(
            "sigmoid",
            &format!("flatten\ndense 12 sigmoid\ndense 10\n{sce}"),
            "sgd lr=0.05 momentum=0.9 nesterov=true",
        );
        check("tanh", "flatten\ndense 12 tanh\ndense 10\nloss mse", "adam beta1=0.8");
        check("softplus", &format!("flatten\ndense 12 softplus\ndense 10\n{sce}"), "adam");
    }

    #[test]
    fn batch_normalisation_and_formula_losses_are_refused_with_the_reason() {
        for (body, want) in [
            (
                "flatten\ndense 12\nbatchnorm\nrelu\ndense 10\nloss softmax_cross_entropy",
                "batch normalisation",
            ),
            ("flatten\ndense 10\nloss = sum(logits^2)", "formula"),
        ] {
            let src = format!("data mnist\ninput 28x28\n{body}\noptimizer adam\ntrain batch=10\n");
            let spec = ModelSpec::parse(&src, "test").unwrap_or_else(|e| panic!("{}", e.render()));
            let mut t = Trainer::new(spec.clone()).unwrap();
            let team = ThreadTeam::new(2).remove(0);
            let e = t.join(Box::new(team)).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            // A team of one is no team: nothing to refuse.
            let mut t = Trainer::new(spec).unwrap();
            assert!(t.join(Box::new(ThreadTeam::new(1).remove(0))).is_ok());
            assert_eq!(t.rank(), (0, 1));
            let _ = ThreadTeam::new(1)[0].size();
        }
    }
}
