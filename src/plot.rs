//! Result figures as PNG without a plotting dependency: [`LineChart`] for training curves (train and validation
//! loss against step, optionally on a log-scale y axis) and [`BarChart`] for grouped comparisons (e.g. the
//! correspondence error of a pretrained against a random-init encoder, each value printed above its bar).
//!
//! Everything is drawn on an [`RgbImage`] with an embedded 5x7 bitmap font (ASCII 32..=126, one descender row),
//! "nice" axis ticks (1, 2 or 5 x 10^k; decades on a log axis), grid, title, axis labels and a legend to the
//! right of the plot area. Non-finite values (and non-positive ones on a log axis) are skipped, never plotted.

use std::path::Path;

use eyre::WrapErr;
use image::{ImageFormat, Rgb, RgbImage};

/// One labelled curve of a [`LineChart`]: `(x, y)` points in drawing order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// Points, joined in order; a non-finite point breaks the line.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a label and its points.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points }
    }
}

/// Curves against a shared x axis, e.g. train and validation loss against training step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    /// Title above the plot (drawn at twice the text size).
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label left of the y axis, reading upwards.
    pub y_label: String,
    /// The curves, coloured in order from a fixed palette.
    pub series: Vec<Series>,
    /// Logarithmic y axis (decade ticks); points with `y <= 0` are skipped.
    pub log_y: bool,
}

/// Grouped bars: for each group one bar per series, each labelled with its value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BarChart {
    /// Title above the plot (drawn at twice the text size).
    pub title: String,
    /// Label left of the y axis, reading upwards.
    pub y_label: String,
    /// Group names along the x axis.
    pub groups: Vec<String>,
    /// `(legend label, one value per group)`; missing or non-finite values leave a gap.
    pub series: Vec<(String, Vec<f64>)>,
    /// Optional whiskers `[low, high]` per series and group (e.g. a 95% interval), shaped like `series`.
    pub intervals: Vec<Vec<[f64; 2]>>,
}

/// Default [`LineChart::save_png`] / [`BarChart::save_png`] size in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

/// Series colours (Tableau 10), reused cyclically.
#[rustfmt::skip]
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
];
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([25, 25, 25]);
const GRID: Rgb<u8> = Rgb([226, 226, 226]);
/// Pixels above the plot area (title) and below it (tick labels, x label).
const TOP: f64 = 44.0;
const BOTTOM: f64 = 40.0;

fn color(i: usize) -> Rgb<u8> {
    Rgb(PALETTE[i % PALETTE.len()])
}

/// 5x8 glyphs for ASCII 32..=126: byte `r` from the top (row 0 = most significant) is pixel row `r`, bit 4 the
/// leftmost column; rows 0..7 hold the letter, row 7 descenders.
#[rustfmt::skip]
const FONT: [u64; 95] = [
    0x0000000000000000, 0x0404040404000400, 0x0A0A0A0000000000, 0x0A0A1F0A1F0A0A00, 0x040F140E051E0400,
    0x1819020408130300, 0x0C12140815120D00, 0x0404080000000000, 0x0204080808040200, 0x0804020202040800,
    0x0004150E15040000, 0x0004041F04040000, 0x00000000000C0408, 0x0000000E00000000, 0x00000000000C0C00,
    0x0001020408100000, 0x0E11131519110E00, 0x040C040404040E00, 0x0E11010204081F00, 0x1F02040201110E00,
    0x02060A121F020200, 0x1F101E0101110E00, 0x0608101E11110E00, 0x1F01020408080800, 0x0E11110E11110E00,
    0x0E11110F01020C00, 0x000C0C000C0C0000, 0x000C0C000C040800, 0x0204081008040200, 0x00001F001F000000,
    0x0804020102040800, 0x0E11010204000400, 0x0E11171517100E00, 0x0E11111F11111100, 0x1E11111E11111E00,
    0x0E11101010110E00, 0x1C12111111121C00, 0x1F10101E10101F00, 0x1F10101E10101000, 0x0E11101711110F00,
    0x1111111F11111100, 0x0E04040404040E00, 0x0702020202120C00, 0x1112141814121100, 0x1010101010101F00,
    0x111B151511111100, 0x1111191513111100, 0x0E11111111110E00, 0x1E11111E10101000, 0x0E11111115120D00,
    0x1E11111E14121100, 0x0F10100E01011E00, 0x1F04040404040400, 0x1111111111110E00, 0x11111111110A0400,
    0x1111111515150A00, 0x11110A040A111100, 0x11110A0404040400, 0x1F01020408101F00, 0x0E08080808080E00,
    0x0010080402010000, 0x0E02020202020E00, 0x040A110000000000, 0x000000000000001F, 0x0804020000000000,
    0x00000E010F110F00, 0x1010161911111E00, 0x00000E1010110E00, 0x01010D1311110F00, 0x00000E111F100E00,
    0x0609081C08080800, 0x00000F11110F010E, 0x1010161911111100, 0x04000C0404040E00, 0x020006020202120C,
    0x1010121418141200, 0x0C04040404040E00, 0x00001A1515111100, 0x0000161911111100, 0x00000E1111110E00,
    0x00001E11111E1010, 0x00000F11110F0101, 0x0000161910101000, 0x00000F100E011E00, 0x08081C0808090600,
    0x0000111111130D00, 0x00001111110A0400, 0x0000111115150A00, 0x0000110A040A1100, 0x00001111110F010E,
    0x00001F0204081F00, 0x0304040804040300, 0x0404040404040400, 0x1804040204041800, 0x0000081502000000,
];

