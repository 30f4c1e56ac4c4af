//! Classification metrics for `symdiff eval`: the confusion matrix, and per class what it
//! gives (precision, recall, support).
//!
//! Owns [`Confusion`]. **Invariant:** `counts[t * classes + p]` is the number of samples of
//! true class `t` predicted as `p`, so row sums are the classes' supports, the diagonal the
//! correct predictions, and the trace over the total is the accuracy. For labels
//! `[0, 1, 1]` predicted as `[0, 1, 0]` with two classes the counts are `[1, 0, 1, 1]`:
//! class 1's recall is 1/2 and class 0's precision 1/2. It only counts; it never reads data.

use std::fmt;

/// A confusion matrix over `classes` classes.
///
/// ```
/// let mut c = symdiff::train::metrics::Confusion::new(2);
/// for (label, predicted) in [(0, 0), (1, 1), (1, 0)] {
///     c.add(label, predicted);
/// }
/// assert_eq!((c.count(1, 0), c.recall(1), c.precision(0)), (1, Some(0.5), Some(0.5)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    classes: usize,
    counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix over `classes` classes.
    pub fn new(classes: usize) -> Confusion {
        Confusion { classes, counts: vec![0; classes * classes] }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Counts one sample of class `label` predicted as `predicted`. A class beyond the
    /// matrix (a label the model has no output for) widens it.
    pub fn add(&mut self, label: usize, predicted: usize) {
        let need = label.max(predicted) + 1;
        if need > self.classes {
            let mut wider = Confusion::new(need);
            for t in 0..self.classes {
                for p in 0..self.classes {
                    wider.counts[t * need + p] = self.count(t, p);
                }
            }
            *self = wider;
        }
        self.counts[label * self.classes + predicted] += 1;
    }

    /// Samples of class `label` predicted as `predicted`.
    pub fn count(&self, label: usize, predicted: usize) -> u64 {
        self.counts[label * self.classes + predicted]
    }

    /// Samples of class `c` (its row).
    pub fn support(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.count(c, p)).sum()
    }

    /// Samples predicted as `c` (its column).
    pub fn predicted(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.count(t, c)).sum()
    }

    /// Of the samples predicted as `c`, the share that are `c`; `None` when none was.
    pub fn precision(&self, c: usize) -> Option<f64> {
        let n = self.predicted(c);
        (n > 0).then(|| self.count(c, c) as f64 / n as f64)
    }

    /// Of the samples of class `c`, the share predicted as `c`; `None` when there are none.
    pub fn recall(&self, c: usize) -> Option<f64> {
        let n = self.support(c);
        (n > 0).then(|| self.count(c, c) as f64 / n as f64)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Correct predictions over all samples (0 for none).
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// The rows (true classes) of counts.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.classes.max(1)).map(|r| r.to_vec()).collect()
    }
}

impl fmt::Display for Confusion {
    /// The matrix (rows: true class, columns: predicted), then precision, recall and support
    /// per class (`-` where a share has no samples to be taken of).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.classes;
        let w = self.counts.iter().map(|c| c.to_string().len()).max().unwrap_or(1).max(k.to_string().len());
        let label = "true\\pred".len().max(k.to_string().len());
        write!(f, "confusion matrix (rows: true class, columns: predicted)\n{:>label$}", "true\\pred")?;
        for p in 0..k {
            write!(f, " {p:>w$}")?;
        }
        for t in 0..k {
            write!(f, "\n{t:>label$}")?;
            for p in 0..k {
                write!(f, " {:>w$}", self.count(t, p))?;
            }
        }
        let share = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.4}"));
        write!(f, "\n\n{:>5}  {:>9}  {:>6}  {:>7}", "class", "precision", "recall", "support")?;
        for c in 0..k {
            write!(
                f,
                "\n{c:>5}  {:>9}  {:>6}  {:>7}",
                share(self.precision(c)),
                share(self.recall(c)),
                self.support(c)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts from (label, predicted) pairs against the shares worked out by hand.
    fn check(
        classes: usize,
        pairs: &[(usize, usize)],
        rows: &[&[u64]],
        precision: &[Option<f64>],
        recall: &[Option<f64>],
    ) {
        let mut c = Confusion::new(classes);
        for &(t, p) in pairs {
            c.add(t, p);
        }
        assert_eq!(c.rows(), rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
        assert_eq!((0..c.classes()).map(|k| c.precision(k)).collect::<Vec<_>>(), precision);
        assert_eq!((0..c.classes()).map(|k| c.recall(k)).collect::<Vec<_>>(), recall);
    }

    #[rustfmt::skip]
    #[test]
    fn counts_and_shares() {
        check(2, &[(0, 0), (1, 1), (1, 0)], &[&[1, 0], &[1, 1]], &[Some(0.5), Some(1.0)], &[Some(1.0), Some(0.5)]);
        check(3, &[(0, 0), (0, 0)], &[&[2, 0, 0], &[0, 0, 0], &[0, 0, 0]], &[Some(1.0), None, None], &[Some(1.0), None, None]);
        check(2, &[], &[&[0, 0], &[0, 0]], &[None, None], &[None, None]);
        // A label past the classes widens the matrix.
        check(2, &[(2, 1)], &[&[0, 0, 0], &[0, 0, 0], &[0, 1, 0]], &[None, Some(0.0), None], &[None, None, Some(0.0)]);
    }

    #[test]
    fn accuracy_is_the_trace_over_the_total() {
        let mut c = Confusion::new(3);
        for (t, p) in [(0, 0), (1, 2), (2, 2), (2, 2)] {
            c.add(t, p);
        }
        assert_eq!((c.total(), c.accuracy()), (4, 0.75));
        let text = c.to_string();
        assert!(text.contains("        1 0 0 1"), "{text}");
        assert!(text.contains("    1          -  0.0000        1"), "{text}");
    }
}
