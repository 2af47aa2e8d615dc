//! SVG chart of a [`Report`]: one column per mode, throughput above and p99
//! latency below, one line per target, clients on the x axis.
//!
//! ```text
//!             raw-own          raw-contended        plugin
//! ops/s   ┌────────────┐    ┌────────────┐    ┌────────────┐
//!         │ null ─ ─   │    │            │    │            │
//!         │ vmlockd ── │    │    ...     │    │    ...     │
//!         │ virtlockd  │    │            │    │            │
//!         └─1──4──16──64    └────────────┘    └────────────┘
//! p99 µs  (log scale, same layout)
//! ```
//!
//! Drawn with `plotters` and its SVG backend only (no fonts, no bitmaps): text is
//! written as SVG `<text>` and laid out by the viewer.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::compare::{Mode, Report};
use crate::error::{BenchError, Result};
use crate::stats::CellResult;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 760;

/// The line colour of a target: the do-nothing ceiling grey, ours blue, libvirt's red.
fn colour(target: &str) -> RGBColor {
    match target {
        "null" => RGBColor(140, 140, 140),
        "vmlockd" => RGBColor(31, 100, 180),
        "virtlockd" => RGBColor(200, 50, 40),
        _ => RGBColor(60, 160, 60),
    }
}

/// The legend name of a target.
fn label(target: &str) -> String {
    match target {
        "null" => "do-nothing server (ceiling)".into(),
        other => other.into(),
    }
}

fn plot_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Process(format!("plot: {e}"))
}

/// One line: a target's name and its (x index, value) points.
type Series = (String, Vec<(f64, f64)>);

/// One panel's series: per target, (x index, value) for every measured client count.
fn series(report: &Report, mode: Mode, value: fn(&CellResult) -> f64) -> Vec<Series> {
    report
        .spec
        .targets
        .iter()
        .map(|t| {
            let points = report
                .spec
                .clients
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| report.cell(mode, c, t).map(|r| (i as f64, value(r))))
                .collect();
            (t.clone(), points)
        })
        .collect()
}

fn rate(r: &CellResult) -> f64 {
    r.rate()
}

fn p99_us(r: &CellResult) -> f64 {
    f64::from(r.p99_ns.max(1)) / 1000.0
}