/// Width in pixels of `text` drawn at `scale` (6-pixel advance, no trailing gap).
fn text_width(text: &str, scale: i64) -> f64 {
    ((text.chars().count() as i64 * 6 - 1).max(0) * scale) as f64
}

/// Draws `text` with its top-left corner at `(x, y)`; `upward` rotates it 90 degrees counter-clockwise, so it
/// reads bottom to top starting at `(x, y)` with the glyph tops facing left.
fn draw_text(img: &mut RgbImage, (x, y): (f64, f64), text: &str, scale: i64, ink: Rgb<u8>, upward: bool) {
    let (x, y) = (x.round() as i64, y.round() as i64);
    for (i, c) in text.chars().enumerate() {
        let glyph = FONT[if (' '..='~').contains(&c) { c as usize - 32 } else { '?' as usize - 32 }];
        for row in 0..8 {
            for col in 0..5 {
                if (glyph >> (56 - 8 * row)) & (0x10 >> col) != 0 {
                    let (u, v) = ((i as i64 * 6 + col) * scale, row * scale);
                    let (px, py) = if upward { (x + v, y - u - scale + 1) } else { (x + u, y + v) };
                    fill(img, px, py, scale, scale, ink);
                }
            }
        }
    }
}

/// Fills the `w` x `h` rectangle at `(x, y)`, clipped to the image.
fn fill(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    let (x0, y0) = (x.max(0), y.max(0));
    let (x1, y1) = ((x + w).min(img.width() as i64), (y + h).min(img.height() as i64));
    for py in y0..y1 {
        for px in x0..x1 {
            img.put_pixel(px as u32, py as u32, c);
        }
    }
}

/// A `width`-pixel line from `a` to `b`.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), width: i64, c: Rgb<u8>) {
    // Half-pixel steps: rounding whole-pixel steps near .5 would leave gaps.
    let n = (2.0 * (b.0 - a.0).abs().max((b.1 - a.1).abs())).ceil().min(1e5) as usize;
    for i in 0..=n {
        let t = if n == 0 { 0.0 } else { i as f64 / n as f64 };
        let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        fill(img, (x - width as f64 / 2.0).round() as i64, (y - width as f64 / 2.0).round() as i64, width, width, c);
    }
}

/// Tick values `k * step` covering `[lo, hi]`, `step` the 1/2/5 x 10^k giving at most about `target` intervals.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = mag * [1.0, 2.0, 5.0, 10.0].into_iter().find(|&m| raw / mag <= m * (1.0 + 1e-9)).unwrap_or(10.0);
    let (first, last) = ((lo / step + 1e-9).floor() as i64, (hi / step - 1e-9).ceil() as i64);
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks with labels for a linear axis over `[lo, hi]` (`lo < hi`).
fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    let ticks = nice_ticks(lo, hi, target);
    let step = ticks[1] - ticks[0];
    let big = ticks.iter().any(|t| t.abs() >= 1e6) || step < 1e-4;
    let decimals = (-step.log10() - 1e-6).ceil().max(0.0) as usize;
    let label = |t: f64| if big { format!("{t:e}") } else { format!("{:.*}", decimals, t + 0.0) };
    ticks.into_iter().map(|t| if t.abs() < step * 1e-6 { 0.0 } else { t }).map(|t| (t, label(t))).collect()
}

