//! `glue annotate`: the perception pipeline run over recorded demonstrations, so training sees exactly the
//! keypoints the closed loop will see (paper sec. III-B): on each episode's first frame the text queries are
//! grounded ([`OracleGrounder`] on the recorded segmentation) and `k` keypoints extracted ([`extract_keypoints`]);
//! the KLT tracker follows them through every frame; the tracks fill the recording's `keypoints` column. The file
//! is rewritten next to itself and renamed over the original, so an interrupted run never leaves a half-written
//! episode.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use eyre::{Result, WrapErr, bail, ensure, eyre};
use image::RgbImage;

use crate::keypoints::{Grounder, OracleGrounder, extract_keypoints};
use crate::msg::Keypoints;
use crate::recording::{EpisodeWriter, list_episodes, read_episode};
use crate::track::{KltConfig, KltTracker};
use crate::vit::GridEncoder;

/// Keypoints of one first frame: `queries` grounded by `grounder`, then `k` keypoints (all visible) on the objects
/// in view (repeated when the objects show fewer than `k` pixels). When no queried object is in view (fully
/// occluded, say) there is nothing to extract: `k` keypoints marked invisible, whose key patches the policy zeroes
/// (sec. III-C), for the whole episode (see [`EpisodeTracks`]), at `unseen_at` (pixels) or else the image centre.
/// Where they sit is what the policy reads from the key patches' positional encodings when their features are
/// zeroed: the image centre may be a cell no demonstration visits (push-button's buttons lie in the lower third of
/// the frame), the demonstrations' mean keypoint position is where the objects usually are (`glue eval
/// --unseen-at`, the grounding node's `UNSEEN_AT`). Measured on push-button's hidden-button scenes, the choice did
/// not change what two GLUE runs did (docs/results.md).
pub fn first_frame_keypoints(
    grounder: &dyn Grounder,
    encoder: &GridEncoder,
    image: &RgbImage,
    queries: &[String],
    k: usize,
    seed: u64,
    unseen_at: Option<[f32; 2]>,
    device: &Device,
) -> Result<Vec<[f32; 3]>> {
    let keypoints = first_frame_keypoints_by_object(grounder, encoder, image, queries, k, seed, unseen_at, device)?;
    Ok(keypoints.into_iter().map(|(point, _)| point).collect())
}

/// [`first_frame_keypoints`] with each keypoint's object: the index of its text query, `None` for the invisible
/// keypoints of a frame without any queried object.
pub fn first_frame_keypoints_by_object(
    grounder: &dyn Grounder,
    encoder: &GridEncoder,
    image: &RgbImage,
    queries: &[String],
    k: usize,
    seed: u64,
    unseen_at: Option<[f32; 2]>,
    device: &Device,
) -> Result<Vec<([f32; 3], Option<usize>)>> {
    let (objects, masks): (Vec<usize>, Vec<_>) =
        grounder.ground(image, queries)?.into_iter().enumerate().filter(|(_, m)| m.area() > 0).unzip();
    if masks.is_empty() {
        let (w, h) = image.dimensions();
        let [x, y] = unseen_at.unwrap_or([w as f32 / 2.0, h as f32 / 2.0]);
        return Ok(vec![([x, y, 0.0], None); k]);
    }
    // An object barely in view can have fewer pixels than keypoints: extract what fits, then repeat those so the
    // episode still has `k` (the policy attends over a set; duplicates add no information but keep the count).
    let pixels: usize = masks.iter().map(|m| m.area()).sum();
    let keypoints = extract_keypoints(encoder, image, &masks, k.min(pixels), seed, device)?;
    let found: Vec<([f32; 3], Option<usize>)> =
        keypoints.iter().map(|p| ([p.x, p.y, 1.0], Some(objects[p.object]))).collect();
    Ok((0..k).map(|i| found[i % found.len()]).collect())
}

/// Parses `X,Y` (pixels), [`first_frame_keypoints`]' `unseen_at`: two finite numbers.
pub fn parse_unseen_at(text: &str) -> Result<[f32; 2]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [x, y] = parts[..] else {
        bail!("unseen-at: expected `X,Y` in pixels (two numbers), got `{text}`");
    };
    let num = |s: &str| s.parse::<f32>().ok().filter(|v| v.is_finite());
    match (num(x), num(y)) {
        (Some(x), Some(y)) => Ok([x, y]),
        _ => bail!("unseen-at: expected `X,Y` in pixels (two finite numbers), got `{text}`"),
    }
}

/// An episode's keypoints after its first frame: the KLT tracker following them, or, when grounding found no task
/// object (every initial keypoint invisible), those invisible keypoints unchanged on every frame.
pub enum EpisodeTracks {
    Tracked(KltTracker),
    Unseen(Vec<[f32; 3]>),
}

impl EpisodeTracks {
    /// Starts from [`first_frame_keypoints`]' output on `first`.
    pub fn start(first: &RgbImage, init: &[[f32; 3]]) -> Result<Self> {
        if init.iter().all(|p| p[2] <= 0.0) {
            return Ok(Self::Unseen(init.to_vec()));
        }
        let points: Vec<[f32; 2]> = init.iter().map(|p| [p[0], p[1]]).collect();
        Ok(Self::Tracked(KltTracker::new(KltConfig::default(), first, &points)?))
    }

