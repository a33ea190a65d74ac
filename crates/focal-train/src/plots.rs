//! Pictures, drawn with `plotters` into PNG bytes: the loss curve, the metrics per epoch, a
//! confusion matrix and attention heatmaps; and the interactive attention page
//! ([`attention_page`], one self-contained HTML file). Text uses the DejaVu Sans font Focal
//! ships, so no system font library is needed.

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
        draw_lines(root, title, x_name, y_name, series)
    })
}

/// One panel of [`panel_chart`]: a title, the y axis's name and the panel's curves.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Above the panel.
    pub title: String,
    /// The y axis's name.
    pub y_name: String,
    /// The curves (as [`line_chart`] draws them).
    pub series: Vec<Series>,
}

/// Line charts stacked one above the other, each with its own y axis, sharing the x axis's
/// name: figures of different scales (a perplexity, a correlation, percentages) each readable
/// on their own scale.
pub fn panel_chart(x_name: &str, panels: &[Panel]) -> Result<Vec<u8>, PlotError> {
    let rows = panels.len().max(1);
    let height = (300 * rows as u32).max(560);
    png("a chart of panels", (900, height), |root| {
        for (area, panel) in root.split_evenly((rows, 1)).iter().zip(panels) {
            draw_lines(area, &panel.title, x_name, &panel.y_name, &panel.series)?;
        }
        Ok(())
    })
}

