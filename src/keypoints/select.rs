//! Keypoint selection inside the masks (module doc of [`super`], step 3): allocation among the objects,
//! the clustering space, K-means, and the member nearest each centre.

use std::collections::HashSet;

use burn::tensor::Device;
use eyre::{bail, ensure};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kmeans::dist2;
use super::{FeatureGrid, Keypoint, Mask, kmeans};
use crate::vit::GridEncoder;

/// The knobs of [`select_keypoints`] (see the module doc for what each does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeypointConfig {
    /// Keypoints in total, `N_cluster` (the paper: 10-20).
    pub k: usize,
    /// Seed of the subsampling and of K-means.
    pub seed: u64,
    /// Weight of the (normalised) pixel position against the (normalised) feature in the clustering space.
    pub spatial_weight: f32,
    /// Most mask pixels clustered per object; larger masks are subsampled.
    pub max_samples: usize,
    /// Lloyd iterations at most.
    pub max_iterations: usize,
    /// Keypoints per object at least (lowered to 1 when `k` is too small for it).
    pub min_per_object: usize,
}

impl Default for KeypointConfig {
    fn default() -> Self {
        Self { k: 15, seed: 0, spatial_weight: 1.0, max_samples: 4096, max_iterations: 50, min_per_object: 2 }
    }
}

/// How many of `k` keypoints each object (mask area `areas[i]`) gets: at least `min_per_object` (1 when
/// `k < min_per_object · N_obj`), at most its area, the rest proportional to area (each further keypoint to the
/// object furthest below its share `k·a_i/Σa`, ties to the lower index). Sums to `k`.
pub fn allocate(areas: &[usize], k: usize, min_per_object: usize) -> eyre::Result<Vec<usize>> {
    let n = areas.len();
    ensure!(n > 0, "keypoints: no object masks");
    if let Some(i) = areas.iter().position(|&a| a == 0) {
        bail!("keypoints: mask {i} is empty");
    }
    ensure!(k >= n, "keypoints: k = {k} is fewer than the {n} objects (each object needs at least one keypoint)");
    let total: usize = areas.iter().sum();
    ensure!(k <= total, "keypoints: k = {k} exceeds the {total} mask pixels");
    let floor = min_per_object.min(k / n).max(1);
    let mut alloc: Vec<usize> = areas.iter().map(|&a| floor.min(a)).collect();
    let mut given: usize = alloc.iter().sum();
    while given < k {
        let deficit = |i: usize| k as f64 * areas[i] as f64 / total as f64 - alloc[i] as f64;
        let next = (0..n)
            .filter(|&i| alloc[i] < areas[i])
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if deficit(b) >= deficit(i) => Some(b),
                _ => Some(i),
            })
            .expect("k <= total area leaves room");
        alloc[next] += 1;
        given += 1;
    }
    Ok(alloc)
}