/// Decade ticks for a log axis over `[lo, hi]` in log10 units, labelled with the values they stand for.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let (first, last) = (lo.floor() as i64, (hi.ceil() as i64).max(lo.floor() as i64 + 1));
    let step = ((last - first) as usize).div_ceil(8).max(1);
    let label = |k: i64| if (-3..=4).contains(&k) { format!("{}", 10f64.powi(k as i32)) } else { format!("1e{k}") };
    (first..=last).step_by(step).map(|k| (k as f64, label(k))).collect()
}

/// Smallest and largest of the finite `values`, padded apart when equal; `(0, 1)` when there are none.
fn finite_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    match (lo.is_finite(), lo == hi) {
        (false, _) => (0.0, 1.0),
        (true, true) => (lo - lo.abs().max(1.0) * 0.5, hi + hi.abs().max(1.0) * 0.5),
        (true, false) => (lo, hi),
    }
}

/// A value printed for people: three significant digits, scientific when very large or small.
fn format_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{:.*}", (2 - v.abs().log10().floor() as i64).clamp(0, 4) as usize, v)
    }
}

/// The plot area in pixels and the data range it shows (log10 units on a log axis).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Axes {
    /// Places the plot area in a `w` x `h` image: room on the left for the y label and `y_ticks`' labels, on
    /// the right for the legend.
    fn place(w: u32, h: u32, y_ticks: &[(f64, String)], legend: &[&str]) -> Self {
        let tick_w = y_ticks.iter().map(|(_, l)| text_width(l, 1)).fold(0.0, f64::max);
        let legend_w = legend.iter().map(|l| text_width(l, 1)).fold(0.0, f64::max);
        let left = (8.0 + 7.0 + 10.0 + tick_w + 8.0).min(w as f64 / 2.0);
        let right = (w as f64 - if legend.is_empty() { 16.0 } else { legend_w + 44.0 }).max(left + 1.0);
        let (first, last) = (y_ticks[0].0, y_ticks[y_ticks.len() - 1].0);
        Self { x: (0.0, 1.0), y: (first, last), left, right, top: TOP, bottom: (h as f64 - BOTTOM).max(TOP + 1.0) }
    }

    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    fn py(&self, y: f64) -> f64 {
        self.bottom - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }

    /// Background, title, axis labels, y grid and y tick labels.
    fn draw_frame(&self, img: &mut RgbImage, title: &str, x_label: &str, y_label: &str, ticks: &[(f64, String)]) {
        fill(img, 0, 0, img.width() as i64, img.height() as i64, WHITE);
        let mid = (self.left + self.right) / 2.0;
        let title_x = (mid - text_width(title, 2) / 2.0).min(img.width() as f64 - text_width(title, 2) - 8.0);
        draw_text(img, (title_x.max(8.0), 10.0), title, 2, INK, false);
        draw_text(img, (mid - text_width(x_label, 1) / 2.0, self.bottom + 24.0), x_label, 1, INK, false);
        let y_mid = (self.top + self.bottom) / 2.0 + text_width(y_label, 1) / 2.0;
        draw_text(img, (8.0, y_mid), y_label, 1, INK, true);
        for (t, label) in ticks {
            let y = self.py(*t);
            line(img, (self.left, y), (self.right, y), 1, GRID);
            line(img, (self.left - 4.0, y), (self.left, y), 1, INK);
            draw_text(img, (self.left - 7.0 - text_width(label, 1), y - 3.0), label, 1, INK, false);
        }
    }

    /// One line (`lines`) or square swatch per label, right of the plot area.
    fn draw_legend(&self, img: &mut RgbImage, labels: &[&str], lines: bool) {
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = (self.right + 12.0, self.top + 4.0 + 16.0 * i as f64);
            if lines {
                line(img, (x, y + 3.5), (x + 16.0, y + 3.5), 3, color(i));
            } else {
                fill(img, x as i64 + 3, y as i64 - 1, 10, 10, color(i));
            }
            draw_text(img, (x + 22.0, y), label, 1, INK, false);
        }
    }

    /// The frame around the plot area, drawn over the data.
    fn finish(&self, img: &mut RgbImage) {
        let (l, r, t, b) = (self.left, self.right, self.top, self.bottom);
        for (a, z) in [((l, t), (r, t)), ((r, t), (r, b)), ((r, b), (l, b)), ((l, b), (l, t))] {
            line(img, a, z, 1, INK);
        }
    }
}