/// Draws [`line_chart`]'s chart on `root`.
fn draw_lines(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> Result<(), String> {
    {
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
    }
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

/// Head importance as a grid: a row per layer, a column per head, each cell with its score
/// (two decimals) and shaded on the scale of the largest; `title` says which score.
pub fn head_importance_chart(title: &str, scores: &[Vec<f64>]) -> Result<Vec<u8>, PlotError> {
    let layers = scores.len().max(1);
    let heads = scores.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let cell = (720 / heads as u32).clamp(36, 64);
    let (left, top) = (80i32, 78i32);
    let size = (
        (left as u32 + cell * heads as u32 + 30).max(460),
        top as u32 + cell * layers as u32 + 30,
    );
    png("head importance", size, |root| {
        root.draw(&Text::new(title, (12, 8), (FONT, 20).into_font()))
            .map_err(|e| e.to_string())?;
        let note = "rows: layers, columns: heads (from 0); darker is more important";
        root.draw(&Text::new(note, (12, 34), (FONT, 14).into_font()))
            .map_err(|e| e.to_string())?;
        let largest = scores
            .iter()
            .flatten()
            .fold(0.0f64, |a, &v| a.max(v))
            .max(f64::MIN_POSITIVE);
        let c = cell as i32;
        let centre = plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Center,
        );
        let small = TextStyle::from((FONT, 13).into_font()).pos(centre);
        for (k, row) in scores.iter().enumerate() {
            let y = top + k as i32 * c;
            root.draw(&Text::new(
                format!("layer {k}"),
                (8, y + c / 2 - 7),
                (FONT, 13).into_font(),
            ))
            .map_err(|e| e.to_string())?;
            for (h, &value) in row.iter().enumerate() {
                let share = (value / largest).clamp(0.0, 1.0);
                let shade = RGBColor(
                    (255.0 - 247.0 * share) as u8,
                    (255.0 - 207.0 * share) as u8,
                    (255.0 - 148.0 * share) as u8,
                );
                let x = left + h as i32 * c;
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], shade.filled()))
                    .map_err(|e| e.to_string())?;
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], BLACK.mix(0.3)))
                    .map_err(|e| e.to_string())?;
                let colour = if share > 0.55 { WHITE } else { BLACK };
                let text = format!("{value:.2}");
                let style = TextStyle::from((FONT, 12).into_font())
                    .color(&colour)
                    .pos(centre);
                root.draw(&Text::new(text, (x + c / 2, y + c / 2), style))
                    .map_err(|e| e.to_string())?;
            }
        }
        for h in 0..heads {
            let x = left + h as i32 * c + c / 2;
            root.draw(&Text::new(h.to_string(), (x, top - 10), small.clone()))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// A grid of attention heatmaps, `columns` to a row (a model's heads), each named under it
/// and coloured on its own scale (white 0, dark blue its largest weight): rows are the query
/// tokens, columns the key tokens, labelled with the tokens as the tokenizer wrote them (every
/// k-th token where cells are too small for every label). Each map is `[l][l]` over `tokens`.
///
/// Inputs longer than a map has room for at 4 pixels a token (90 tokens in a grid, 180 in a
/// single map) are drawn in blocks of consecutive tokens ([`pool_attention`]), the names
/// saying so, rather than as an unreadable wall of 1-pixel cells.
pub fn attention_heatmaps(
    tokens: &[String],
    maps: &[(String, Vec<Vec<f32>>)],
    columns: usize,
) -> Result<Vec<u8>, PlotError> {
    attention_heatmaps_between(tokens, tokens, maps, columns)
}

/// [`attention_heatmaps`] of maps `[query][key]` whose queries and keys are different tokens
/// (a decoder's cross-attention from the target to the source): rows labelled with
/// `queries`, columns with `keys`.
pub fn attention_heatmaps_between(
    queries: &[String],
    keys: &[String],
    maps: &[(String, Vec<Vec<f32>>)],
    columns: usize,
) -> Result<Vec<u8>, PlotError> {
    // One map gets twice the room of a grid's, so that long inputs stay legible.
    let room = if maps.len() == 1 { 720 } else { 360 };
    let most = room as usize / MIN_CELL;
    let longest_side = queries.len().max(keys.len());
    if longest_side > most {
        let block = longest_side.div_ceil(most);
        let mut labels = (Vec::new(), Vec::new());
        let pooled: Vec<(String, Vec<Vec<f32>>)> = maps
            .iter()
            .map(|(name, weights)| {
                let (rows, columns, pooled) = pool_attention_between(queries, keys, weights, block);
                labels = (rows, columns);
                (format!("{name} (blocks of {block} tokens)"), pooled)
            })
            .collect();
        return attention_heatmaps_between(&labels.0, &labels.1, &pooled, columns);
    }
    let n = longest_side.max(1);
    let columns = columns.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(columns).max(1);
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
    let longest = queries
        .iter()
        .chain(keys)
        .map(|t| label(t).chars().count())
        .max()
        .unwrap_or(1);
    let margin = (longest as u32 * 7 + 12).clamp(30, 120);
    let (width, height) = (cell * keys.len() as u32, cell * queries.len() as u32);
    // Each map's name under it, then room before the next row.
    let panel = (margin + width + 16, 8 + margin + height + 48);
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
                (left, top + height as i32 + 6),
                (FONT, 14).into_font(),
            ))
            .map_err(|e| e.to_string())?;
            let largest = colour_scale(weights);
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
                [(left, top), (left + width as i32, top + height as i32)],
                BLACK.mix(0.4),
            ))
            .map_err(|e| e.to_string())?;
            let right = font.pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ));
            for (i, token) in queries.iter().enumerate().step_by(step) {
                let middle = i as i32 * c + c / 2;
                root.draw(&Text::new(
                    label(token),
                    (left - 3, top + middle),
                    right.clone(),
                ))
                .map_err(|e| e.to_string())?;
            }
            let up = font.transform(FontTransform::Rotate270).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            for (j, token) in keys.iter().enumerate().step_by(step) {
                let middle = j as i32 * c + c / 2;
                root.draw(&Text::new(
                    label(token),
                    (left + middle, top - 3),
                    up.clone(),
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

/// The weight a heatmap draws darkest: the map's largest, leaving out rows with a single
/// key that may be attended (a causal model's first row is 1 by construction, and would pale
/// every other cell), unless every row is such a row.
fn colour_scale(weights: &[Vec<f32>]) -> f32 {
    let largest = |rows: &mut dyn Iterator<Item = &Vec<f32>>| {
        rows.flatten()
            .fold(0.0f32, |a, &w| a.max(w))
            .max(f32::MIN_POSITIVE)
    };
    let free = |row: &&Vec<f32>| row.iter().filter(|&&w| w > 0.0).count() > 1;
    if weights.iter().any(|row| free(&row)) {
        largest(&mut weights.iter().filter(free))
    } else {
        largest(&mut weights.iter())
    }
}

/// The smallest cell of an attention heatmap, in pixels.
const MIN_CELL: usize = 4;

/// An attention map `[l][l]` over `tokens` in blocks of `block` consecutive tokens: a block's
/// row is the mean of its queries' rows and a block's column the sum of its keys' columns, so
/// that each row still sums to what a row summed before. Returns each block's label (its
/// tokens joined by spaces) and the pooled map.
pub fn pool_attention(
    tokens: &[String],
    weights: &[Vec<f32>],
    block: usize,
) -> (Vec<String>, Vec<Vec<f32>>) {
    let (labels, _, pooled) = pool_attention_between(tokens, tokens, weights, block);
    (labels, pooled)
}

/// [`pool_attention`] of a map `[query][key]` with different queries and keys: the blocks'
/// labels of each, and the pooled map.
pub fn pool_attention_between(
    queries: &[String],
    keys: &[String],
    weights: &[Vec<f32>],
    block: usize,
) -> (Vec<String>, Vec<String>, Vec<Vec<f32>>) {
    let block = block.max(1);
    let (n, m) = (queries.len(), keys.len());
    let labels =
        |tokens: &[String]| -> Vec<String> { tokens.chunks(block).map(|c| c.join(" ")).collect() };
    let mut pooled = vec![vec![0.0f32; m.div_ceil(block)]; n.div_ceil(block)];
    for (i, row) in weights.iter().enumerate().take(n) {
        let size = (n - i / block * block).min(block) as f32;
        for (j, &w) in row.iter().enumerate().take(m) {
            pooled[i / block][j / block] += w / size;
        }
    }
    (labels(queries), labels(keys), pooled)
}

/// What the interactive attention page shows (see [`attention_page`]).
#[derive(Clone, Debug, Default)]
pub struct AttentionPage {
    /// The page's heading (the model and the text, say).
    pub title: String,
    /// The tokens, as the tokenizer wrote them.
    pub tokens: Vec<String>,
    /// Each layer's heads, `[layer][head][query][key]`.
    pub layers: Vec<Vec<Vec<Vec<f32>>>>,
    /// Maps that combine the layers (attention rollout, flow), each `[query][key]`.
    pub combined: Vec<CombinedMap>,
    /// More views after the combined maps, each with its own queries and keys (a decoder's
    /// self- and cross-attention).
    pub views: Vec<PageView>,
    /// Scores per token (gradient × input, say), drawn as coloured tokens under the lines.
    pub attributions: Vec<TokenScores>,
    /// The view the page opens on: layer `k` is `k`, combined map `c` is `layers.len() + c`,
    /// then the views; `None` opens on the last layer.
    pub start: Option<usize>,
}

/// A view of the attention page with its own tokens: its heads' `[query][key]` maps.
#[derive(Clone, Debug)]
pub struct PageView {
    /// Shown in the layer choice ("cross-attention, layer 0").
    pub name: String,
    /// The tokens that attend (left).
    pub queries: Vec<String>,
    /// The tokens attended to (right).
    pub keys: Vec<String>,
    /// `[head][query][key]`.
    pub heads: Vec<Vec<Vec<f32>>>,
}

/// A named `[query][key]` map on the attention page.
#[derive(Clone, Debug)]
pub struct CombinedMap {
    /// Shown in the layer choice ("attention rollout").
    pub name: String,
    /// `[query][key]`.
    pub weights: Vec<Vec<f32>>,
}

/// A named score per token on the attention page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenScores {
    /// Shown above the tokens ("gradient × input for \"positive\"").
    pub name: String,
    /// One score a token: red for a positive score, blue for a negative one, on the scale of
    /// the largest magnitude.
    pub scores: Vec<f32>,
}

/// The most tokens the attention page draws: its lines grow with `tokens² × heads`, and a
/// browser draws some 10⁵ lines at interactive speed.
pub const MAX_PAGE_TOKENS: usize = 256;

const PAGE_TEMPLATE: &str = include_str!("head_view.html");

/// One self-contained HTML page (no network, no external script or style) in the spirit of
/// bertviz's head view: a layer choice (the layers, then the combined maps), a square per head
/// to show or hide it, the tokens twice with a line from each query to each key whose opacity
/// is the weight; hovering a token shows only its lines, clicking keeps them. Attributions are
/// drawn under it as coloured tokens. The page opens on the last layer.
///
/// Refuses more than [`MAX_PAGE_TOKENS`] tokens, a map whose shape is not `[l][l]` over the
/// tokens, an attribution of another length, and non-finite values.
pub fn attention_page(page: &AttentionPage) -> Result<String, PlotError> {
    let error = |reason: String| PlotError {
        what: "the attention page",
        reason,
    };
    let n = page.tokens.len();
    let sides = std::iter::once(n).chain(
        page.views
            .iter()
            .flat_map(|v| [v.queries.len(), v.keys.len()]),
    );
    for count in sides {
        if count == 0 {
            return Err(error("no tokens".into()));
        }
        if count > MAX_PAGE_TOKENS {
            return Err(error(format!(
                "{count} tokens: the page draws at most {MAX_PAGE_TOKENS}; shorten the text, or draw a PNG, which pools long inputs into blocks"
            )));
        }
    }
    if page.layers.is_empty() && page.combined.is_empty() && page.views.is_empty() {
        return Err(error("no attention maps".into()));
    }
    let shaped = |name: &str, map: &[Vec<f32>], (q, k): (usize, usize)| -> Result<(), PlotError> {
        if map.len() != q || map.iter().any(|row| row.len() != k) {
            return Err(error(format!(
                "{name} is not {q} × {k}, one row a query and one column a key"
            )));
        }
        if map.iter().flatten().any(|w| !w.is_finite()) {
            return Err(error(format!("{name} holds a value that is not finite")));
        }
        Ok(())
    };
    for (k, heads) in page.layers.iter().enumerate() {
        if heads.is_empty() {
            return Err(error(format!("layer {k} has no heads")));
        }
        for (h, map) in heads.iter().enumerate() {
            shaped(&format!("layer {k}, head {h}"), map, (n, n))?;
        }
    }
    for map in &page.combined {
        shaped(&map.name, &map.weights, (n, n))?;
    }
    for view in &page.views {
        if view.heads.is_empty() {
            return Err(error(format!("{} has no heads", view.name)));
        }
        for (h, map) in view.heads.iter().enumerate() {
            let size = (view.queries.len(), view.keys.len());
            shaped(&format!("{}, head {h}", view.name), map, size)?;
        }
    }
    for a in &page.attributions {
        if a.scores.len() != n || a.scores.iter().any(|s| !s.is_finite()) {
            return Err(error(format!(
                "{}: {} scores for {n} tokens, or a score that is not finite",
                a.name,
                a.scores.len()
            )));
        }
    }
    // Four decimals (as f64, which prints them exactly) keep the page small.
    let round = |map: &[Vec<f32>]| -> Vec<Vec<f64>> {
        map.iter()
            .map(|row| {
                row.iter()
                    .map(|&w| (f64::from(w) * 1e4).round() / 1e4)
                    .collect()
            })
            .collect()
    };
    let mut data = serde_json::json!({
        "title": page.title,
        "tokens": page.tokens,
        "layers": page
            .layers
            .iter()
            .map(|heads| heads.iter().map(|m| round(m)).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "combined": page
            .combined
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "weights": round(&c.weights)}))
            .collect::<Vec<_>>(),
        "views": page
            .views
            .iter()
            .map(|v| serde_json::json!({
                "name": v.name,
                "queries": v.queries,
                "keys": v.keys,
                "heads": v.heads.iter().map(|m| round(m)).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>(),
        "attributions": page.attributions,
    });
    let views = page.layers.len() + page.combined.len() + page.views.len();
    let start = page.start.unwrap_or(page.layers.len().saturating_sub(1));
    if start >= views {
        return Err(error(format!("start view {start} of {views}")));
    }
    data["start"] = serde_json::json!(start);
    // `<`, `>` and `&` escaped, so that no token can close the script element holding the data.
    let json = data
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    Ok(PAGE_TEMPLATE.replacen("__FOCAL_DATA__", &json, 1))
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

    /// How many pixels of `png` have `colour`, in the rows `rows` (a share of the height).
    fn ink(png: &[u8], colour: RGBColor, rows: std::ops::Range<f64>) -> usize {
        let mut reader = png::Decoder::new(png).read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        let (width, height) = (frame.width as usize, frame.height as usize);
        let (first, last) = (
            (rows.start * height as f64) as usize,
            (rows.end * height as f64) as usize,
        );
        buffer[first * width * 3..last * width * 3]
            .chunks(3)
            .filter(|p| p == &[colour.0, colour.1, colour.2])
            .count()
    }

    /// The curves are drawn (pixels of each series' colour), not only the frame: a chart
    /// without series has none. Panels of different scales each draw their own curves, one
    /// above the other.
    #[test]
    fn curves_are_drawn() {
        let rising = |name: &str, scale: f64| Series {
            name: name.into(),
            points: (1..=5).map(|i| (i as f64, scale * i as f64)).collect(),
        };
        let chart = line_chart(
            "loss",
            "step",
            "loss",
            &[Series::default(), rising("a", 1.0), rising("b", 2.0)],
        )
        .unwrap();
        assert!(ink(&chart, PALETTE[1], 0.0..1.0) > 100);
        assert!(ink(&chart, PALETTE[2], 0.0..1.0) > 100);
        let empty = line_chart("empty", "x", "y", &[]).unwrap();
        assert_eq!(ink(&empty, PALETTE[1], 0.0..1.0), 0);
        let panels = [
            Panel {
                title: "Perplexity".into(),
                y_name: "perplexity".into(),
                series: vec![Series::default(), rising("valid perplexity", 300.0)],
            },
            Panel {
                title: "Accuracy".into(),
                y_name: "%".into(),
                series: vec![Series::default(), rising("valid accuracy", 0.2)],
            },
        ];
        let chart = panel_chart("epoch", &panels).unwrap();
        assert_eq!(dimensions(&chart), (900, 600));
        assert!(
            ink(&chart, PALETTE[1], 0.0..0.5) > 100,
            "the top panel's curve"
        );
        assert!(
            ink(&chart, PALETTE[1], 0.5..1.0) > 100,
            "the bottom panel's curve"
        );
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

    /// Pooling keeps each row's sum (a block's row is its queries' mean, a block's column its
    /// keys' sum), with a short last block; its labels join the block's tokens.
    #[test]
    fn pooled_attention_keeps_the_row_sums() {
        let tokens: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        // Row i attends to token i alone.
        let eye: Vec<Vec<f32>> = (0..5)
            .map(|i| (0..5).map(|j| f32::from(u8::from(i == j))).collect())
            .collect();
        let (labels, pooled) = pool_attention(&tokens, &eye, 2);
        assert_eq!(labels, ["a b", "c d", "e"]);
        assert_eq!(
            pooled,
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]].map(|r| r.to_vec())
        );
        let causal: Vec<Vec<f32>> = (0..5)
            .map(|i| {
                (0..5)
                    .map(|j| if j <= i { 1.0 / (i + 1) as f32 } else { 0.0 })
                    .collect()
            })
            .collect();
        let (_, pooled) = pool_attention(&tokens, &causal, 2);
        // Block 0: rows [1, 0…] and [½, ½, 0…] → mean over queries, summed over keys.
        assert!(
            (pooled[0][0] - 1.0).abs() < 1e-6 && pooled[0][1] == 0.0,
            "{pooled:?}"
        );
        for row in &pooled {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
        }
    }

    fn page(tokens: &[&str]) -> AttentionPage {
        let n = tokens.len();
        let uniform = vec![vec![1.0 / n as f32; n]; n];
        AttentionPage {
            title: "t".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            layers: vec![vec![uniform.clone(); 2]; 3],
            combined: vec![CombinedMap {
                name: "attention rollout".into(),
                weights: uniform,
            }],
            views: Vec::new(),
            attributions: vec![TokenScores {
                name: "gradient × input".into(),
                scores: vec![0.5; n],
            }],
            start: None,
        }
    }

    /// The page embeds its data once, opening on the last layer, where no token can close the
    /// script element; maps of the wrong shape, values that are not finite, a wrong start and
    /// too many tokens are refused with what was wrong.
    #[test]
    fn attention_page_embeds_checked_data() {
        let html = attention_page(&page(&["[CLS]", "</script><b>", "[SEP]"])).unwrap();
        assert!(!html.contains("__FOCAL_DATA__"));
        assert_eq!(
            html.matches("</script>").count(),
            2,
            "only the page's own two"
        );
        let start = html.find("id=\"focal-data\">").unwrap() + "id=\"focal-data\">".len();
        let json = &html[start..start + html[start..].find("</script>").unwrap()];
        let data: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(data["tokens"][1], "</script><b>");
        assert_eq!(data["start"], 2);
        assert_eq!(data["layers"][0][1][0][0], serde_json::json!(0.3333));

        let mut wrong = page(&["a", "b"]);
        wrong.layers[1][0].pop();
        let error = attention_page(&wrong).unwrap_err().to_string();
        assert!(error.contains("layer 1, head 0 is not 2 × 2"), "{error}");
        let mut wrong = page(&["a", "b"]);
        wrong.combined[0].weights[0][0] = f32::NAN;
        let error = attention_page(&wrong).unwrap_err().to_string();
        assert!(
            error.contains("attention rollout holds a value that is not finite"),
            "{error}"
        );
        let mut wrong = page(&["a", "b"]);
        wrong.attributions[0].scores.push(1.0);
        assert!(
            attention_page(&wrong)
                .unwrap_err()
                .to_string()
                .contains("3 scores for 2 tokens")
        );
        let mut wrong = page(&["a", "b"]);
        wrong.start = Some(4);
        assert!(
            attention_page(&wrong)
                .unwrap_err()
                .to_string()
                .contains("start view 4 of 4")
        );
        let long: Vec<String> = (0..=MAX_PAGE_TOKENS).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let error = attention_page(&page(&refs)).unwrap_err().to_string();
        assert!(
            error.contains("257 tokens: the page draws at most 256"),
            "{error}"
        );
    }

    /// Cross-attention draws as a rectangle (a row per query, a column per key) on the picture
    /// and as a view with its own tokens on the page, whose shape is checked.
    #[test]
    fn cross_attention_has_its_own_rows_and_columns() {
        let queries: Vec<String> = ["<bos>", "WAS"].map(String::from).to_vec();
        let keys: Vec<String> = ["paris", "was", "great", "<eos>"]
            .map(String::from)
            .to_vec();
        let map = vec![vec![0.25f32; 4]; 2];
        let (w, h) = dimensions(
            &attention_heatmaps_between(&queries, &keys, &[("cross".into(), map.clone())], 1)
                .unwrap(),
        );
        assert!(w > h, "four columns, two rows: {w} × {h}");
        let (rows, columns, pooled) = pool_attention_between(&queries, &keys, &map, 2);
        assert_eq!(
            (rows, columns),
            (
                vec!["<bos> WAS".to_string()],
                vec!["paris was".to_string(), "great <eos>".to_string()]
            )
        );
        assert_eq!(pooled, [[0.5, 0.5]]);
        let mut with_view = page(&["paris", "was", "great", "<eos>"]);
        with_view.views.push(PageView {
            name: "cross-attention, layer 0".into(),
            queries: queries.clone(),
            keys: keys.clone(),
            heads: vec![map.clone()],
        });
        with_view.start = Some(4);
        let html = attention_page(&with_view).unwrap();
        assert!(
            html.contains(r#""queries":["\u003cbos\u003e","WAS"]"#),
            "escaped view tokens"
        );
        with_view.views[0].heads[0].pop();
        let error = attention_page(&with_view).unwrap_err().to_string();
        assert!(
            error.contains("cross-attention, layer 0, head 0 is not 2 × 4"),
            "{error}"
        );
    }

    /// A causal map's first row (1 by construction) does not set the colour scale; a map
    /// whose every row has one key does.
    #[test]
    fn forced_rows_do_not_set_the_colour_scale() {
        let causal = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.3, 0.2, 0.0],
            vec![0.1, 0.4, 0.1],
        ];
        assert_eq!(colour_scale(&causal), 0.4);
        let eye = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(colour_scale(&eye), 1.0);
    }
}
