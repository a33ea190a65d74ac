//! Training pictures, drawn with `plotters` into PNG bytes: the loss curve, the metrics per
//! epoch and a confusion matrix. Text uses the DejaVu Sans font Focal ships, so no system font
//! library is needed.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure would only leave text out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {what}: {reason}")]
pub struct PlotError {
    what: &'static str,
    reason: String,
}

/// Draws onto a `width × height` bitmap and returns it as PNG bytes.
fn png(
    what: &'static str,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<u8>, PlotError> {
    register_font();
    let error = |reason: String| PlotError { what, reason };
    let dir = tempfile::tempdir().map_err(|e| error(e.to_string()))?;
    let path = dir.path().join("picture.png");
    {
        let root = BitMapBackend::new(&path, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        draw(&root).map_err(error)?;
        root.present().map_err(|e| error(e.to_string()))?;
    }
    std::fs::read(&path).map_err(|e| error(e.to_string()))
}

/// One curve: a name and its points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A line chart of `series` (the first drawn thin, as the noisy per-step curve; the others with
/// markers), titled `title`, with axis names; empty series are left out. The x axis counts
/// (batches, epochs): its labels are whole numbers.
pub fn line_chart(
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> Result<Vec<u8>, PlotError> {
    png("a line chart", (900, 560), |root| {
        let points = || series.iter().flat_map(|s| s.points.iter());
        let finite = |v: f64| v.is_finite();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points().filter(|(x, y)| finite(*x) && finite(*y)) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.08).max(1e-6);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 26))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| e.to_string())?;
        let whole = |x: &f64| format!("{}", x.round() as i64);
        chart
            .configure_mesh()
            .x_labels(((x1 - x0).round() as usize + 1).min(10))
            .x_label_formatter(&whole)
            .x_desc(x_name)
            .y_desc(y_name)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.points.is_empty())
        {
            let colour = PALETTE[i % PALETTE.len()];
            let data = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| finite(*x) && finite(*y));
            let width = if i == 0 && series.len() > 1 { 1 } else { 2 };
            chart
                .draw_series(LineSeries::new(data.clone(), colour.stroke_width(width)))
                .map_err(|e| e.to_string())?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3))
                });
            if width == 2 {
                chart
                    .draw_series(data.map(|p| Circle::new(p, 4, colour.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// A confusion matrix as a grid: rows the true labels, columns the predicted ones, each cell
/// with its count and shaded by the share of its row.
pub fn confusion_chart(labels: &[String], confusion: &[Vec<usize>]) -> Result<Vec<u8>, PlotError> {
    let n = labels.len().max(1);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    let margin = (longest as u32 * 9 + 40).clamp(80, 260);
    let cell = (560 / n as u32).clamp(28, 120);
    let size = (
        (margin + cell * n as u32 + 40).max(420),
        margin + cell * n as u32 + 70,
    );
    png("a confusion matrix", size, |root| {
        root.draw(&Text::new(
            "confusion matrix",
            (12, 8),
            (FONT, 20).into_font(),
        ))
        .map_err(|e| e.to_string())?;
        let note = "rows: true label, columns: predicted label";
        root.draw(&Text::new(note, (12, 34), (FONT, 14).into_font()))
            .map_err(|e| e.to_string())?;
        let top = 50 + margin as i32 - 20;
        let left = margin as i32;
        let c = cell as i32;
        for (i, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (j, &count) in row.iter().enumerate() {
                let share = if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                };
                let shade = RGBColor(
                    (255.0 - 200.0 * share) as u8,
                    (255.0 - 140.0 * share) as u8,
                    255,
                );
                let (x, y) = (left + j as i32 * c, top + i as i32 * c);
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], shade.filled()))
                    .map_err(|e| e.to_string())?;
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], BLACK.mix(0.3)))
                    .map_err(|e| e.to_string())?;
                let colour = if share > 0.6 { WHITE } else { BLACK };
                let text = count.to_string();
                let style = TextStyle::from((FONT, (c / 3).clamp(10, 22)).into_font())
                    .color(&colour)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                root.draw(&Text::new(text, (x + c / 2, y + c / 2), style))
                    .map_err(|e| e.to_string())?;
            }
        }
        let label_style = TextStyle::from((FONT, 15).into_font());
        for (i, label) in labels.iter().enumerate() {
            let y = top + i as i32 * c + c / 2 - 8;
            root.draw(&Text::new(label.as_str(), (8, y), label_style.clone()))
                .map_err(|e| e.to_string())?;
            let rotated = label_style.transform(FontTransform::Rotate270);
            let x = left + i as i32 * c + c / 2 - 8;
            root.draw(&Text::new(label.as_str(), (x, top - 8), rotated))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A grid of attention heatmaps, `columns` to a row (a model's heads), each named under it
/// and coloured on its own scale (white 0, dark blue its largest weight): rows are the query
/// tokens, columns the key tokens, labelled with the tokens as the tokenizer wrote them (every
/// k-th token where cells are too small for every label). Each map is `[l][l]` over `tokens`.
pub fn attention_heatmaps(
    tokens: &[String],
    maps: &[(String, Vec<Vec<f32>>)],
    columns: usize,
) -> Result<Vec<u8>, PlotError> {
    let n = tokens.len().max(1);
    let columns = columns.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(columns).max(1);
    // One map gets twice the room of a grid's, so that long inputs stay legible.
    let room = if maps.len() == 1 { 720 } else { 360 };
    let cell = (room / n as u32).clamp(1, 28);
    // A label every `step` tokens, so that 11-pixel text does not overlap.
    let step = (12 / cell as usize).max(1);
    let label = |t: &String| -> String {
        let chars: Vec<char> = t.chars().collect();
        if chars.len() > 14 {
            chars[..13].iter().collect::<String>() + "…"
        } else {
            t.clone()
        }
    };
    let longest = tokens
        .iter()
        .map(|t| label(t).chars().count())
        .max()
        .unwrap_or(1);
    let margin = (longest as u32 * 7 + 12).clamp(30, 120);
    let side = cell * n as u32;
    // Each map's name under it, then room before the next row.
    let panel = (margin + side + 16, 8 + margin + side + 48);
    let size = (panel.0 * columns as u32, panel.1 * rows as u32);
    png("attention heatmaps", size, |root| {
        let font = TextStyle::from((FONT, 11).into_font());
        for (index, (name, weights)) in maps.iter().enumerate() {
            let (px, py) = (
                (index % columns) as i32 * panel.0 as i32,
                (index / columns) as i32 * panel.1 as i32,
            );
            let (left, top) = (px + margin as i32, py + 8 + margin as i32);
            root.draw(&Text::new(
                name.as_str(),
                (left, top + side as i32 + 6),
                (FONT, 14).into_font(),
            ))
            .map_err(|e| e.to_string())?;
            let largest = weights
                .iter()
                .flatten()
                .fold(0.0f32, |a, &w| a.max(w))
                .max(f32::MIN_POSITIVE);
            let c = cell as i32;
            for (i, row) in weights.iter().enumerate() {
                for (j, &w) in row.iter().enumerate() {
                    let share = f64::from((w / largest).clamp(0.0, 1.0));
                    let shade = RGBColor(
                        (255.0 - 247.0 * share) as u8,
                        (255.0 - 207.0 * share) as u8,
                        (255.0 - 148.0 * share) as u8,
                    );
                    let (x, y) = (left + j as i32 * c, top + i as i32 * c);
                    root.draw(&Rectangle::new([(x, y), (x + c, y + c)], shade.filled()))
                        .map_err(|e| e.to_string())?;
                }
            }
            root.draw(&Rectangle::new(
                [(left, top), (left + side as i32, top + side as i32)],
                BLACK.mix(0.4),
            ))
            .map_err(|e| e.to_string())?;
            for (i, token) in tokens.iter().enumerate().step_by(step) {
                let text = label(token);
                let middle = i as i32 * c + c / 2;
                let right = font.pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ));
                root.draw(&Text::new(text.clone(), (left - 3, top + middle), right))
                    .map_err(|e| e.to_string())?;
                let up = font.transform(FontTransform::Rotate270).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                root.draw(&Text::new(text, (left + middle, top - 3), up))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it).
pub fn write_picture(path: &Path, bytes: &[u8]) -> Result<(), focal_backend::files::FileError> {
    focal_backend::files::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dimensions(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
        (word(16), word(20))
    }

    #[test]
    fn pictures_are_pngs_with_ink() {
        let series = [
            Series {
                name: "train loss (step)".into(),
                points: (0..20)
                    .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                    .collect(),
            },
            Series {
                name: "valid loss".into(),
                points: vec![(10.0, 0.3), (20.0, 0.2)],
            },
        ];
        let chart = line_chart("loss", "step", "loss", &series).unwrap();
        assert_eq!(dimensions(&chart), (900, 560));
        let labels = vec!["negative".to_string(), "neutral".into(), "positive".into()];
        let confusion = vec![vec![5, 1, 0], vec![0, 4, 2], vec![1, 0, 7]];
        let picture = confusion_chart(&labels, &confusion).unwrap();
        let (w, h) = dimensions(&picture);
        assert!(w > 200 && h > 200);
        // An empty chart still draws (axes only).
        line_chart("empty", "x", "y", &[]).unwrap();
    }

    /// Attention maps: a grid of `columns` maps to a row, each 28-pixel cells for a short
    /// input; one map of a long input gets cells of at least a pixel and stays within bounds.
    #[test]
    fn attention_maps_are_a_grid_of_heatmaps() {
        let tokens: Vec<String> = ["[CLS]", "paris", "was", "great", "[SEP]"]
            .map(String::from)
            .to_vec();
        let map = |k: usize| -> Vec<Vec<f32>> {
            (0..5)
                .map(|i| {
                    (0..5)
                        .map(|j| if j == (i + k) % 5 { 1.0 } else { 0.0 })
                        .collect()
                })
                .collect()
        };
        let maps: Vec<(String, Vec<Vec<f32>>)> =
            (0..4).map(|k| (format!("head {k}"), map(k))).collect();
        let (w, h) = dimensions(&attention_heatmaps(&tokens, &maps, 2).unwrap());
        // Two maps to a row, two rows: each map 5 × 28 pixels plus its label margins.
        let (one_w, one_h) = dimensions(&attention_heatmaps(&tokens, &maps[..1], 1).unwrap());
        assert_eq!((w, h), (2 * one_w, 2 * one_h));
        assert!(one_w > 5 * 28 && one_h > 5 * 28, "{one_w} × {one_h}");
        let long: Vec<String> = (0..900).map(|i| format!("t{i}")).collect();
        let uniform = vec![vec![1.0 / 900.0; 900]; 900];
        let (w, h) = dimensions(&attention_heatmaps(&long, &[("all".into(), uniform)], 1).unwrap());
        assert!(w < 1200 && h < 1200, "{w} × {h}");
    }
}
