//! Visualisation of recorded episodes: animated GIFs with overlays (`glue render`) and PNG snapshots.
//!
//! Overlays: the instance segmentation tints each instance id with a distinct colour at 50% alpha (id 0, the
//! background, stays untinted); point tracks (`[N, 3]` = x, y, visible, see `msg::Keypoints`) are dots, a
//! visible point a filled disc with a dark outline and an occluded one a hollow ring: oracle tracks green/red,
//! tracker keypoints cyan/magenta.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use eyre::{WrapErr, ensure};
use image::codecs::gif::{GifEncoder, Repeat};
use image::imageops::{self, FilterType};
use image::{Delay, DynamicImage, Frame, ImageFormat, Rgb, RgbImage};

use crate::recording::{Episode, EpisodeInfo, Tick};

/// What [`render_episode_gif`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GifOptions {
    /// Draw the tracker keypoints (cyan visible, magenta occluded).
    pub keypoints: bool,
    /// Draw the simulator's oracle tracks (green visible, red occluded).
    pub oracle_tracks: bool,
    /// Tint the instance segmentation.
    pub segmentation: bool,
    /// Frames per second (default 10, the control rate; GIF delays have 10 ms resolution).
    pub fps: u32,
    /// Integer upscaling factor, nearest neighbour (default 1).
    pub scale: u32,
    /// Keep every `every`-th tick (default 1: all), each shown `every` times as long, so the GIF plays in real
    /// time at a fraction of the size.
    pub every: u32,
}

impl Default for GifOptions {
    fn default() -> Self {
        Self { keypoints: false, oracle_tracks: false, segmentation: false, fps: 10, scale: 1, every: 1 }
    }
}

/// How [`draw_points`] draws visible and occluded points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointStyle {
    /// Fill of a visible point's disc.
    pub visible: Rgb<u8>,
    /// Colour of an occluded point's ring.
    pub occluded: Rgb<u8>,
    /// Outline around a visible point's disc.
    pub outline: Rgb<u8>,
    /// Disc and ring radius in output pixels.
    pub radius: f32,
}

impl PointStyle {
    /// Oracle tracks: green discs, red rings.
    pub const TRACKS: Self =
        Self { visible: Rgb([40, 220, 60]), occluded: Rgb([230, 30, 30]), outline: DARK, radius: 3.0 };
    /// Tracker keypoints: cyan discs, magenta rings.
    pub const KEYPOINTS: Self =
        Self { visible: Rgb([0, 230, 230]), occluded: Rgb([230, 0, 230]), outline: DARK, radius: 3.0 };
}

const DARK: Rgb<u8> = Rgb([20, 20, 20]);

/// Distinct colours for instance ids (cycled for ids beyond the palette).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The tint of instance id `id` (> 0).
pub fn instance_colour(id: u8) -> Rgb<u8> {
    Rgb(PALETTE[usize::from(id.wrapping_sub(1)) % PALETTE.len()])
}

/// Wraps raw rgb8 bytes as an image, checking the length.
pub fn rgb_image(width: u32, height: u32, rgb: &[u8]) -> eyre::Result<RgbImage> {
    let got = rgb.len();
    RgbImage::from_raw(width, height, rgb.to_vec())
        .filter(|_| got as u64 == u64::from(width) * u64::from(height) * 3)
        .ok_or_else(|| {
            eyre::eyre!(
                "image: expected {width}x{height} rgb8 ({} bytes), got {got} bytes",
                u64::from(width) * u64::from(height) * 3
            )
        })
}

/// Blends each pixel with a non-zero instance id 50/50 with [`instance_colour`].
pub fn tint_segmentation(img: &mut RgbImage, segmentation: &[u8]) -> eyre::Result<()> {
    let (w, h) = img.dimensions();
    ensure!(
        segmentation.len() as u64 == u64::from(w) * u64::from(h),
        "segmentation: expected {w}x{h} ids, got {}",
        segmentation.len()
    );
    for (pixel, &id) in img.pixels_mut().zip(segmentation).filter(|(_, id)| **id != 0) {
        let tint = instance_colour(id);
        pixel.0 = std::array::from_fn(|c| ((u16::from(pixel.0[c]) + u16::from(tint.0[c])) / 2) as u8);
    }
    Ok(())
}

