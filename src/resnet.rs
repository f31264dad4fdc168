//! The Diffusion Policy baseline's image encoder: a ResNet-18 with GroupNorm, spatial soft-argmax keypoints and
//! a Linear + ReLU head, as LeRobot 0.4.4's `DiffusionRgbEncoder` (`lerobot/policies/diffusion/
//! modeling_diffusion.py`) builds it for `use_group_norm=True` without pretrained backbone weights.
//!
//! Architecture, for a base width `w` (torchvision's ResNet-18: `w = 64`):
//!
//! - stem: Conv2d 7x7 stride 2 padding 3 (no bias) to `w` channels, GroupNorm, ReLU, MaxPool 3x3 stride 2
//!   padding 1;
//! - four stages of two `BasicBlock`s with `w`, `2w`, `4w`, `8w` channels; the first block of stages 2-4 has
//!   stride 2 and a 1x1 stride-2 projection (Conv2d + GroupNorm) on its shortcut. A block is
//!   `relu(gn2(conv2(relu(gn1(conv1(x))))) + shortcut(x))` with bias-free 3x3 convolutions;
//! - torchvision's average pool and classifier are dropped, so the backbone ends at the last stage's
//!   `[B, 8w, H/32, W/32]` feature map (sizes rounded up at each stride-2 step);
//! - `SpatialSoftmax`: a 1x1 Conv2d (with bias) to `K` keypoint maps, a softmax over each map's `h * w`
//!   positions, and the expected `(x, y)` under that distribution on a grid spanning `[-1, 1]` in both axes
//!   (`x` along the width). The `[B, K, 2]` keypoints are flattened to `[B, 2K]`;
//! - `out`: Linear `2K -> 2K` followed by ReLU.
//!
//! Every BatchNorm of torchvision's network is a GroupNorm here with `channels / 16` groups (eps `1e-5`), as
//! LeRobot's `_replace_submodules` swaps them. The BatchNorm variant (`use_group_norm=False`, needed for
//! ImageNet-pretrained weights) is not implemented.
//!
//! LeRobot fixes the keypoint grid to the feature-map size of the configured image size (its `pool.pos_grid`
//! buffer). Here the grid is built from the feature map actually seen, so any input size works; at LeRobot's
//! size the result is the same, and a checkpoint's `pos_grid` is accepted and ignored.
//!
//! Input normalisation: the encoder normalises nothing itself. In LeRobot the policy's preprocessor has
//! already normalised the `[0, 1]` pixels with `VISUAL: MEAN_STD`, i.e. `(x - mean) / (std + 1e-8)` per
//! channel with the training dataset's statistics, and `DiffusionRgbEncoder` optionally resizes
//! (`resize_shape`) and crops (`crop_shape`; random in training, centred in eval) before the backbone. Callers
//! of [`ResNetEncoder::forward`] do all of that themselves.
//!
//! Checkpoint names. LeRobot's encoder keeps torchvision's children in an `nn.Sequential`, so its tensors are
//! named by position; the module fields here carry torchvision's names, and loading renames by these regular
//! expressions (after stripping the caller's prefix, e.g. `diffusion.rgb_encoder.`):
//!
//! | LeRobot `state_dict` key              | here                             |
//! |---------------------------------------|----------------------------------|
//! | `backbone.0.*` / `backbone.1.*`       | `backbone.conv1.*` / `backbone.bn1.*` |
//! | `backbone.{4,5,6,7}.i.*`              | `backbone.layer{1,2,3,4}.i.*`    |
//! | `*.downsample.0.*` / `*.downsample.1.*` | `*.downsample.conv.*` / `*.downsample.bn.*` |
//! | `pool.nets.*`, `out.*`, `conv1`/`bn1`/`conv2`/`bn2` in blocks | same names |
//! | `pool.pos_grid`                       | not loaded (rebuilt per input)   |
//!
//! `burn::store`'s `PyTorchToBurnAdapter` then maps GroupNorm `weight`/`bias` to `gamma`/`beta` and transposes
//! the Linear weight; Conv2d weights have the same `[out, in, kh, kw]` layout in both.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{DType, Device, Tensor, TensorData};
use eyre::{WrapErr, bail, ensure, eyre};
use serde::{Deserialize, Serialize};

