//! Training curves as an SVG: loss and the metric (accuracy, or `mae` for regression) per
//! epoch, training and validation.
//!
//! Each epoch is a marker (a circle) on its line, so that a one-epoch run still shows its
//! points; the epoch axis is integer (ticks on whole epochs only), with half an epoch of room
//! on either side.

use std::path::Path;

use plotters::prelude::*;

use super::EpochStats;

/// One curve: (epoch, value) points.
type Curve = Vec<(i32, f64)>;

/// Draws `history` into an SVG file at `path`; `metric` names the second figure of each epoch
/// (`accuracy`, or `mae`).
pub fn plot(path: &Path, history: &[EpochStats], metric: &str) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(480);
    let last = history.iter().map(|h| h.epoch).max().unwrap_or(1).min(i32::MAX as usize - 1) as i32;
    let draw = |area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
                title: &str,
                train: Curve,
                val: Curve|
     -> Result<(), String> {
        let (lo, hi) = train
            .iter()
            .chain(&val)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.1).max(1e-3);
        // Whole epochs, with a segment of room either side: 0..=last + 1, labels on integers.
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0..last + 1, (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels((last as usize + 2).min(12))
            .x_label_formatter(&|e| if (1..=last).contains(e) { e.to_string() } else { String::new() })
            .draw()
            .map_err(|e| e.to_string())?;
        for (points, color, label) in [(train, BLUE, "train"), (val, RED, "validation")] {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
        Ok(())
    };
    let curve = |f: fn(&EpochStats) -> f64| -> Curve {
        history.iter().map(|h| (h.epoch.min(i32::MAX as usize) as i32, f(h))).collect()
    };
    draw(&left, "loss", curve(|h| h.loss), curve(|h| h.val_loss))?;
    draw(&right, metric, curve(|h| h.accuracy), curve(|h| h.val_accuracy))?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    //! The SVG text: one circle per point, and epoch labels that are whole numbers.

    use super::*;

    fn svg_of(epochs: usize) -> String {
        let history: Vec<EpochStats> = (1..=epochs)
            .map(|epoch| EpochStats {
                epoch,
                loss: 1.0 / epoch as f64,
                accuracy: 0.9 + 0.01 * epoch as f64,
                val_loss: 1.1 / epoch as f64,
                val_accuracy: 0.89 + 0.01 * epoch as f64,
                seconds: 1.0,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("symdiff-plot-{}-{epochs}.svg", std::process::id()));
        plot(&path, &history, "accuracy").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        svg
    }

    /// The labels of the epoch axis: the texts centred under a tick (`text-anchor="middle"`)
    /// that are numbers or empty (the captions and the axis name are words; the value axis's
    /// labels are right-aligned).
    fn epoch_labels(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter(|t| t.contains(r#"text-anchor="middle""#))
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_owned()))
            .filter(|t| t.is_empty() || t.parse::<f64>().is_ok())
            .collect()
    }

    #[test]
    fn every_epoch_is_a_marker_and_epoch_ticks_are_whole() {
        for epochs in [1, 2, 3, 7, 30] {
            let svg = svg_of(epochs);
            // Two panels, two curves each, one circle per epoch.
            assert_eq!(svg.matches("<circle").count(), 4 * epochs, "{epochs} epochs");
            let labels = epoch_labels(&svg);
            let shown: Vec<&String> = labels.iter().filter(|t| !t.is_empty()).collect();
            assert!(!shown.is_empty(), "{epochs} epochs: no epoch labels");
            for t in shown {
                let e: usize =
                    t.parse().unwrap_or_else(|_| panic!("{epochs} epochs: tick `{t}` is not whole"));
                assert!((1..=epochs).contains(&e), "{epochs} epochs: tick {e}");
            }
            if epochs <= 7 {
                assert!(labels.iter().any(|t| t == "1"), "{epochs} epochs: {labels:?}");
            }
        }
    }
}