impl LineChart {
    /// The y value as plotted (log10 on a log axis), `None` when it cannot be plotted.
    fn y(&self, y: f64) -> Option<f64> {
        let y = if self.log_y { if y > 0.0 { y.log10() } else { f64::NAN } } else { y };
        Some(y).filter(|y| y.is_finite())
    }

    fn layout(&self, w: u32, h: u32) -> (Axes, Vec<(f64, String)>, Vec<(f64, String)>) {
        let points = || self.series.iter().flat_map(|s| &s.points).filter(|p| p.0.is_finite());
        let (ylo, yhi) = finite_range(points().filter_map(|p| self.y(p.1)));
        let y_ticks = if self.log_y {
            log_ticks(ylo, yhi)
        } else {
            linear_ticks(ylo, yhi, (h as f64 - TOP - BOTTOM) as usize / 50)
        };
        let labels: Vec<&str> = self.series.iter().map(|s| s.label.as_str()).collect();
        let mut axes = Axes::place(w, h, &y_ticks, &labels);
        let (xlo, xhi) = finite_range(points().filter(|p| self.y(p.1).is_some()).map(|p| p.0));
        let x_ticks = linear_ticks(xlo, xhi, ((axes.right - axes.left) / 90.0).clamp(2.0, 10.0) as usize);
        axes.x = (x_ticks[0].0, x_ticks[x_ticks.len() - 1].0);
        (axes, x_ticks, y_ticks)
    }

    /// Draws the chart into a new `width` x `height` image.
    pub fn render(&self, width: u32, height: u32) -> RgbImage {
        let mut img = RgbImage::new(width, height);
        let (axes, x_ticks, y_ticks) = self.layout(width, height);
        axes.draw_frame(&mut img, &self.title, &self.x_label, &self.y_label, &y_ticks);
        for (t, label) in &x_ticks {
            let x = axes.px(*t);
            line(&mut img, (x, axes.top), (x, axes.bottom), 1, GRID);
            line(&mut img, (x, axes.bottom), (x, axes.bottom + 4.0), 1, INK);
            draw_text(&mut img, (x - text_width(label, 1) / 2.0, axes.bottom + 8.0), label, 1, INK, false);
        }
        for (i, s) in self.series.iter().enumerate() {
            let pixels: Vec<Option<(f64, f64)>> = (s.points.iter())
                .map(|&(x, y)| Some((axes.px(x), axes.py(self.y(y)?))).filter(|p| p.0.is_finite()))
                .collect();
            for pair in pixels.windows(2) {
                if let [Some(a), Some(b)] = pair {
                    line(&mut img, *a, *b, 2, color(i));
                }
            }
            if pixels.iter().flatten().count() <= 40 {
                pixels
                    .iter()
                    .flatten()
                    .for_each(|&(x, y)| fill(&mut img, x.round() as i64 - 2, y.round() as i64 - 2, 5, 5, color(i)));
            }
        }
        axes.draw_legend(&mut img, &self.series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), true);
        axes.finish(&mut img);
        img
    }

    /// Writes the chart as an 800x500 PNG.
    pub fn save_png(&self, path: &Path) -> eyre::Result<()> {
        save(self.render(DEFAULT_SIZE.0, DEFAULT_SIZE.1), path)
    }
}