    /// The keypoints on the last frame seen (`[x, y, visible]`).
    pub fn current(&self) -> Vec<[f32; 3]> {
        match self {
            Self::Tracked(t) => t.current(),
            Self::Unseen(points) => points.clone(),
        }
    }

    /// The keypoints on the next frame.
    pub fn track(&mut self, frame: &RgbImage) -> Result<Vec<[f32; 3]>> {
        match self {
            Self::Tracked(t) => t.try_track(frame),
            Self::Unseen(points) => Ok(points.clone()),
        }
    }
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
    let init = first_frame_keypoints(&grounder, encoder, &image0, &info.text_query, k, seed, None, device)
        .wrap_err_with(|| format!("{}: keypoint extraction", path.display()))?;
    let mut tracks = EpisodeTracks::start(&image0, &init)?;
    for (i, tick) in episode.ticks.iter_mut().enumerate() {
        let tracked = if i == 0 { tracks.current() } else { tracks.track(&frame(&tick.image)?)? };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::ObjectInfo;

    #[test]
    fn an_episode_without_its_objects_in_view_keeps_invisible_keypoints() {
        let device = Device::flex();
        let encoder = GridEncoder::load(Path::new(crate::pretrain::SMALL_LOCAL_ENCODER), 2, &device).unwrap();
        // A 32x24 frame whose segmentation holds the button (instance 4) where `seg` says.
        let grounder = |seg: Vec<u8>| OracleGrounder::new(vec![ObjectInfo { name: "red button".into(), instance: 4 }], 32, 24, seg).unwrap();
        // The button is nowhere in the segmentation: fully occluded on the first frame.
        let grounder_none = grounder(vec![1; 32 * 24]);
        let image = RgbImage::from_pixel(32, 24, image::Rgb([90, 120, 150]));
        let init = first_frame_keypoints(&grounder_none, &encoder, &image, &["red button".into()], 5, 0, None, &device).unwrap();
        assert_eq!(init, vec![[16.0, 12.0, 0.0]; 5]);
        let mut tracks = EpisodeTracks::start(&image, &init).unwrap();
        assert!(matches!(tracks, EpisodeTracks::Unseen(_)));
        assert_eq!(tracks.track(&image).unwrap(), init, "unseen keypoints stay invisible");
        // With the object in view the same call tracks visible keypoints.
        let mut seg = vec![1u8; 32 * 24];
        seg[10 * 32..14 * 32].iter_mut().for_each(|v| *v = 4);
        let init = first_frame_keypoints(&grounder(seg), &encoder, &image, &["red button".into()], 5, 0, None, &device).unwrap();
        assert!(init.iter().all(|p| p[2] == 1.0 && (10.0..14.0).contains(&p[1])), "{init:?}");
        assert!(matches!(EpisodeTracks::start(&image, &init).unwrap(), EpisodeTracks::Tracked(_)));
        // Three pixels in view and five keypoints asked for: the three, then two of them again.
        let mut seg = vec![1u8; 32 * 24];
        seg[5 * 32 + 7..5 * 32 + 10].iter_mut().for_each(|v| *v = 4);
        let init = first_frame_keypoints(&grounder(seg), &encoder, &image, &["red button".into()], 5, 0, None, &device).unwrap();
        assert_eq!(init.len(), 5);
        assert_eq!((init[3], init[4]), (init[0], init[1]));
        assert!(init.iter().all(|p| p[1] == 5.5 && (7.0..10.0).contains(&p[0])), "{init:?}");
    }

    #[test]
    fn only_keypoints_of_a_frame_where_nothing_was_found_move() {
        let device = Device::flex();
        let encoder = GridEncoder::load(Path::new(crate::pretrain::SMALL_LOCAL_ENCODER), 2, &device).unwrap();
        let image = RgbImage::from_pixel(32, 24, image::Rgb([90, 120, 150]));
        let button = |seg: Vec<u8>| OracleGrounder::new(vec![ObjectInfo { name: "red button".into(), instance: 4 }], 32, 24, seg).unwrap();
        let first = |seg: Vec<u8>, at| first_frame_keypoints(&button(seg), &encoder, &image, &["red button".into()], 3, 0, at, &device).unwrap();
        assert_eq!(first(vec![1; 32 * 24], Some([5.0, 20.0])), vec![[5.0, 20.0, 0.0]; 3]);
        // The object in view: `unseen_at` changes nothing.
        let mut seg = vec![1u8; 32 * 24];
        seg[10 * 32..14 * 32].iter_mut().for_each(|v| *v = 4);
        assert_eq!(first(seg.clone(), Some([5.0, 20.0])), first(seg, None));
        assert_eq!(parse_unseen_at(" 102.5, 178").unwrap(), [102.5, 178.0]);
        for bad in ["102", "1,2,3", "x,4", "nan,4", ""] {
            let err = parse_unseen_at(bad).unwrap_err().to_string();
            assert!(err.contains("unseen-at") && err.contains("X,Y"), "{bad}: {err}");
        }
    }
}
