//! Training curves as an SVG: loss and accuracy per epoch, training and validation.

use std::path::Path;

use plotters::prelude::*;

use super::EpochStats;

/// Draws `history` into an SVG file at `path`.
pub fn plot(path: &Path, history: &[EpochStats]) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(480);
    let n = history.len().max(1) as f64;
    let draw = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                title: &str,
                train: Vec<(f64, f64)>,
                val: Vec<(f64, f64)>|
     -> Result<(), String> {
        let (lo, hi) = train
            .iter()
            .chain(&val)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..n.max(2.0), (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(train, &BLUE))
            .map_err(|e| e.to_string())?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(val, &RED))
            .map_err(|e| e.to_string())?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
        Ok(())
    };
    let e = |i: usize| (i + 1) as f64;
    draw(
        &left,
        "loss",
        history.iter().enumerate().map(|(i, h)| (e(i), h.loss)).collect(),
        history.iter().enumerate().map(|(i, h)| (e(i), h.val_loss)).collect(),
    )?;
    draw(
        &right,
        "accuracy",
        history.iter().enumerate().map(|(i, h)| (e(i), h.accuracy)).collect(),
        history.iter().enumerate().map(|(i, h)| (e(i), h.val_accuracy)).collect(),
    )?;
    root.present().map_err(|e| e.to_string())
}