impl BarChart {
    fn layout(&self, w: u32, h: u32) -> (Axes, Vec<(f64, String)>) {
        let whiskers = self.intervals.iter().flatten().flat_map(|w| *w);
        let values = self.series.iter().flat_map(|s| &s.1).copied().chain(whiskers).filter(|v| v.is_finite());
        let (lo, hi) = finite_range(values.chain([0.0]));
        let pad = (hi - lo) * 0.08;
        let ticks = linear_ticks(if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi }, 6);
        let labels: Vec<&str> = self.series.iter().map(|s| s.0.as_str()).collect();
        let mut axes = Axes::place(w, h, &ticks, &labels);
        axes.x = (0.0, self.groups.len().max(1) as f64);
        (axes, ticks)
    }

    /// Draws the chart into a new `width` x `height` image.
    pub fn render(&self, width: u32, height: u32) -> RgbImage {
        let mut img = RgbImage::new(width, height);
        let (axes, ticks) = self.layout(width, height);
        axes.draw_frame(&mut img, &self.title, "", &self.y_label, &ticks);
        let bar_w = 0.8 / self.series.len().max(1) as f64;
        for (g, name) in self.groups.iter().enumerate() {
            let x = axes.px(g as f64 + 0.5) - text_width(name, 1) / 2.0;
            draw_text(&mut img, (x, axes.bottom + 8.0), name, 1, INK, false);
            for (i, (_, values)) in self.series.iter().enumerate() {
                let Some(&v) = values.get(g).filter(|v| v.is_finite()) else { continue };
                let (x0, x1) =
                    (axes.px(g as f64 + 0.1 + i as f64 * bar_w), axes.px(g as f64 + 0.1 + (i + 1) as f64 * bar_w));
                let (y0, y1) = (axes.py(0.0).min(axes.py(v)), axes.py(0.0).max(axes.py(v)));
                let (w, h) = ((x1 - x0).round() as i64 - 2, (y1 - y0).round() as i64);
                fill(&mut img, x0.round() as i64 + 1, y0.round() as i64, w, h, color(i));
                let whisker = self.intervals.get(i).and_then(|w| w.get(g)).filter(|w| w.iter().all(|v| v.is_finite()));
                let mut top = y0;
                if let Some(&[low, high]) = whisker {
                    let (xm, cap) = ((x0 + x1) / 2.0, ((x1 - x0) / 4.0).max(2.0));
                    line(&mut img, (xm, axes.py(low)), (xm, axes.py(high)), 1, INK);
                    line(&mut img, (xm - cap, axes.py(high)), (xm + cap, axes.py(high)), 1, INK);
                    line(&mut img, (xm - cap, axes.py(low)), (xm + cap, axes.py(low)), 1, INK);
                    top = top.min(axes.py(high));
                }
                let label = format_value(v);
                let y = if v >= 0.0 { top - 11.0 } else { y1 + 4.0 };
                draw_text(&mut img, ((x0 + x1) / 2.0 - text_width(&label, 1) / 2.0, y), &label, 1, INK, false);
            }
        }
        line(&mut img, (axes.left, axes.py(0.0)), (axes.right, axes.py(0.0)), 1, INK);
        axes.draw_legend(&mut img, &self.series.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), false);
        axes.finish(&mut img);
        img
    }

    /// Writes the chart as an 800x500 PNG.
    pub fn save_png(&self, path: &Path) -> eyre::Result<()> {
        save(self.render(DEFAULT_SIZE.0, DEFAULT_SIZE.1), path)
    }
}

