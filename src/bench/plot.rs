//! The report's plots, drawn with plotters into SVG strings.

use super::report::{Forwarding, Report};
use super::{Mix, Subject};
use plotters::prelude::*;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x55, 0x55, 0x55),
    RGBColor(0xff, 0xbb, 0x78),
];

fn color(s: Subject) -> RGBColor {
    COLORS[Subject::ALL.iter().position(|x| *x == s).unwrap_or(0)]
}

/// Every plot of `report`, by file name.
pub fn all(report: &Report) -> Vec<(&'static str, String)> {
    let mut out = vec![("forwarding.svg", forwarding(report))];
    let by_rules: Vec<&Forwarding> = report
        .forwarding
        .iter()
        .filter(|f| f.mix == Mix::Small && f.workload.masks == 1)
        .collect();
    let mask_rules: Vec<usize> = report
        .forwarding
        .iter()
        .filter(|f| f.workload.masks > 1)
        .map(|f| f.workload.rules)
        .collect();
    let by_masks: Vec<&Forwarding> = report
        .forwarding
        .iter()
        .filter(|f| f.mix == Mix::Small && mask_rules.contains(&f.workload.rules))
        .collect();
    out.push((
        "scaling-rules.svg",
        lines(
            "Delivered Mpps by rule count (64 B, 1 mask)",
            "rules (log10)",
            &by_rules,
            |f| (f.workload.rules as f64).log10(),
        ),
    ));
    out.push((
        "scaling-masks.svg",
        lines(
            "Delivered Mpps by number of masks (64 B)",
            "masks",
            &by_masks,
            |f| f.workload.masks as f64,
        ),
    ));
    out
}

/// Bars: delivered Mpps per subject, one labelled group per mix, at the
/// base workload; each bar with its value and its ratio to nftables, the
/// limit as a dashed line across its group, and a legend.
fn forwarding(report: &Report) -> String {
    let mut svg = String::new();
    let base = report.forwarding.first().map(|f| f.workload);
    let rows: Vec<&Forwarding> = report
        .forwarding
        .iter()
        .filter(|f| Some(f.workload) == base)
        .collect();
    let mixes: Vec<Mix> = [Mix::Small, Mix::Imix]
        .into_iter()
        .filter(|m| rows.iter().any(|f| f.mix == *m))
        .collect();
    let bars: Vec<Subject> = Subject::ALL
        .into_iter()
        .filter(|s| *s != Subject::Limit && rows.iter().any(|f| f.subject == *s))
        .collect();
    let mpps = |mix: Mix, s: Subject| {
        rows.iter()
            .find(|f| f.mix == mix && f.subject == s)
            .map(|f| f.delivered_pps() / 1e6)
    };
    let top = rows
        .iter()
        .map(|f| f.delivered_pps() / 1e6)
        .fold(0.1, f64::max)
        * 1.3;
    {
        let area = SVGBackend::with_string(&mut svg, (820, 460)).into_drawing_area();
        let _ = area.fill(&WHITE);
        let title = format!(
            "Delivered Mpps, {} rules: bars labelled Mpps (x nftables)",
            base.map_or(0, |w| w.rules)
        );
        let Ok(mut chart) = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..(mixes.len().max(1) as f64), 0f64..top)
        else {
            return svg_fallback();
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(mixes.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                // A group's label at its middle; nothing elsewhere.
                let i = x.floor() as usize;
                match mixes.get(i) {
                    Some(m) if (x - i as f64 - 0.5).abs() < 0.01 => m.label().to_string(),
                    _ => String::new(),
                }
            })
            .y_desc("Mpps delivered")
            .draw();
        let width = 0.8 / bars.len().max(1) as f64;
        for (mi, &mix) in mixes.iter().enumerate() {
            let nft = mpps(mix, Subject::Nft).filter(|v| *v > 0.0);
            for (si, &s) in bars.iter().enumerate() {
                let Some(v) = mpps(mix, s) else {
                    continue;
                };
                let x0 = mi as f64 + 0.1 + si as f64 * width;
                let bar = Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color(s).filled());
                let drawn = chart.draw_series(std::iter::once(bar));
                if mi == 0
                    && let Ok(series) = drawn
                {
                    series.label(s.label()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], color(s).filled())
                    });
                }
                let text = match nft {
                    Some(n) => format!("{v:.2} ({:.2}x)", v / n),
                    None => format!("{v:.2}"),
                };
                let _ = chart.draw_series(std::iter::once(Text::new(
                    text,
                    (x0, v + top * 0.02),
                    ("sans-serif", 11).into_font().color(&BLACK),
                )));
            }
            if let Some(limit) = mpps(mix, Subject::Limit) {
                let c = color(Subject::Limit);
                let line = DashedLineSeries::new(
                    [(mi as f64 + 0.05, limit), (mi as f64 + 0.95, limit)],
                    6,
                    4,
                    c.stroke_width(2),
                );
                if let Ok(series) = chart.draw_series(line)
                    && mi == 0
                {
                    series
                        .label(Subject::Limit.label())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c));
                }
                let _ = chart.draw_series(std::iter::once(Text::new(
                    format!("limit {limit:.2}"),
                    (mi as f64 + 0.8, limit + top * 0.02),
                    ("sans-serif", 11).into_font().color(&c),
                )));
            }
        }
        let _ = chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw();
        let _ = area.present();
    }
    svg
}

/// Lines: delivered Mpps per subject against `x`.
fn lines(
    title: &str,
    x_desc: &str,
    rows: &[&Forwarding],
    x: impl Fn(&Forwarding) -> f64,
) -> String {
    let mut svg = String::new();
    if rows.is_empty() {
        return svg_fallback();
    }
    let xs: Vec<f64> = rows.iter().map(|f| x(f)).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let pad = ((hi - lo) * 0.05).max(0.1);
    let top = rows
        .iter()
        .map(|f| f.delivered_pps() / 1e6)
        .fold(0.1, f64::max)
        * 1.15;
    {
        let area = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        let _ = area.fill(&WHITE);
        let Ok(mut chart) = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0f64..top)
        else {
            return svg_fallback();
        };
        let _ = chart.configure_mesh().x_desc(x_desc).y_desc("Mpps").draw();
        for s in Subject::ALL {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|f| f.subject == s)
                .map(|f| (x(f), f.delivered_pps() / 1e6))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let c = color(s);
            if let Ok(series) =
                chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            {
                series.label(s.label()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
            let _ = chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())));
        }
        let _ = chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw();
        let _ = area.present();
    }
    svg
}

fn svg_fallback() -> String {
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"40\"><text x=\"10\" y=\"25\">no data</text></svg>\n".into()
}
