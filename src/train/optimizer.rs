//! Optimizers: one in-place update per parameter per step, in f32, in Keras' exact forms.
//!
//! * SGD: `p -= lr*g`; with momentum `v = momentum*v - lr*g; p += v` (Nesterov:
//!   `p += momentum*v - lr*g`).
//! * Adam (Keras 3): `m += (g - m)(1 - b1); v += (g² - v)(1 - b2);
//!   p -= lr·sqrt(1 - b2^t)/(1 - b1^t) · m / (sqrt(v) + eps)`.

use ndarray::{ArrayD, ArrayViewD, Zip};

use crate::model::Optimizer;

/// One parameter's optimizer state (moments), shaped like the parameter.
#[derive(Debug, Clone)]
pub struct Slots {
    pub m: ArrayD<f32>,
    pub v: ArrayD<f32>,
}

impl Slots {
    /// Zero moments for a parameter of `shape`.
    pub fn zeros(shape: &[usize]) -> Slots {
        Slots { m: ArrayD::zeros(shape), v: ArrayD::zeros(shape) }
    }
}

/// Applies step `t` (1-based) of `opt` to `param` with gradient `grad`.
pub fn update(
    opt: &Optimizer,
    t: u64,
    param: &mut ArrayD<f32>,
    grad: ArrayViewD<'_, f32>,
    slots: &mut Slots,
) {
    match *opt {
        Optimizer::Sgd { lr, momentum, nesterov } => {
            let lr = lr as f32;
            if momentum == 0.0 {
                Zip::from(param).and(&grad).for_each(|p, &g| *p -= lr * g);
            } else {
                let mu = momentum as f32;
                Zip::from(param).and(&grad).and(&mut slots.m).for_each(|p, &g, v| {
                    *v = mu * *v - lr * g;
                    *p += if nesterov { mu * *v - lr * g } else { *v };
                });
            }
        }
        Optimizer::Adam { lr, beta1, beta2, epsilon } => {
            let t = t as i32;
            let alpha = (lr * (1.0 - beta2.powi(t)).sqrt() / (1.0 - beta1.powi(t))) as f32;
            let (b1, b2, eps) = (beta1 as f32, beta2 as f32, epsilon as f32);
            Zip::from(param).and(&grad).and(&mut slots.m).and(&mut slots.v).for_each(|p, &g, m, v| {
                *m += (g - *m) * (1.0 - b1);
                *v += (g * g - *v) * (1.0 - b2);
                *p -= alpha * *m / (v.sqrt() + eps);
            });
        }
    }
}