fn save(img: RgbImage, path: &Path) -> eyre::Result<()> {
    img.save_with_format(path, ImageFormat::Png).wrap_err_with(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(img: &RgbImage, (x, y): (f64, f64), c: Rgb<u8>) -> bool {
        let (x, y) = (x.round() as i64, y.round() as i64);
        (-2..=2).any(|dx| (-2..=2).any(|dy| img.get_pixel_checked((x + dx) as u32, (y + dy) as u32) == Some(&c)))
    }

    #[test]
    fn nice_ticks_are_1_2_5_steps_covering_the_range() {
        let ticks = nice_ticks(0.0, 0.97, 5);
        let expected = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(ticks.len(), expected.len(), "{ticks:?}");
        assert!(ticks.iter().zip(expected).all(|(t, e)| (t - e).abs() < 1e-12), "{ticks:?}");
        assert_eq!(nice_ticks(-3.0, 47.0, 5), [-10.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        let labels: Vec<String> = linear_ticks(0.0, 0.97, 5).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(linear_ticks(0.0, 0.003, 3)[1].1, "0.001");
        let labels: Vec<String> = linear_ticks(-0.9, 0.9, 4).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
    }

    #[test]
    fn axis_max_maps_to_the_plot_area_edge() {
        let chart = LineChart { series: vec![Series::new("a", vec![(0.0, 0.0), (97.0, 0.5)])], ..Default::default() };
        let (axes, _, _) = chart.layout(800, 500);
        assert_eq!((axes.x, axes.y), ((0.0, 100.0), (0.0, 0.5)));
        assert!((axes.px(100.0) - axes.right).abs() < 1e-9 && (axes.px(0.0) - axes.left).abs() < 1e-9);
        assert!((axes.py(0.5) - axes.top).abs() < 1e-9 && (axes.py(0.0) - axes.bottom).abs() < 1e-9);
        assert!(axes.left > 20.0 && axes.right < 780.0 && axes.top > 20.0 && axes.bottom < 480.0);
    }

    #[test]
    fn line_chart_draws_series_colours_along_their_lines() {
        let train = Series::new("train", (0..=100).map(|i| (i as f64, i as f64 / 100.0)).collect());
        let val = Series::new("val", vec![(0.0, 1.0), (100.0, 0.0)]);
        let chart = LineChart { title: "loss".into(), series: vec![train, val], ..Default::default() };
        let img = chart.render(800, 500);
        let (axes, _, _) = chart.layout(800, 500);
        for t in [0.1, 0.3, 0.7, 0.9] {
            assert!(near(&img, (axes.px(100.0 * t), axes.py(t)), color(0)), "series 0 missing at {t}");
            assert!(!near(&img, (axes.px(100.0 * t), axes.py(1.0 - t)), color(0)), "series 0 off its line at {t}");
            assert!(near(&img, (axes.px(100.0 * t), axes.py(1.0 - t)), color(1)), "series 1 missing at {t}");
        }
    }

    #[test]
    fn taller_bar_has_more_coloured_pixels() {
        let series = vec![("s".into(), vec![1.0, 3.0])];
        let chart = BarChart { groups: vec!["a".into(), "b".into()], series, ..Default::default() };
        let img = chart.render(800, 500);
        let (axes, _) = chart.layout(800, 500);
        let mid = axes.px(1.0);
        let count = |range: std::ops::Range<f64>| {
            img.enumerate_pixels().filter(|(x, _, p)| range.contains(&(*x as f64)) && **p == color(0)).count()
        };
        let (a, b) = (count(axes.left..mid), count(mid..axes.right));
        assert!(a > 100 && b > 2 * a && b < 4 * a, "{a} {b}");
    }

    #[test]
    fn whiskers_span_the_interval() {
        let (series, intervals) = (vec![("s".into(), vec![0.5])], vec![vec![[0.2, 0.9]]]);
        let chart = BarChart { groups: vec!["a".into()], series, intervals, ..Default::default() };
        let img = chart.render(800, 500);
        let (axes, _) = chart.layout(800, 500);
        let xm = (axes.px(0.1) + axes.px(0.9)) / 2.0;
        assert!(near(&img, (xm, axes.py(0.75)), INK), "whisker above the bar's top");
        assert!(near(&img, (xm, axes.py(0.35)), INK), "whisker inside the bar");
        assert_eq!(*img.get_pixel(xm.round() as u32, axes.py(0.1).round() as u32), color(0), "no whisker below its low end");
    }

    #[test]
    fn non_finite_and_degenerate_data_do_not_panic() {
        let nan = Series::new("nan", vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0), (f64::INFINITY, 9.0)]);
        let chart =
            LineChart { series: vec![nan, Series::new("none", vec![(f64::NAN, f64::NAN)])], ..Default::default() };
        let (axes, _, _) = chart.layout(800, 500);
        assert_eq!((axes.x, axes.y.1), ((0.0, 2.0), 3.0));
        let one = LineChart { series: vec![Series::new("one", vec![(5.0, 5.0)])], ..Default::default() };
        for (w, h) in [(800, 500), (3, 3), (10, 0)] {
            [&chart, &one, &LineChart::default()].iter().for_each(|c| _ = c.render(w, h));
            let (groups, nan, neg) = (vec!["g".into(), "h".into()], vec![f64::NAN], vec![-2.0, 1e-9]);
            BarChart { groups, series: vec![("nan".into(), nan), ("neg".into(), neg)], ..Default::default() }
                .render(w, h);
            BarChart::default().render(w, h);
        }
    }

    #[test]
    fn log_y_skips_non_positive_values() {
        let points = vec![(0.0, 0.0), (1.0, -1.0), (2.0, 0.01), (3.0, 10.0)];
        let chart = LineChart { log_y: true, series: vec![Series::new("loss", points)], ..Default::default() };
        let (axes, x_ticks, y_ticks) = chart.layout(800, 500);
        assert_eq!((axes.x, axes.y), ((2.0, 3.0), (-2.0, 1.0)));
        assert_eq!(y_ticks.into_iter().map(|t| t.1).collect::<Vec<_>>(), ["0.01", "0.1", "1", "10"]);
        assert!(x_ticks.len() >= 2);
        chart.render(800, 500);
    }
}