/// Draws `[x, y, visible]` points (pixel coordinates, pixel `i` spanning `[i, i + 1)`): visible as a filled
/// disc with an outline, occluded as a hollow ring. Points off the image are clipped.
pub fn draw_points(img: &mut RgbImage, points: &[[f32; 3]], style: &PointStyle) {
    let r = style.radius;
    for &[x, y, visible] in points.iter().filter(|p| p[0].is_finite() && p[1].is_finite()) {
        let (x0, x1) = ((x - r - 1.0).floor().max(0.0) as u32, (x + r + 1.0).ceil().max(0.0) as u32);
        let (y0, y1) = ((y - r - 1.0).floor().max(0.0) as u32, (y + r + 1.0).ceil().max(0.0) as u32);
        for py in y0..y1.min(img.height()) {
            for px in x0..x1.min(img.width()) {
                let d = (px as f32 + 0.5 - x).hypot(py as f32 + 0.5 - y);
                let colour = match visible > 0.5 {
                    true if d <= r => Some(style.visible),
                    true if d <= r + 1.0 => Some(style.outline),
                    false if (r - 1.2..=r).contains(&d) => Some(style.occluded),
                    _ => None,
                };
                if let Some(colour) = colour {
                    img.put_pixel(px, py, colour);
                }
            }
        }
    }
}

fn scaled(points: &[[f32; 3]], scale: f32) -> Vec<[f32; 3]> {
    points.iter().map(|&[x, y, v]| [x * scale, y * scale, v]).collect()
}

/// One tick's image with the overlays `opts` asks for (those the tick has), upscaled by `opts.scale`.
pub fn render_tick(info: &EpisodeInfo, tick: &Tick, opts: &GifOptions) -> eyre::Result<RgbImage> {
    ensure!(opts.scale >= 1, "scale: expected >= 1, got {}", opts.scale);
    let mut img = rgb_image(info.width, info.height, &tick.image).wrap_err_with(|| format!("frame {}", tick.frame))?;
    if let (true, Some(seg)) = (opts.segmentation, &tick.segmentation) {
        tint_segmentation(&mut img, seg).wrap_err_with(|| format!("frame {}", tick.frame))?;
    }
    if opts.scale > 1 {
        let size = info.width.checked_mul(opts.scale).zip(info.height.checked_mul(opts.scale));
        let (w, h) =
            size.ok_or_else(|| eyre::eyre!("scale {} is too large for {}x{}", opts.scale, info.width, info.height))?;
        img = imageops::resize(&img, w, h, FilterType::Nearest);
    }
    let s = opts.scale as f32;
    if let (true, Some(tracks)) = (opts.oracle_tracks, &tick.oracle_tracks) {
        draw_points(&mut img, &scaled(&tracks.points, s), &PointStyle::TRACKS);
    }
    if let (true, Some(keypoints)) = (opts.keypoints, &tick.keypoints) {
        draw_points(&mut img, &scaled(&keypoints.points, s), &PointStyle::KEYPOINTS);
    }
    Ok(img)
}

/// Writes the episode as a looping GIF: every `opts.every`-th tick, in real time at `opts.fps` ticks per second.
/// Returns the number of frames written.
pub fn render_episode_gif(episode: &Episode, out: &Path, opts: &GifOptions) -> eyre::Result<usize> {
    ensure!(!episode.ticks.is_empty(), "episode {} has no ticks to render", episode.info.episode);
    ensure!(opts.every >= 1, "every: expected >= 1, got {}", opts.every);
    ensure!(opts.fps >= 1, "fps: expected >= 1, got {}", opts.fps);
    let ticks = episode.ticks.iter().step_by(opts.every as usize);
    let frames = ticks.len();
    let delay = Delay::from_numer_denom_ms(1000 * opts.every, opts.fps);
    write_gif(ticks.map(|tick| render_tick(&episode.info, tick, opts)), delay, out)?;
    Ok(frames)
}

