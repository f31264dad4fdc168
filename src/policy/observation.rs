//! From raw frames to [`Observations`]: the crop (random in training, centred at inference), the resize to the
//! global encoder's input, CLIP normalisation, state normalisation, the key patches, and the camera-free
//! diagnostics' state rows ([`state_row`]: object features, keypoint coordinates).
//!
//! Key patches under a crop: the frozen local features are computed once per frame on the *uncropped* frame
//! (so they can be cached, `train`), and the crop moves only where each keypoint falls: its grid cell (and so
//! its positional encoding) is taken in the cropped image, clamped to the border when the point leaves the crop.
//! Inference does the same with the centred crop, so training and inference see one convention.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;

use super::config::{KEYPOINT_FEATURES, OBJECT_FEATURES, PolicyConfig};
use super::encoder::Observations;
use super::normalizer::Normalizer;
use crate::fusion::{KeyPatches, cell_of, is_visible, select_key_patches};
use crate::vit::GridEncoder;
use crate::vit::preprocess::{OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};

/// A square crop window in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

impl Crop {
    /// The side of a `ratio` crop of a `width x height` frame.
    pub fn side(width: u32, height: u32, ratio: f32) -> u32 {
        ((width.min(height) as f32 * ratio).round() as u32).clamp(1, width.min(height))
    }

    /// The centred crop (inference).
    pub fn centered(width: u32, height: u32, ratio: f32) -> Self {
        let side = Self::side(width, height, ratio);
        Crop { x: (width - side) / 2, y: (height - side) / 2, side }
    }

    /// A uniformly placed crop from two uniform draws in `[0, 1)` (training).
    pub fn random(width: u32, height: u32, ratio: f32, u: f32, v: f32) -> Self {
        let side = Self::side(width, height, ratio);
        let x = ((width - side + 1) as f32 * u).floor() as u32;
        let y = ((height - side + 1) as f32 * v).floor() as u32;
        Crop { x: x.min(width - side), y: y.min(height - side), side }
    }
}

/// One observation step as recorded.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// rgb8, `width * height * 3`.
    pub image: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// The robot state's first `state_dim` values, unnormalised.
    pub state: &'a [f32],
    /// Keypoints `(x, y, visible)` in frame pixels (GLUE, keypoint-coordinate policy).
    pub keypoints: &'a [[f32; 3]],
    /// The frozen local features of those keypoints, `N x C` row-major, invisible ones zeroed (GLUE).
    pub key_features: Option<&'a [f32]>,
    /// The task objects' poses (x, y, z, qx, qy, qz, qw) from the simulator (privileged-state policy; empty
    /// otherwise).
    pub object_poses: &'a [[f32; 7]],
}

/// A task object's features in the privileged state: its position, then the first two columns of its rotation
/// matrix (continuous in the rotation, unlike a quaternion's sign).
pub fn object_features(poses: &[[f32; 7]]) -> Vec<f32> {
    let mut out = Vec::with_capacity(poses.len() * OBJECT_FEATURES);
    for &[px, py, pz, x, y, z, w] in poses {
        out.extend([px, py, pz]);
        out.extend([1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y)]);
        out.extend([2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x)]);
    }
    out
}

/// One observation step's state row before normalisation: the robot state's first `state_dim` values, then the
/// task objects' features (privileged-state policy, [`object_features`]), then each tracked keypoint's
/// `(x, y, visible)` in frame pixels (keypoint-coordinate policy, GLUE with `--keypoint-coords`);
/// `config.state_width()` values. Panics on counts
/// other than the configuration's ([`crate::policy::Policy`] checks frames first).
pub fn state_row(config: &PolicyConfig, state: &[f32], object_poses: &[[f32; 7]], keypoints: &[[f32; 3]]) -> Vec<f32> {
    let mut row = Vec::with_capacity(config.state_width());
    row.extend_from_slice(&state[..config.state_dim]);
    if config.n_objects > 0 {
        assert_eq!(object_poses.len(), config.n_objects, "object poses: expected [{}, 7]", config.n_objects);
        row.extend(object_features(object_poses));
    }
    if config.n_keypoints > 0 {
        assert_eq!(keypoints.len(), config.n_keypoints, "keypoints: expected [{}, {KEYPOINT_FEATURES}]", config.n_keypoints);
        row.extend(keypoints.iter().flatten());
    }
    row
}