/// Draws one panel: the given y range, lines and markers per target, and the legend
/// (top panels only).
fn panel<DB, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
    title: &str,
    y_desc: &str,
    y_range: Y,
    data: &[Series],
    legend: bool,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let clients = &report.spec.clients;
    let n = clients.len().max(1) as f64;
    // Client counts sit at x = 0, 1, 2, … (evenly spaced, whatever the counts);
    // labels fall on integers and half steps, the half steps are left blank.
    let x = -0.3f64..(n - 0.7);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y_range)
        .map_err(plot_err)?;
    let client_label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            clients
                .get(i as usize)
                .map_or(String::new(), |c| c.to_string())
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc(y_desc)
        .x_labels(clients.len() * 2 + 1)
        .x_label_formatter(&client_label)
        .y_label_formatter(&|v: &f64| crate::report::thousands(*v))
        .disable_x_mesh()
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    for (target, points) in data {
        let c = colour(target);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(label(target))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(plot_err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The smallest and largest value over all panels' series, with a margin for a log
/// axis (never below 1).
fn log_bounds(all: &[Vec<Series>]) -> (f64, f64) {
    let values = all
        .iter()
        .flatten()
        .flat_map(|(_, ps)| ps.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return (1.0, 10.0);
    }
    ((lo / 1.5).max(1.0), hi * 1.5)
}

/// The whole chart as SVG text.
pub fn svg(report: &Report) -> Result<String> {
    let modes = &report.spec.modes;
    if modes.is_empty() || report.spec.clients.is_empty() {
        return Err(BenchError::Usage(
            "nothing to plot: no modes or no clients".into(),
        ));
    }
    let rates: Vec<_> = modes.iter().map(|&m| series(report, m, rate)).collect();
    let lats: Vec<_> = modes.iter().map(|&m| series(report, m, p99_us)).collect();
    let (lat_lo, lat_hi) = log_bounds(&lats);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let s = &report.spec;
        let heading = format!(
            "vmlockd vs virtlockd: {:.1} s per cell, median of {} round(s), load {} / {}",
            s.duration.as_secs_f64(),
            s.rounds.max(1),
            report.load.0,
            report.load.1
        );
        let body = root
            .titled(&heading, ("sans-serif", 20))
            .map_err(plot_err)?;
        let rows = body.split_evenly((2, modes.len()));
        for (i, &mode) in modes.iter().enumerate() {
            let top = rates[i]
                .iter()
                .flat_map(|(_, ps)| ps.iter().map(|p| p.1))
                .fold(0.0f64, f64::max);
            let y_top = if top > 0.0 { top * 1.15 } else { 1.0 };
            panel(
                &rows[i],
                report,
                &format!("{}: throughput", mode.name()),
                mode.unit(),
                0.0..y_top,
                &rates[i],
                i == 0,
            )?;
            panel(
                &rows[modes.len() + i],
                report,
                &format!("{}: p99 latency per call", mode.name()),
                "µs (log)",
                (lat_lo..lat_hi).log_scale(),
                &lats[i],
                false,
            )?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Cell, CompareSpec};
    use std::time::Duration;

    fn cell(mode: Mode, clients: u32, target: &str, ops: u64, p99_ns: u32) -> Cell {
        Cell {
            mode,
            clients,
            target: target.into(),
            result: CellResult {
                ops,
                grants: ops,
                elapsed: Duration::from_secs(1),
                p50_ns: p99_ns / 2,
                p99_ns,
                samples: ops * 2,
                ..CellResult::default()
            },
        }
    }

    fn report(modes: Vec<Mode>) -> Report {
        let targets = vec!["null".into(), "vmlockd".into(), "virtlockd".into()];
        let mut cells = Vec::new();
        for &m in &modes {
            for (k, &c) in [1u32, 4, 16].iter().enumerate() {
                let k = k as u64 + 1;
                cells.push(cell(m, c, "null", 40_000 * k, 30_000));
                cells.push(cell(m, c, "vmlockd", 31_000 * k, 50_000));
                cells.push(cell(m, c, "virtlockd", 12_000 * k, 90_000));
            }
        }
        Report {
            spec: CompareSpec {
                duration: Duration::from_secs(2),
                clients: vec![1, 4, 16],
                modes,
                targets,
                vmlockd: "x".into(),
                virtlockd: "y".into(),
                plugin: "z".into(),
                mem_locks: 0,
                mem_conns: 1,
                max_ops: 10,
                rounds: 3,
                wait: crate::conn::Wait::Poll,
            },
            cells,
            memory: vec![],
            load: ("0.10 0.20 0.30".into(), "1.00 0.50 0.40".into()),
        }
    }

    #[test]
    fn the_chart_has_a_panel_pair_per_mode_and_a_line_per_target() {
        let r = report(vec![Mode::RawOwn, Mode::Plugin]);
        let svg = svg(&r).expect("plot");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for title in [
            "raw-own: throughput",
            "plugin: throughput",
            "raw-own: p99 latency per call",
            "plugin: p99 latency per call",
            "median of 3 round(s)",
            "do-nothing server (ceiling)",
        ] {
            assert!(svg.contains(title), "missing {title:?}");
        }
        // Per target colour: a line in each of 2 modes × 2 panels, and its
        // legend sample.
        for colour in ["#8C8C8C", "#1F64B4", "#C83228"] {
            let lines = svg
                .lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(colour))
                .count();
            assert_eq!(lines, 2 * 2 + 1, "{colour}");
        }
        // Every measured point has a marker: 2 modes × 2 panels × 3 targets × 3 clients.
        assert_eq!(svg.matches("<circle").count(), 36);
        // The x axis is labelled with the client counts, not with indices.
        let texts: Vec<&str> = svg.lines().filter(|l| !l.starts_with('<')).collect();
        assert!(
            texts.contains(&"16"),
            "client count 16 not on the axis: {texts:?}"
        );
    }

    #[test]
    fn a_target_missing_a_cell_still_plots_the_rest() {
        let mut r = report(vec![Mode::RawOwn]);
        r.cells
            .retain(|c| !(c.target == "virtlockd" && c.clients == 16));
        let svg = svg(&r).expect("plot");
        assert_eq!(svg.matches("<circle").count(), 2 * (3 * 3 - 1));
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let mut r = report(vec![Mode::RawOwn]);
        r.spec.modes.clear();
        assert!(svg(&r).is_err());
    }
}