/// Seeds derived per object so that objects draw independent streams.
fn object_seed(seed: u64, object: usize) -> u64 {
    seed ^ (object as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Up to `max` of `pixels`, uniformly without replacement (seeded), in raster order.
fn subsample(mut pixels: Vec<(u32, u32)>, max: usize, seed: u64) -> Vec<(u32, u32)> {
    if pixels.len() <= max {
        return pixels;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..max {
        let j = rng.random_range(i..pixels.len());
        pixels.swap(i, j);
    }
    pixels.truncate(max);
    pixels.sort_unstable_by_key(|&(x, y)| (y, x));
    pixels
}

/// The clustering space of one object's pixels (module doc): L2-normalised features scaled to unit total
/// variance, then the position (centred, over the RMS radius) times `spatial_weight`. Row-major, `channels + 2`
/// per pixel.
fn clustering_space(features: &FeatureGrid, pixels: &[(u32, u32)], spatial_weight: f32) -> Vec<f32> {
    let c = features.channels();
    let dim = c + 2;
    let n = pixels.len() as f64;
    let mut rows = vec![0f32; pixels.len() * dim];
    for (row, &(x, y)) in rows.chunks_exact_mut(dim).zip(pixels) {
        let (f, pos) = row.split_at_mut(c);
        features.pixel_feature(x, y, f);
        let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            f.iter_mut().for_each(|v| *v /= norm);
        }
        pos[0] = x as f32 + 0.5;
        pos[1] = y as f32 + 0.5;
    }
    // Centre and scale each block to unit total variance.
    for (start, len, weight) in [(0, c, 1.0f32), (c, 2, spatial_weight)] {
        let mut mean = vec![0f64; len];
        for row in rows.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(&row[start..start + len]) {
                *m += f64::from(v) / n;
            }
        }
        let var: f64 = rows
            .chunks_exact(dim)
            .map(|row| row[start..start + len].iter().zip(&mean).map(|(&v, m)| (f64::from(v) - m).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n;
        let scale = if var > 1e-12 { f64::from(weight) / var.sqrt() } else { f64::from(weight) };
        for row in rows.chunks_exact_mut(dim) {
            for (v, m) in row[start..start + len].iter_mut().zip(&mean) {
                *v = ((f64::from(*v) - m) * scale) as f32;
            }
        }
    }
    rows
}

/// Keypoint selection on an encoded frame: allocates `config.k` keypoints among the masks ([`allocate`]), runs
/// K-means in each mask's clustering space and keeps, per cluster, the member nearest to its centre. Keypoints
/// are ordered by object, then in raster order.
pub fn select_keypoints(
    features: &FeatureGrid,
    masks: &[Mask],
    config: &KeypointConfig,
) -> eyre::Result<Vec<Keypoint>> {
    for (i, mask) in masks.iter().enumerate() {
        ensure!(
            mask.dimensions() == features.dimensions(),
            "keypoints: mask {i} is {}x{} but the frame is {}x{}",
            mask.width,
            mask.height,
            features.dimensions().0,
            features.dimensions().1
        );
    }
    let areas: Vec<usize> = masks.iter().map(Mask::area).collect();
    let alloc = allocate(&areas, config.k, config.min_per_object)?;
    let dim = features.channels() + 2;
    let mut keypoints = Vec::with_capacity(config.k);
    for (object, (mask, &count)) in masks.iter().zip(&alloc).enumerate() {
        let seed = object_seed(config.seed, object);
        let pixels = subsample(mask.pixels().collect(), config.max_samples.max(count), seed);
        let rows = clustering_space(features, &pixels, config.spatial_weight);
        let result = kmeans(&rows, dim, count, seed, config.max_iterations);
        let row = |i: usize| &rows[i * dim..(i + 1) * dim];
        let mut taken = HashSet::with_capacity(count);
        let mut chosen = Vec::with_capacity(count);
        for j in 0..count {
            let centre = result.centre(j);
            let best = |members: &mut dyn Iterator<Item = usize>| {
                members.filter(|i| !taken.contains(i)).map(|i| (i, dist2(row(i), centre))).fold(
                    None,
                    |b: Option<(usize, f32)>, (i, d)| match b {
                        Some((_, bd)) if bd <= d => b,
                        _ => Some((i, d)),
                    },
                )
            };
            let pick = best(&mut (0..pixels.len()).filter(|&i| result.assignments[i] == j))
                .or_else(|| best(&mut (0..pixels.len())))
                .expect("at least as many pixels as clusters")
                .0;
            taken.insert(pick);
            chosen.push(pixels[pick]);
        }
        chosen.sort_unstable_by_key(|&(x, y)| (y, x));
        keypoints.extend(chosen.into_iter().map(|(x, y)| Keypoint::at_pixel(x, y, object)));
    }
    Ok(keypoints)
}

/// One-time keypoint extraction from the first frame: encodes `image` with the frozen grid encoder and selects
/// `k` keypoints among `masks` (one per object) with the default [`KeypointConfig`] and `seed`.
pub fn extract_keypoints(
    encoder: &GridEncoder,
    image: &RgbImage,
    masks: &[Mask],
    k: usize,
    seed: u64,
    device: &Device,
) -> eyre::Result<Vec<Keypoint>> {
    extract_keypoints_with(encoder, image, masks, &KeypointConfig { k, seed, ..KeypointConfig::default() }, device)
}

/// [`extract_keypoints`] with every knob.
pub fn extract_keypoints_with(
    encoder: &GridEncoder,
    image: &RgbImage,
    masks: &[Mask],
    config: &KeypointConfig,
    device: &Device,
) -> eyre::Result<Vec<Keypoint>> {
    // Check the cheap things before encoding.
    allocate(&masks.iter().map(Mask::area).collect::<Vec<_>>(), config.k, config.min_per_object)?;
    let features = FeatureGrid::encode(encoder, image, device)?;
    select_keypoints(&features, masks, config)
}
