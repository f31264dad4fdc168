//! Tracker throughput on a synthetic sequence (`glue track --bench`).

use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use super::synthetic;
use super::{KltConfig, KltTracker};

/// Throughput of [`KltTracker`] on a synthetic sequence.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub points: usize,
    pub width: u32,
    pub height: u32,
    /// Frames tracked in the timed runs.
    pub frames: usize,
    /// Best of the timed runs, frames per second (one thread, RGB frames in, grayscale conversion included).
    pub frames_per_s: f64,
    /// Median of the timed runs, frames per second.
    pub median_frames_per_s: f64,
    /// Fraction of the tracked point-frames reported visible (last run).
    pub visible_fraction: f64,
    /// Frames per second when every point is lost and searched for in every frame (one run).
    pub lost_frames_per_s: f64,
}

/// Tracks 20 points through a 224x224 synthetic RGB sequence of `frames` frames (a texture swaying: shifts of
/// ±15 px, rotations of ±8°, zooms of ±5%, so the points stay in view) `repeats` times on the calling thread and
/// reports frames per second; the sequence is rendered before the clock starts, the tracker is built outside it.
pub fn bench(frames: usize, repeats: usize) -> eyre::Result<BenchReport> {
    let (w, h, n) = (224u32, 224u32, 20usize);
    let texture = synthetic::Texture::new(7);
    let wave = |t: usize, period: f32| (std::f32::consts::TAU * t as f32 / period).sin();
    let motion = |t: usize| synthetic::Motion {
        shift: [15.0 * wave(t, 50.0), 10.0 * wave(t, 37.0)],
        angle_deg: 8.0 * wave(t, 61.0),
        scale: 1.0 + 0.05 * wave(t, 43.0),
    };
    let seq: Vec<RgbImage> = (0..frames.max(2)).map(|t| synthetic::render_rgb(&texture, w, h, &motion(t), None)).collect();
    let points: Vec<[f32; 2]> = (0..n).map(|i| [40.0 + 36.0 * (i % 5) as f32, 50.0 + 40.0 * (i / 5) as f32]).collect();
    let mut fps = Vec::new();
    let mut out = Vec::with_capacity(n);
    let mut visible = 0usize;
    for _ in 0..repeats.max(1) {
        let mut tracker = KltTracker::new(KltConfig::default(), &seq[0], &points)?;
        visible = 0;
        let start = Instant::now();
        for frame in &seq[1..] {
            tracker.track_into(frame.into(), &mut out)?;
            visible += out.iter().filter(|p| p[2] == 1.0).count();
        }
        fps.push((seq.len() - 1) as f64 / start.elapsed().as_secs_f64());
    }
    fps.sort_by(f64::total_cmp);
    // Worst case: every point lost and searched for in every frame (the scene is replaced by another texture).
    let other = synthetic::Texture::new(8);
    let strange: Vec<RgbImage> = (1..seq.len()).map(|t| synthetic::render_rgb(&other, w, h, &motion(t), None)).collect();
    let mut tracker = KltTracker::new(KltConfig::default(), &seq[0], &points)?;
    let start = Instant::now();
    for frame in &strange {
        tracker.track_into(frame.into(), &mut out)?;
    }
    let lost_frames_per_s = strange.len() as f64 / start.elapsed().as_secs_f64();
    Ok(BenchReport {
        lost_frames_per_s,
        points: n,
        width: w,
        height: h,
        frames: seq.len() - 1,
        frames_per_s: fps[fps.len() - 1],
        median_frames_per_s: fps[fps.len() / 2],
        visible_fraction: visible as f64 / ((seq.len() - 1) * n) as f64,
    })
}
