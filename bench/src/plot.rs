//! `--plot FILE.svg`: the latency distribution of `cluster`/`compare` and the scaling
//! curve of `scale`, drawn with plotters' SVG backend (text as SVG `<text>`, so no
//! font files are needed on the machine).

use std::path::Path;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;

const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

fn check_svg(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Ok(()),
        _ => bail!(
            "invalid argument `--plot {}`: only .svg is supported (no font or image encoder is bundled)",
            path.display()
        ),
    }
}

/// The quantile curve of each latency histogram: x = percentile on a "nines" scale
/// (0 = p0, 1 = p90, 2 = p99, 3 = p99.9), y = latency in microseconds (log scale).
pub fn latency(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) -> Result<()> {
    check_svg(path)?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let pts = (0..=400)
                .map(|i| {
                    let nines = f64::from(i) / 100.0; // 0..4
                    let q = 1.0 - 10f64.powf(-nines);
                    (nines, h.value_at_quantile(q.min(1.0)) as f64 / 1000.0)
                })
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let ymax = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0, f64::max)
        * 1.5;
    let ymin = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(f64::MAX, f64::min)
        .clamp(0.1, ymax / 10.0)
        / 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..4f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile (0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)")
        .y_desc("publish-to-delivery latency (us)")
        .draw()?;
    for (i, (name, pts)) in curves.into_iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Messages/s against shards, with the linear extrapolation of the 1-shard figure.
pub fn scaling(path: &Path, points: &[(usize, f64)]) -> Result<()> {
    check_svg(path)?;
    let xmax = points.iter().map(|p| p.0).max().unwrap_or(1).max(2) as f64;
    let base = points.first().map_or(0.0, |p| p.1 / p.0.max(1) as f64);
    let ymax = points
        .iter()
        .map(|p| p.1)
        .fold(base * xmax, f64::max)
        .max(1.0)
        * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "plumcore: delivered messages/s vs shards",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..xmax * 1.05, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("shards")
        .y_desc("messages/s")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (xmax, base * xmax)],
            BLACK.mix(0.4),
        ))?
        .label("linear")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let pts: Vec<(f64, f64)> = points.iter().map(|&(s, m)| (s as f64, m)).collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))?
        .label("measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, BLUE.filled())))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The soak's series over time, one panel per series, one line per node; the
/// shaded band is the warm-up left out of the trends.
pub fn soak(path: &Path, report: &crate::soak::SoakReport) -> Result<()> {
    check_svg(path)?;
    let root = SVGBackend::new(path, (1400, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "plumcore soak: {} nodes, {} msg/s, {:.0} s",
            report.nodes, report.rate, report.duration_s
        ),
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((2, 4));
    let tmax = report.samples.iter().map(|s| s.t).fold(1.0, f64::max) / 60.0;
    for (j, (name, area)) in report.series.iter().zip(panels.iter()).enumerate() {
        let value = |s: &crate::soak::Sample| if j == 0 { s.rss_mib } else { s.values[j - 1] };
        let ymax = report.samples.iter().map(value).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..tmax, 0f64..ymax)?;
        chart.configure_mesh().x_desc("minutes").draw()?;
        let warm = report.warmup_s / 60.0;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (warm.min(tmax), ymax)],
            BLACK.mix(0.06).filled(),
        )))?;
        for node in 0..report.nodes {
            let pts: Vec<(f64, f64)> = report
                .samples
                .iter()
                .filter(|s| s.node == node)
                .map(|s| (s.t / 60.0, value(s)))
                .collect();
            chart.draw_series(LineSeries::new(pts, COLORS[node % COLORS.len()]))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_svg_and_refuses_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = crate::report::latency_histogram();
        for v in 1..1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = dir.path().join("lat.svg");
        latency(&p, "test", &[("a".to_string(), &h)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<polyline"),
            "{text:.200}"
        );
        let s = dir.path().join("scale.svg");
        scaling(&s, &[(1, 100.0), (2, 180.0)]).unwrap();
        assert!(std::fs::read_to_string(&s).unwrap().contains("<circle"));
        assert!(latency(&dir.path().join("x.png"), "t", &[]).is_err());
    }
}