/// Builds the encoder input of `config`'s policy for `frames` (`M` rows, batch-major) with one crop per row.
pub fn observations(
    frames: &[Frame<'_>],
    crops: &[Crop],
    config: &PolicyConfig,
    normalizer: &Normalizer,
    device: &Device,
) -> Observations {
    assert_eq!(frames.len(), crops.len(), "one crop per frame");
    let m = frames.len();
    let images = config.policy.uses_images().then(|| images(frames, crops, config.image_size, device));
    let width = config.state_width();
    assert_eq!(normalizer.state.dim(), width, "the normaliser's state width");
    let mut states = Vec::with_capacity(m * width);
    for frame in frames {
        let mut s = state_row(config, frame.state, frame.object_poses, frame.keypoints);
        normalizer.state.normalize(&mut s);
        states.extend(s);
    }
    let state = Tensor::<2>::from_data(TensorData::new(states, [m, width]), device);
    let grid = config.fusion.grid;
    let key_patches = frames[0].key_features.map(|first| {
        let n = frames[0].keypoints.len();
        let channels = if n == 0 { 0 } else { first.len() / n };
        let mut features = Vec::with_capacity(m * n * channels);
        let mut cells = Vec::with_capacity(m * n);
        for (frame, crop) in frames.iter().zip(crops) {
            let f = frame.key_features.expect("every frame of a GLUE batch carries key features");
            assert_eq!(frame.keypoints.len(), n, "every frame of a batch must have {n} keypoints");
            assert_eq!(f.len(), n * channels, "key features: expected [{n}, {channels}]");
            // An occluded keypoint's key patch is zero whatever the features given for it, so a flag set to 0 after
            // the features were computed (training's `--point-dropout`) zeroes its patch too.
            for (p, row) in frame.keypoints.iter().zip(f.chunks(channels.max(1))) {
                if is_visible(p) {
                    features.extend_from_slice(row);
                } else {
                    features.extend(std::iter::repeat_n(0.0, channels));
                }
            }
            for p in frame.keypoints {
                cells.push(cell_of(p[0] - crop.x as f32, p[1] - crop.y as f32, crop.side, crop.side, grid) as i64);
            }
        }
        KeyPatches {
            features: Tensor::<3>::from_data(TensorData::new(features, [m, n, channels]), device),
            cells: Tensor::<2, Int>::from_data(TensorData::new(cells, [m, n]), device),
        }
    });
    Observations { images, state, key_patches }
}

/// Crops, resizes (bilinear) and CLIP-normalises the frames' images to `[M, 3, image_size, image_size]`.
fn images(frames: &[Frame<'_>], crops: &[Crop], image_size: usize, device: &Device) -> Tensor<4> {
    let m = frames.len();
    let side = crops[0].side as usize;
    assert!(crops.iter().all(|c| c.side as usize == side), "all crops of a batch share one side");
    let mut pixels = vec![0f32; m * 3 * side * side];
    for (i, (frame, crop)) in frames.iter().zip(crops).enumerate() {
        let w = frame.width as usize;
        for c in 0..3 {
            let (mean, std) = (OPENAI_CLIP_MEAN[c] as f32, OPENAI_CLIP_STD[c] as f32);
            let plane = &mut pixels[(i * 3 + c) * side * side..(i * 3 + c + 1) * side * side];
            for y in 0..side {
                let row = (crop.y as usize + y) * w + crop.x as usize;
                for x in 0..side {
                    let byte = frame.image[(row + x) * 3 + c];
                    plane[y * side + x] = (f32::from(byte) / 255.0 - mean) / std;
                }
            }
        }
    }
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [m, 3, side, side]), device);
    if side == image_size {
        images
    } else {
        let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([image_size, image_size]);
        interpolate(images, options)
    }
}

