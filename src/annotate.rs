//! `glue annotate`: the perception pipeline run over recorded demonstrations, so training sees exactly the
//! keypoints the closed loop will see (paper sec. III-B): on each episode's first frame the text queries are
//! grounded ([`OracleGrounder`] on the recorded segmentation) and `k` keypoints extracted ([`extract_keypoints`]);
//! the KLT tracker follows them through every frame; the tracks fill the recording's `keypoints` column. The file
//! is rewritten next to itself and renamed over the original, so an interrupted run never leaves a half-written
//! episode.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use eyre::{Result, WrapErr, ensure, eyre};
use image::RgbImage;

use crate::keypoints::{Grounder, OracleGrounder, extract_keypoints};
use crate::msg::Keypoints;
use crate::recording::{EpisodeWriter, list_episodes, read_episode};
use crate::track::{KltConfig, KltTracker};
use crate::vit::GridEncoder;

/// Keypoints of one first frame: `queries` grounded by `grounder`, then `k` keypoints (all visible).
pub fn first_frame_keypoints(
    grounder: &dyn Grounder,
    encoder: &GridEncoder,
    image: &RgbImage,
    queries: &[String],
    k: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<[f32; 3]>> {
    let masks = grounder.ground(image, queries)?;
    let keypoints = extract_keypoints(encoder, image, &masks, k, seed, device)?;
    Ok(keypoints.iter().map(|p| [p.x, p.y, 1.0]).collect())
}

/// Annotates one recording in place; returns the number of ticks.
pub fn annotate_episode(path: &Path, encoder: &GridEncoder, k: usize, seed: u64, device: &Device) -> Result<usize> {
    let mut episode = read_episode(path).wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let info = episode.info.clone();
    let first = episode.ticks.first().ok_or_else(|| eyre!("{}: no ticks", path.display()))?;
    let segmentation = first
        .segmentation
        .clone()
        .ok_or_else(|| eyre!("{}: the oracle grounder needs the segmentation column, which is empty", path.display()))?;
    let frame = |pixels: &[u8]| {
        RgbImage::from_raw(info.width, info.height, pixels.to_vec()).ok_or_else(|| eyre!("{}: bad frame size", path.display()))
    };
    let grounder = OracleGrounder::new(info.objects.clone(), info.width, info.height, segmentation)?;
    let image0 = frame(&first.image)?;
    let init = first_frame_keypoints(&grounder, encoder, &image0, &info.text_query, k, seed, device)
        .wrap_err_with(|| format!("{}: keypoint extraction", path.display()))?;
    let points: Vec<[f32; 2]> = init.iter().map(|p| [p[0], p[1]]).collect();
    let mut tracker = KltTracker::new(KltConfig::default(), &image0, &points)?;
    for (i, tick) in episode.ticks.iter_mut().enumerate() {
        let tracked = if i == 0 { tracker.current() } else { tracker.try_track(&frame(&tick.image)?)? };
        tick.keypoints = Some(Keypoints { points: tracked });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".annotate-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut writer = EpisodeWriter::create(&tmp, info)?;
    let n = episode.ticks.len();
    for tick in episode.ticks {
        writer.push(tick)?;
    }
    let written = writer.finish(episode.success)?;
    std::fs::rename(&written, path).wrap_err_with(|| format!("cannot replace {}", path.display()))?;
    std::fs::remove_dir_all(&tmp).ok();
    Ok(n)
}

/// Annotates every recording under `paths` (files or folders); returns the files done.
pub fn annotate(paths: &[PathBuf], encoder: &GridEncoder, k: usize, seed: u64, device: &Device) -> Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(list_episodes(p)?);
        } else {
            ensure!(p.is_file(), "not found: {}", p.display());
            files.push(p.clone());
        }
    }
    ensure!(!files.is_empty(), "no .arrow recordings under {paths:?}");
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let mut done = Vec::new();
    for f in files {
        let n = annotate_episode(&f, encoder, k, seed, device)?;
        bar.inc(1);
        done.push((f, n));
    }
    bar.finish_and_clear();
    Ok(done)
}