/// LeRobot's GroupNorm swap: `channels / CHANNELS_PER_GROUP` groups.
const CHANNELS_PER_GROUP: usize = 16;
/// PyTorch's (and burn's) GroupNorm epsilon, which LeRobot keeps.
const GROUP_NORM_EPS: f64 = 1e-5;
/// Blocks per stage in ResNet-18.
const BLOCKS_PER_STAGE: usize = 2;
/// Stages of the backbone; stage `i` has `base_width << i` channels.
const STAGES: usize = 4;

/// Encoder hyper-parameters, named as in LeRobot's `DiffusionConfig` where they exist there. The default is
/// LeRobot's: torchvision ResNet-18 widths (`base_width` 64), GroupNorm, 32 keypoints, RGB input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResNetEncoderConfig {
    /// Keypoints `K` of the spatial soft-argmax; the feature is `2K` wide.
    pub spatial_softmax_num_keypoints: usize,
    /// Replace BatchNorm with GroupNorm (`channels / 16` groups). Only `true` is implemented: LeRobot
    /// requires it whenever the backbone is not ImageNet-pretrained.
    pub use_group_norm: bool,
    /// Channels of the stem and the first stage; the stages have `base_width` x 1, 2, 4, 8. 64 is
    /// torchvision's ResNet-18; a smaller multiple of 16 (e.g. 16) keeps the layout at a fraction of the cost.
    /// Not a LeRobot option: LeRobot's widths are torchvision's.
    pub base_width: usize,
    /// Channels of the input images.
    pub input_channels: usize,
}

impl Default for ResNetEncoderConfig {
    fn default() -> Self {
        Self { spatial_softmax_num_keypoints: 32, use_group_norm: true, base_width: 64, input_channels: 3 }
    }
}

impl ResNetEncoderConfig {
    /// Width of the encoded feature: two coordinates per keypoint.
    pub fn feature_dim(&self) -> usize {
        2 * self.spatial_softmax_num_keypoints
    }

    /// Channels of the backbone's output feature map.
    pub fn backbone_channels(&self) -> usize {
        self.stage_width(STAGES - 1)
    }

    fn stage_width(&self, stage: usize) -> usize {
        self.base_width << stage
    }

    /// Checks that the configuration describes a buildable encoder.
    pub fn validate(&self) -> eyre::Result<()> {
        ensure!(
            self.use_group_norm,
            "use_group_norm = false (torchvision's BatchNorm backbone) is not implemented; only GroupNorm is"
        );
        ensure!(self.input_channels > 0, "input_channels must be positive");
        ensure!(self.spatial_softmax_num_keypoints > 0, "spatial_softmax_num_keypoints must be positive");
        ensure!(
            self.base_width >= CHANNELS_PER_GROUP,
            "base_width {} leaves no GroupNorm group (channels / {CHANNELS_PER_GROUP} groups); use at least \
             {CHANNELS_PER_GROUP}",
            self.base_width
        );
        for stage in 0..STAGES {
            let channels = self.stage_width(stage);
            ensure!(
                channels % (channels / CHANNELS_PER_GROUP) == 0,
                "base_width {}: {channels} channels do not split into {} GroupNorm groups",
                self.base_width,
                channels / CHANNELS_PER_GROUP
            );
        }
        Ok(())
    }

