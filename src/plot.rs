//! The training curves (`curves.svg`): loss and accuracies per epoch, drawn with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::training::EpochMetrics;

/// Draws train/validation loss (left) and accuracy (right) per epoch into an SVG file.
pub fn write_curves(path: &Path, history: &[EpochMetrics]) -> anyhow::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let last_epoch = history.last().map_or(1, |m| m.epoch).max(1) as f64;
        let x_range = 0.5..last_epoch + 0.5;

        let losses = history.iter().flat_map(|m| [m.train_loss, m.val_loss]).filter(|v| v.is_finite());
        let max_loss = losses.fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x_range.clone(), 0.0..max_loss)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        let series = |f: fn(&EpochMetrics) -> f64| history.iter().map(move |m| (m.epoch as f64, f(m)));
        chart
            .draw_series(LineSeries::new(series(|m| m.train_loss), BLUE.stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(|m| m.val_loss), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;

        let mut chart = ChartBuilder::on(&right)
            .caption("accuracy (%)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x_range, 0.0..100.0)?;
        chart.configure_mesh().x_desc("epoch").draw()?;
        chart
            .draw_series(LineSeries::new(series(|m| 100.0 * m.train_acc), BLUE.stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(|m| 100.0 * m.val_acc), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
        root.present()?;
    }
    crate::checkpoint::write_atomically(path, svg.as_bytes())?;
    Ok(())
}