/// The frozen local features of each frame's keypoints (`N x C` row-major per frame; invisible keypoints
/// zeroed), from the uncropped frames' grid `M_local` (eq. 3's `F_patch2` before positional encoding).
pub fn key_features(
    encoder: &GridEncoder,
    frames: &[&RgbImage],
    keypoints: &[Vec<[f32; 3]>],
    device: &Device,
) -> eyre::Result<Vec<Vec<f32>>> {
    eyre::ensure!(frames.len() == keypoints.len(), "key features: {} frames but {} keypoint sets", frames.len(), keypoints.len());
    let (width, height) = frames[0].dimensions();
    let grid = encoder.encode(frames, device)?;
    let patches = select_key_patches(grid, keypoints, width, height);
    let [_, n, c] = patches.features.dims();
    eyre::ensure!(n > 0, "key features: no keypoints");
    let flat: Vec<f32> = patches.features.into_data().try_to_vec().map_err(|e| eyre::eyre!("{e:?}"))?;
    Ok(flat.chunks(n * c).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::normalizer::{CONSTANT_SPAN, Range};

    #[test]
    fn crops_stay_inside_the_frame() {
        for (u, v) in [(0.0, 0.0), (0.999, 0.999), (0.5, 0.25)] {
            let c = Crop::random(224, 224, 0.9, u, v);
            assert_eq!(c.side, 202);
            assert!(c.x + c.side <= 224 && c.y + c.side <= 224, "{c:?}");
        }
        assert_eq!(Crop::random(224, 224, 0.9, 0.999, 0.0).x, 22);
        assert_eq!(Crop::centered(224, 224, 0.9), Crop { x: 11, y: 11, side: 202 });
    }

    #[test]
    fn keypoint_cells_move_with_the_crop() {
        let device = Device::flex();
        let image = vec![128u8; 16 * 16 * 3];
        let state = [0.5f32; 7];
        let keypoints = [[8.5f32, 8.5, 1.0], [15.0, 0.0, 0.0]];
        let features = [1.0f32, 2.0, 0.0, 0.0];
        let frame = Frame {
            image: &image,
            width: 16,
            height: 16,
            state: &state,
            keypoints: &keypoints,
            key_features: Some(&features),
            object_poses: &[],
        };
        let range = |n| Range { min: vec![0.0; n], max: vec![1.0; n], constant_span: CONSTANT_SPAN };
        let normalizer = Normalizer { state: range(7), action: range(8) };
        let mut config = PolicyConfig::new(crate::policy::PolicyKind::Glue, crate::policy::ModelSize::Small);
        (config.image_size, config.fusion.grid) = (8, 4);
        let cells = |crop: Crop| -> Vec<i64> {
            let obs = observations(&[frame], &[crop], &config, &normalizer, &device);
            obs.key_patches.unwrap().cells.into_data().convert::<i64>().try_to_vec().unwrap()
        };
        // Uncropped: (8.5, 8.5) of 16 px in a 4x4 grid is cell (2, 2); (15, 0) is (0, 3).
        assert_eq!(cells(Crop { x: 0, y: 0, side: 16 }), vec![10, 3]);
        // Cropped to [4, 12): (4.5, 4.5) of 8 px is (2, 2); (11, -4) clamps to (0, 3).
        assert_eq!(cells(Crop { x: 4, y: 4, side: 8 }), vec![10, 3]);
        // Cropped to [8, 16): (0.5, 0.5) is (0, 0).
        assert_eq!(cells(Crop { x: 8, y: 8, side: 8 }), vec![0, 3]);
        let obs = observations(&[frame, frame], &[Crop { x: 0, y: 0, side: 16 }; 2], &config, &normalizer, &device);
        assert_eq!(obs.images.expect("an image policy").dims(), [2, 3, 8, 8]);
        let s: Vec<f32> = obs.state.into_data().try_to_vec().unwrap();
        assert!(s.iter().all(|v| v.abs() < 1e-6), "0.5 in [0, 1] normalises to 0: {s:?}");
    }

    #[test]
    fn state_rows_append_object_then_keypoint_features() {
        let state = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let poses = [[0.1f32, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0]];
        let keypoints = [[10.0f32, 20.0, 1.0], [30.0, 40.0, 0.0]];
        let mut c = PolicyConfig::new(crate::policy::PolicyKind::Keypoints, crate::policy::ModelSize::Small);
        c.set_n_keypoints(2).unwrap();
        // Only the configured parts: 7 joints (not the gripper width) and the two keypoints; poses ignored.
        let row = state_row(&c, &state, &poses, &keypoints);
        assert_eq!(row, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 20.0, 1.0, 30.0, 40.0, 0.0]);
        assert_eq!(row.len(), c.state_width());
        let mut c = PolicyConfig::new(crate::policy::PolicyKind::State, crate::policy::ModelSize::Small);
        c.set_n_objects(1).unwrap();
        let row = state_row(&c, &state, &poses, &keypoints);
        assert_eq!(row.len(), 7 + OBJECT_FEATURES);
        assert_eq!(row[7..10], [0.1, 0.2, 0.3]);
    }

    #[test]
    #[should_panic(expected = "keypoints: expected [3, 3]")]
    fn state_rows_refuse_another_keypoint_count() {
        let mut c = PolicyConfig::new(crate::policy::PolicyKind::Keypoints, crate::policy::ModelSize::Small);
        c.set_n_keypoints(3).unwrap();
        state_row(&c, &[0.0; 7], &[], &[[0.0, 0.0, 1.0]]);
    }

    #[test]
    fn object_features_are_the_position_and_two_rotation_columns() {
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let features = object_features(&[[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, h, h]]);
        let want = [0.1, 0.2, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0];
        assert_eq!(features.len(), 2 * OBJECT_FEATURES);
        for (got, want) in features.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{features:?}");
        }
        // A quaternion and its negation are one rotation, and give one feature vector.
        assert_eq!(object_features(&[[0.0, 0.0, 0.0, 0.0, 0.0, -h, -h]]), features[OBJECT_FEATURES..].to_vec());
    }
}