    /// A freshly initialised encoder: backbone convolutions as torchvision initialises them (Kaiming normal,
    /// fan-out, ReLU gain), GroupNorms at 1/0, the keypoint convolution and the head as PyTorch's defaults.
    /// Parameters are allocated lazily, on first use. Weights are normally loaded with
    /// [`ResNetEncoder::load_lerobot`].
    ///
    /// # Panics
    ///
    /// If [`Self::validate`] fails.
    pub fn init(&self, device: &Device) -> ResNetEncoder {
        if let Err(error) = self.validate() {
            panic!("invalid ResNetEncoderConfig: {error}");
        }
        let width = self.base_width;
        let mut in_channels = width;
        let mut stages = Vec::with_capacity(STAGES);
        for stage in 0..STAGES {
            let channels = self.stage_width(stage);
            let stride = if stage == 0 { 1 } else { 2 };
            let blocks = (0..BLOCKS_PER_STAGE)
                .map(|block| {
                    let block = if block == 0 {
                        BasicBlock::new(in_channels, channels, stride, device)
                    } else {
                        BasicBlock::new(channels, channels, 1, device)
                    };
                    in_channels = channels;
                    block
                })
                .collect::<Vec<_>>();
            stages.push(blocks);
        }
        let [layer1, layer2, layer3, layer4] = <[Vec<BasicBlock>; STAGES]>::try_from(stages).expect("four stages");
        let keypoints = self.spatial_softmax_num_keypoints;
        ResNetEncoder {
            backbone: Backbone {
                conv1: backbone_conv(self.input_channels, width, 7, 2, device),
                bn1: group_norm(width, device),
                maxpool: MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(),
                layer1,
                layer2,
                layer3,
                layer4,
            },
            pool: SpatialSoftmax {
                nets: Conv2dConfig::new([self.backbone_channels(), keypoints], [1, 1]).init(device),
            },
            out: LinearConfig::new(self.feature_dim(), self.feature_dim()).init(device),
        }
    }

    /// Every tensor of LeRobot's encoder `state_dict` that this configuration loads, with its PyTorch shape, in
    /// `state_dict` order and without the policy's prefix (`backbone.0.weight`, ..., `out.bias`). The
    /// `pool.pos_grid` buffer is not listed: it is accepted and ignored.
    pub fn lerobot_tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        let conv = |name: String, c_in: usize, c_out: usize, k: usize, shapes: &mut Vec<_>| {
            shapes.push((format!("{name}.weight"), vec![c_out, c_in, k, k]));
        };
        let norm = |name: String, channels: usize, shapes: &mut Vec<(String, Vec<usize>)>| {
            shapes.push((format!("{name}.weight"), vec![channels]));
            shapes.push((format!("{name}.bias"), vec![channels]));
        };
        let width = self.base_width;
        conv("backbone.0".into(), self.input_channels, width, 7, &mut shapes);
        norm("backbone.1".into(), width, &mut shapes);
        let mut in_channels = width;
        for stage in 0..STAGES {
            let channels = self.stage_width(stage);
            for block in 0..BLOCKS_PER_STAGE {
                // The Sequential holds conv1, bn1, relu, maxpool at 0-3, then the stages at 4-7.
                let at = format!("backbone.{}.{block}", stage + 4);
                conv(format!("{at}.conv1"), in_channels, channels, 3, &mut shapes);
                norm(format!("{at}.bn1"), channels, &mut shapes);
                conv(format!("{at}.conv2"), channels, channels, 3, &mut shapes);
                norm(format!("{at}.bn2"), channels, &mut shapes);
                if block == 0 && stage > 0 {
                    conv(format!("{at}.downsample.0"), in_channels, channels, 1, &mut shapes);
                    norm(format!("{at}.downsample.1"), channels, &mut shapes);
                }
                in_channels = channels;
            }
        }
        let keypoints = self.spatial_softmax_num_keypoints;
        shapes.push(("pool.nets.weight".into(), vec![keypoints, self.backbone_channels(), 1, 1]));
        shapes.push(("pool.nets.bias".into(), vec![keypoints]));
        shapes.push(("out.weight".into(), vec![self.feature_dim(), self.feature_dim()]));
        shapes.push(("out.bias".into(), vec![self.feature_dim()]));
        shapes
    }
}

/// A bias-free backbone convolution with padding `k / 2`, initialised like torchvision's ResNet
/// (`kaiming_normal_(mode="fan_out", nonlinearity="relu")`).
fn backbone_conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true })
        .init(device)
}

