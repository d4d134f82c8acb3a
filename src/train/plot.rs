//! The training curves (`curves.svg`): loss, accuracies and the learning rate per epoch, drawn
//! with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::train::metrics::EpochMetrics;

/// Draws train/validation loss (left), accuracy (middle) and the learning rate at each epoch's
/// end (right, as `metrics.jsonl` records it) into an SVG file.
pub fn write_curves(path: &Path, history: &[EpochMetrics]) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1500, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, rest) = root.split_horizontally(500);
        let (right, lr_area) = rest.split_horizontally(500);
        let last_epoch = history.last().map_or(1, |m| m.epoch).max(1) as f64;
        // Whole epochs only on the x axis, at most about ten of them.
        let epoch_labels = (last_epoch as usize + 1).min(11);
        let epoch_label = |x: &f64| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() };
        let x_range = 0.5..last_epoch + 0.5;

        let losses = history.iter().flat_map(|m| [m.train_loss, m.val_loss]).filter(|v| v.is_finite());
        let max_loss = losses.fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x_range.clone(), 0.0..max_loss)?;
        chart.configure_mesh().x_desc("epoch").x_labels(epoch_labels).x_label_formatter(&epoch_label).draw()?;
        // Missing values (no validation split) are left out rather than drawn at zero.
        let series = |f: fn(&EpochMetrics) -> f64| {
            history.iter().map(move |m| (m.epoch as f64, f(m))).filter(|p| p.1.is_finite())
        };
        // Markers as well as lines, so that a single epoch shows too.
        chart.draw_series(series(|m| m.train_loss).map(|p| Circle::new(p, 3, BLUE.filled())))?;
        chart.draw_series(series(|m| m.val_loss).map(|p| Circle::new(p, 3, RED.filled())))?;
        chart
            .draw_series(LineSeries::new(series(|m| m.train_loss), BLUE.stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(|m| m.val_loss), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        let mut chart = ChartBuilder::on(&right)
            .caption("accuracy (%)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x_range.clone(), 0.0..100.0)?;
        chart.configure_mesh().x_desc("epoch").x_labels(epoch_labels).x_label_formatter(&epoch_label).draw()?;
        chart.draw_series(series(|m| 100.0 * m.train_acc).map(|p| Circle::new(p, 3, BLUE.filled())))?;
        chart.draw_series(series(|m| 100.0 * m.val_acc).map(|p| Circle::new(p, 3, RED.filled())))?;
        chart
            .draw_series(LineSeries::new(series(|m| 100.0 * m.train_acc), BLUE.stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(|m| 100.0 * m.val_acc), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        // The schedule as it went: a constant recipe draws a flat line.
        let max_lr = history.iter().map(|m| m.lr).filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-12) * 1.1;
        let mut chart = ChartBuilder::on(&lr_area)
            .caption("learning rate", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0.0..max_lr)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epoch_labels)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|y| format!("{y:.1e}"))
            .draw()?;
        chart.draw_series(series(|m| m.lr).map(|p| Circle::new(p, 3, GREEN.filled())))?;
        chart.draw_series(LineSeries::new(series(|m| m.lr), GREEN.stroke_width(2)))?;
        root.present()?;
    }
    crate::formats::atomic::write_atomically(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(epochs: usize) -> Vec<EpochMetrics> {
        (1..=epochs)
            .map(|e| EpochMetrics {
                epoch: e,
                train_loss: 2.3 / e as f64,
                train_acc: 0.1 + 0.05 * e as f64,
                val_loss: 2.0 / e as f64,
                val_acc: if e == 1 { f64::NAN } else { 0.12 + 0.04 * e as f64 },
                lr: 0.005 / e as f64,
                seconds: 1.0,
                images_per_sec: 1.0,
                allreduce_seconds: None,
                steps: None,
                test_loss: None,
                test_acc: None,
            })
            .collect()
    }

    #[test]
    fn curves_show_every_epoch_even_a_single_one() {
        let dir = std::env::temp_dir().join(format!("tch-alexnet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for epochs in [1, 12] {
            let path = dir.join(format!("curves-{epochs}.svg"));
            write_curves(&path, &history(epochs)).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("epoch") && svg.contains("accuracy"));
            assert!(svg.contains("learning rate"), "no learning-rate panel");
            // One marker per epoch for train loss, train accuracy and the learning rate, at least.
            assert!(svg.matches("<circle").count() >= 3 * epochs, "{epochs} epochs");
        }
        if std::env::var_os("KEEP_PLOTS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