/// Writes `frames` as a looping GIF at `fps`.
pub fn save_gif(frames: impl IntoIterator<Item = eyre::Result<RgbImage>>, fps: u32, out: &Path) -> eyre::Result<()> {
    ensure!(fps >= 1, "fps: expected >= 1, got {fps}");
    write_gif(frames, Delay::from_numer_denom_ms(1000, fps), out)
}

/// Writes `frames` as a looping GIF, each shown for `delay`.
fn write_gif(frames: impl IntoIterator<Item = eyre::Result<RgbImage>>, delay: Delay, out: &Path) -> eyre::Result<()> {
    let file = File::create(out).wrap_err_with(|| format!("creating {}", out.display()))?;
    let mut gif = GifEncoder::new_with_speed(BufWriter::new(file), 10);
    gif.set_repeat(Repeat::Infinite)?;
    for frame in frames {
        let rgba = DynamicImage::ImageRgb8(frame?).into_rgba8();
        gif.encode_frame(Frame::from_parts(rgba, 0, 0, delay)).wrap_err_with(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Saves an image as PNG.
pub fn save_png(img: &RgbImage, path: &Path) -> eyre::Result<()> {
    img.save_with_format(path, ImageFormat::Png).wrap_err_with(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Action, Keypoints, RobotState};
    use image::AnimationDecoder;
    use image::codecs::gif::GifDecoder;

    const GREY: Rgb<u8> = Rgb([100, 100, 100]);

    fn episode(ticks: u32) -> Episode {
        let info = EpisodeInfo {
            episode: 0,
            task: "stack-block".into(),
            text_query: vec![],
            seed: 1,
            variant: "none".into(),
            strength: 0.0,
            width: 16,
            height: 12,
            control_hz: 10.0,
            objects: vec![],
        };
        let tick = |frame| Tick {
            frame,
            timestamp_ns: u64::from(frame) * 100_000_000,
            image: [100; 3].repeat(16 * 12),
            segmentation: Some((0..16 * 12).map(|i| u8::from(i % 16 >= 8)).collect()),
            robot_state: RobotState {
                joints: [0.0; 7],
                gripper: 0.04,
                ee_position: [0.5, 0.0, 0.3],
                ee_orientation: [1.0, 0.0, 0.0, 0.0],
            },
            action: Action { position: [0.5, 0.0, 0.3], orientation: [1.0, 0.0, 0.0, 0.0], gripper: 0.04 },
            keypoints: Some(Keypoints { points: vec![[4.0, 4.0, 1.0]] }),
            oracle_tracks: Some(Keypoints { points: vec![[12.0, 8.0, 1.0], [4.0, 9.0, 0.0]] }),
            object_poses: None,
        };
        Episode { info, success: true, ticks: (0..ticks).map(tick).collect() }
    }

    /// Renders `episode` with `opts` to a scratch file named for `name` and decodes it: (frames written, frames read).
    fn rendered(name: &str, episode: &Episode, opts: &GifOptions) -> (usize, Vec<Frame>) {
        let out = std::env::temp_dir().join(format!("glue-viz-{name}-{}.gif", std::process::id()));
        let written = render_episode_gif(episode, &out, opts).unwrap();
        let frames = GifDecoder::new(std::io::BufReader::new(File::open(&out).unwrap()))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap();
        std::fs::remove_file(&out).unwrap();
        (written, frames)
    }

    #[test]
    fn gif_has_one_frame_per_tick() {
        let opts =
            GifOptions { keypoints: true, oracle_tracks: true, segmentation: true, scale: 2, ..GifOptions::default() };
        let (written, frames) = rendered("all", &episode(5), &opts);
        assert_eq!((written, frames.len()), (5, 5));
        assert_eq!(frames[0].buffer().dimensions(), (32, 24));
        assert_eq!(frames[0].delay().numer_denom_ms(), (100, 1));
    }

    #[test]
    fn every_nth_tick_plays_in_real_time() {
        let (written, frames) = rendered("every", &episode(7), &GifOptions { every: 3, ..GifOptions::default() });
        assert_eq!((written, frames.len()), (3, 3), "ticks 0, 3 and 6 of 7");
        assert_eq!(frames[0].delay().numer_denom_ms(), (300, 1), "three 10 Hz ticks per frame");
        let out = std::env::temp_dir().join(format!("glue-viz-bad-{}.gif", std::process::id()));
        let err = render_episode_gif(&episode(7), &out, &GifOptions { every: 0, ..GifOptions::default() }).unwrap_err();
        assert!(err.to_string().contains("every"), "{err}");
        let err = render_episode_gif(&episode(7), &out, &GifOptions { fps: 0, ..GifOptions::default() }).unwrap_err();
        assert!(err.to_string().contains("fps"), "{err}");
        assert!(!out.exists(), "a refused render writes no file");
    }

    #[test]
    fn points_are_drawn_where_they_lie() {
        let mut img = RgbImage::from_pixel(20, 20, GREY);
        draw_points(&mut img, &[[5.5, 5.5, 1.0], [14.5, 14.5, 0.0], [-50.0, 3.0, 1.0]], &PointStyle::TRACKS);
        assert_eq!(*img.get_pixel(5, 5), PointStyle::TRACKS.visible);
        assert_eq!(*img.get_pixel(5, 9), PointStyle::TRACKS.outline);
        assert_eq!(*img.get_pixel(14, 14), GREY, "an occluded point is a hollow ring");
        assert_eq!(*img.get_pixel(14, 17), PointStyle::TRACKS.occluded);
        assert_eq!(*img.get_pixel(0, 0), GREY);
    }

    #[test]
    fn overlays_change_pixels_only_where_asked() {
        let ep = episode(1);
        let (info, tick) = (&ep.info, &ep.ticks[0]);
        let plain = render_tick(info, tick, &GifOptions::default()).unwrap();
        assert!(plain.pixels().all(|p| *p == GREY));
        let tinted = render_tick(info, tick, &GifOptions { segmentation: true, ..GifOptions::default() }).unwrap();
        assert_eq!(*tinted.get_pixel(2, 2), GREY, "background id 0 stays");
        assert_eq!(*tinted.get_pixel(10, 2), Rgb([65, 109, 140]), "id 1 blends 50/50 with its colour");
        let opts = GifOptions { keypoints: true, oracle_tracks: true, scale: 3, ..GifOptions::default() };
        let drawn = render_tick(info, tick, &opts).unwrap();
        assert_eq!(*drawn.get_pixel(12, 12), PointStyle::KEYPOINTS.visible, "keypoint (4, 4) at scale 3");
        assert_eq!(*drawn.get_pixel(36, 24), PointStyle::TRACKS.visible, "track (12, 8) at scale 3");
        assert_eq!(*drawn.get_pixel(12, 27), GREY, "occluded track (4, 9) is hollow");
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut ep = episode(1);
        ep.ticks[0].image.pop();
        assert!(
            render_tick(&ep.info, &ep.ticks[0], &GifOptions::default()).unwrap_err().to_string().contains("frame 0")
        );
        let mut img = RgbImage::new(4, 4);
        assert!(tint_segmentation(&mut img, &[1; 15]).is_err());
        let out = std::env::temp_dir().join("never-written.gif");
        assert!(render_episode_gif(&episode(0), &out, &GifOptions::default()).is_err());
    }

    #[test]
    fn png_roundtrip() {
        let path = std::env::temp_dir().join(format!("glue-viz-{}.png", std::process::id()));
        let img = rgb_image(2, 1, &[1, 2, 3, 4, 5, 6]).unwrap();
        save_png(&img, &path).unwrap();
        let back = image::open(&path).unwrap().into_rgb8();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, img);
    }
}