/// LeRobot's BatchNorm replacement: `channels / 16` groups, affine, eps 1e-5.
fn group_norm(channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(channels / CHANNELS_PER_GROUP, channels).with_epsilon(GROUP_NORM_EPS).init(device)
}

/// The image encoder: [`Backbone`] -> [`SpatialSoftmax`] -> Linear -> ReLU. Build it with
/// [`ResNetEncoderConfig::init`] or [`ResNetEncoder::load_lerobot`].
#[derive(Module, Debug)]
pub struct ResNetEncoder {
    backbone: Backbone,
    pool: SpatialSoftmax,
    out: Linear,
}

impl ResNetEncoder {
    /// Encodes normalised images `[B, C, H, W]` (see the module docs for LeRobot's normalisation) into
    /// non-negative features `[B, 2K]`. Any `H, W` work; the keypoint grid follows the backbone's output size
    /// (`H / 32` by `W / 32`, rounded up).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let keypoints = self.pool.forward(self.backbone.forward(images));
        relu(self.out.forward(keypoints))
    }

    /// Loads the encoder from a safetensors file with LeRobot's tensor names under `prefix`: for a
    /// `DiffusionPolicy`'s `model.safetensors` with one shared encoder, `"diffusion.rgb_encoder."` (with
    /// `use_separate_rgb_encoder_per_camera`, `"diffusion.rgb_encoder.<camera index>."`); `""` for a bare
    /// `DiffusionRgbEncoder` `state_dict`. Tensors outside the prefix are ignored, so a whole policy
    /// checkpoint loads. Like PyTorch's strict `load_state_dict`, a missing tensor, a tensor of another shape
    /// (both shapes are named, in PyTorch's layout) and an unknown tensor under the prefix are errors.
    /// float16/bfloat16/float64 checkpoints are converted to float32.
    pub fn load_lerobot(
        config: &ResNetEncoderConfig,
        path: &Path,
        prefix: &str,
        device: &Device,
    ) -> eyre::Result<Self> {
        config.validate()?;
        if !path.is_file() {
            bail!("ResNet encoder checkpoint not found: {}", path.display());
        }
        let context = || format!("cannot load the ResNet encoder from {} (prefix `{prefix}`)", path.display());
        check_tensors(config, path, prefix).wrap_err_with(context)?;
        let mut store = lerobot_store(path, prefix);
        let mut model = config.init(device);
        model.load_from(&mut store).map_err(|error| eyre!("{error}")).wrap_err_with(context)?;
        Ok(model)
    }
}

/// The store that presents LeRobot's names under `prefix` as this module's paths (see the module docs).
fn lerobot_store(path: &Path, prefix: &str) -> SafetensorsStore {
    let mut store = SafetensorsStore::from_file(path).with_key_remapping(format!("^{}", escape_regex(prefix)), "");
    for (from, to) in [
        (r"^backbone\.0\.", "backbone.conv1."),
        (r"^backbone\.1\.", "backbone.bn1."),
        (r"^backbone\.4\.", "backbone.layer1."),
        (r"^backbone\.5\.", "backbone.layer2."),
        (r"^backbone\.6\.", "backbone.layer3."),
        (r"^backbone\.7\.", "backbone.layer4."),
        (r"\.downsample\.0\.", ".downsample.conv."),
        (r"\.downsample\.1\.", ".downsample.bn."),
    ] {
        store = store.with_key_remapping(from, to);
    }
    store.with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
}

