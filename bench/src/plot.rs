//! SVG plots of a run (throughput and p99 latency over time) and of a distribution (CDF).

use std::path::Path;

use plotters::prelude::*;

use crate::Report;

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Refuses a plot path that does not end in `.svg` (plots are SVG files).
pub fn check_svg(path: &Path) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Ok(()),
        _ => Err(format!(
            "{}: plots are SVG files; name it with .svg",
            path.display()
        )),
    }
}

/// Throughput and p99 latency per second of a run, one panel each.
pub fn run_timeline(report: &Report, path: &Path) -> Result<(), String> {
    check_svg(path)?;
    let m = &report.measured;
    let secs = m.per_second.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(300);
    let max_ops = m.per_second.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} — workload {:?}, {} clients: throughput",
                report.target, report.workload.mix, report.run.clients
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..secs, 0f64..max_ops)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ops/s")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            m.per_second
                .iter()
                .enumerate()
                .map(|(i, &n)| (i as u32, n as f64)),
            &BLUE,
        ))
        .map_err(err)?;
    let max_p99 = m
        .p99_per_second_us
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1000.0
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("p99 latency", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0u32..secs, 0f64..max_p99)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            m.p99_per_second_us
                .iter()
                .enumerate()
                .map(|(i, &us)| (i as u32, us as f64 / 1000.0)),
            &RED,
        ))
        .map_err(err)?;
    root.present().map_err(err)
}

/// The cumulative distribution of `samples` (milliseconds), one line per labelled set.
pub fn cdf(
    title: &str,
    x_desc: &str,
    sets: &[(String, Vec<f64>)],
    path: &Path,
) -> Result<(), String> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = sets
        .iter()
        .map(|(label, samples)| {
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            let points = sorted
                .iter()
                .enumerate()
                .map(|(j, &x)| (x, (j + 1) as f64 / n))
                .collect();
            (label.clone(), points)
        })
        .collect();
    draw_lines(title, x_desc, "fraction", &curves, false, path)
}

/// Lines through points, one per labelled set, each point marked.
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    sets: &[(String, Vec<(f64, f64)>)],
    path: &Path,
) -> Result<(), String> {
    draw_lines(title, x_desc, y_desc, sets, true, path)
}

fn draw_lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    sets: &[(String, Vec<(f64, f64)>)],
    marks: bool,
    path: &Path,
) -> Result<(), String> {
    check_svg(path)?;
    let max_x = sets
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    draw_sets(&root, Some(title), (x_desc, y_desc), sets, max_x, marks)?;
    root.present().map_err(err)
}

/// Draws `sets` as labelled lines with a legend in `area`: x from 0 to `max_x`, y from 0
/// to a little over the highest point; each point marked if `marks`.
fn draw_sets<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: Option<&str>,
    (x_desc, y_desc): (&str, &str),
    sets: &[(String, Vec<(f64, f64)>)],
    max_x: f64,
    marks: bool,
) -> Result<(), String> {
    let max_y = sets
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let mut builder = ChartBuilder::on(area);
    if let Some(caption) = caption {
        builder.caption(caption, ("sans-serif", 18));
    }
    let mut chart = builder
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (i, (label, pts)) in sets.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), &color))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if marks {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// One panel of [`panels`]: its y description, and its series (label, points).
pub type Panel = (String, Vec<(String, Vec<(f64, f64)>)>);

/// Several panels stacked, sharing the x axis: each with its y description and its series.
pub fn panels(title: &str, x_desc: &str, panels: &[Panel], path: &Path) -> Result<(), String> {
    check_svg(path)?;
    let height = 220 * panels.len().max(1) as u32 + 40;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (head, body) = root.split_vertically(40);
    head.titled(title, ("sans-serif", 20)).map_err(err)?;
    let areas = body.split_evenly((panels.len().max(1), 1));
    let max_x = panels
        .iter()
        .flat_map(|(_, sets)| sets.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    for (area, (y_desc, sets)) in areas.iter().zip(panels) {
        draw_sets(area, None, (x_desc, y_desc), sets, max_x, false)?;
    }
    root.present().map_err(err)
}