/// `text` with the regular-expression metacharacters escaped.
fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Checks the file's tensors under `prefix` against [`ResNetEncoderConfig::lerobot_tensor_shapes`] before
/// anything is loaded, so errors name LeRobot's tensor and both shapes in PyTorch's layout.
fn check_tensors(config: &ResNetEncoderConfig, path: &Path, prefix: &str) -> eyre::Result<()> {
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store.get_all_tensors().map_err(|error| eyre!("{error}"))?;
    let expected = config.lerobot_tensor_shapes();
    for (name, shape) in &expected {
        let full = format!("{prefix}{name}");
        let Some(found) = tensors.get(&full) else {
            bail!("tensor `{full}` is missing (the model expects shape {shape:?})");
        };
        if found.shape.as_slice() != shape.as_slice() {
            bail!(
                "tensor `{full}` has shape {:?} in the checkpoint but the model expects {shape:?}",
                found.shape.as_slice()
            );
        }
    }
    let known: BTreeSet<&str> =
        expected.iter().map(|(name, _)| name.as_str()).chain(std::iter::once("pool.pos_grid")).collect();
    let unexpected: Vec<&String> = tensors
        .keys()
        .filter(|name| name.strip_prefix(prefix).is_some_and(|rest| !known.contains(rest)))
        .collect();
    if !unexpected.is_empty() {
        bail!("unexpected tensors under `{prefix}`: {unexpected:?}");
    }
    Ok(())
}

/// torchvision's ResNet-18 trunk with GroupNorm, up to `layer4` (field names are torchvision's).
#[derive(Module, Debug)]
struct Backbone {
    conv1: Conv2d,
    /// A GroupNorm, under torchvision's BatchNorm name.
    bn1: GroupNorm,
    maxpool: MaxPool2d,
    layer1: Vec<BasicBlock>,
    layer2: Vec<BasicBlock>,
    layer3: Vec<BasicBlock>,
    layer4: Vec<BasicBlock>,
}

impl Backbone {
    fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        // The max pool pads with -inf in PyTorch; after the ReLU every value is >= 0, so any padding value at
        // or below 0 gives the same result.
        let mut x = self.maxpool.forward(relu(self.bn1.forward(self.conv1.forward(images))));
        for block in self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4) {
            x = block.forward(x);
        }
        x
    }
}

/// torchvision's `BasicBlock` with GroupNorm (field names are torchvision's).
#[derive(Module, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: GroupNorm,
    conv2: Conv2d,
    bn2: GroupNorm,
    /// Projection of the shortcut when the block changes resolution or width.
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: backbone_conv(c_in, c_out, 1, stride, device),
            bn: group_norm(c_out, device),
        });
        Self {
            conv1: backbone_conv(c_in, c_out, 3, stride, device),
            bn1: group_norm(c_out, device),
            conv2: backbone_conv(c_out, c_out, 3, 1, device),
            bn2: group_norm(c_out, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(downsample) => downsample.bn.forward(downsample.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = relu(self.bn1.forward(self.conv1.forward(x)));
        let y = self.bn2.forward(self.conv2.forward(y));
        relu(y + shortcut)
    }
}

/// torchvision's `downsample` Sequential: 1x1 strided Conv2d, then the norm.
#[derive(Module, Debug)]
struct Downsample {
    conv: Conv2d,
    bn: GroupNorm,
}

/// LeRobot's `SpatialSoftmax` with `num_kp` keypoints: 1x1 convolution to `K` maps, softmax over positions,
/// expected `(x, y)` coordinates.
#[derive(Module, Debug)]
struct SpatialSoftmax {
    nets: Conv2d,
}

impl SpatialSoftmax {
    /// `[B, C, h, w]` feature maps to `[B, 2K]`: keypoint `k`'s `x` at `2k`, its `y` at `2k + 1`.
    fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        let maps = self.nets.forward(features);
        let [batch, keypoints, height, width] = maps.dims();
        let attention = softmax(maps.reshape([batch * keypoints, height * width]), 1);
        let grid = keypoint_grid(height, width, &attention.device());
        attention.matmul(grid).reshape([batch, keypoints * 2])
    }
}

/// `[h * w, 2]` coordinates of the feature-map positions in row-major order: `(x, y)` with `x` running over
/// `[-1, 1]` along the width and `y` along the height. The values are computed as `numpy.linspace` does (in
/// float64, last point exactly 1) and rounded to float32, like LeRobot's `pos_grid`; a side of one position
/// sits at -1.
fn keypoint_grid(height: usize, width: usize, device: &Device) -> Tensor<2> {
    let (xs, ys) = (linspace(width), linspace(height));
    let mut grid = Vec::with_capacity(height * width * 2);
    for y in &ys {
        for x in &xs {
            grid.push(*x);
            grid.push(*y);
        }
    }
    Tensor::from_data(TensorData::new(grid, [height * width, 2]), device)
}

/// `n` evenly spaced points from -1 to 1, as float32.
fn linspace(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0 / (n - 1) as f64;
    (0..n).map(|i| if i + 1 == n { 1.0 } else { (i as f64 * step - 1.0) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    fn small() -> ResNetEncoderConfig {
        ResNetEncoderConfig { base_width: 16, spatial_softmax_num_keypoints: 8, ..Default::default() }
    }

    #[test]
    fn default_is_lerobots_and_serde_round_trips() {
        let config = ResNetEncoderConfig::default();
        assert_eq!(config.feature_dim(), 64);
        assert_eq!(config.backbone_channels(), 512);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ResNetEncoderConfig>(&json).unwrap(), config);
        let partial: ResNetEncoderConfig = serde_json::from_str(r#"{"base_width": 16}"#).unwrap();
        assert_eq!(partial, ResNetEncoderConfig { base_width: 16, ..config });
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let batch_norm = ResNetEncoderConfig { use_group_norm: false, ..Default::default() };
        assert!(format!("{}", batch_norm.validate().unwrap_err()).contains("not implemented"));
        let narrow = ResNetEncoderConfig { base_width: 8, ..Default::default() };
        assert!(narrow.validate().is_err());
        // 48 channels -> 3 groups, 96 -> 6, 192 -> 12, 384 -> 24: all divide.
        assert!(ResNetEncoderConfig { base_width: 48, ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn tensor_table_matches_the_module() {
        for config in [small(), ResNetEncoderConfig::default()] {
            let table: usize = config.lerobot_tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(config.init(&device()).num_params(), table);
        }
        assert_eq!(ResNetEncoderConfig::default().lerobot_tensor_shapes().len(), 64);
    }

    #[test]
    fn output_shape_for_any_input_size() {
        let config = small();
        let model = config.init(&device());
        for (h, w) in [(64, 96), (33, 47), (20, 20)] {
            let images = Tensor::<4>::random([2, 3, h, w], burn::tensor::Distribution::Normal(0.0, 1.0), &device());
            let features = model.forward(images);
            assert_eq!(features.dims(), [2, config.feature_dim()]);
            let values = features.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }

    #[test]
    fn keypoint_grid_is_numpys_meshgrid() {
        assert_eq!(linspace(1), [-1.0]);
        assert_eq!(linspace(2), [-1.0, 1.0]);
        assert_eq!(linspace(5), [-1.0, -0.5, 0.0, 0.5, 1.0]);
        let grid = keypoint_grid(2, 3, &device()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(grid, [-1.0, -1.0, 0.0, -1.0, 1.0, -1.0, -1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn spatial_softmax_finds_a_peak() {
        // One keypoint whose map is the input channel itself: a sharp peak at row 1, column 2 of a 3x4 map
        // lands at x = linspace(4)[2] = 1/3, y = linspace(3)[1] = 0.
        let mut pool = SpatialSoftmax { nets: Conv2dConfig::new([1, 1], [1, 1]).init(&device()) };
        pool.nets.weight = burn::module::Param::from_tensor(Tensor::ones([1, 1, 1, 1], &device()));
        pool.nets.bias = Some(burn::module::Param::from_tensor(Tensor::zeros([1], &device())));
        let mut map = vec![0.0f32; 12];
        map[4 + 2] = 50.0;
        let features = Tensor::<4>::from_data(TensorData::new(map, [1, 1, 3, 4]), &device());
        let xy = pool.forward(features).into_data().try_to_vec::<f32>().unwrap();
        assert!((xy[0] - 1.0 / 3.0).abs() < 1e-5 && xy[1].abs() < 1e-5, "{xy:?}");
    }
}
