//! Global-local unified encoding (paper sec. III-C, eq. 3).
//!
//! Inputs are the learnable global ViT's tokens of the current image (CLS + patch tokens, `F_global`), the frozen
//! local ViT's feature grid of the image pre-segmented into 2x2 sub-images (`M_local`, 28x28 cells at full size),
//! the tracked keypoints `(x, y, visible)` and the robot's joint state. The encoder
//!
//! 1. selects the key patches: the cells of `M_local` holding each keypoint, with invisible ones zeroed
//!    (`F_patch2`, `[N, C_local]`);
//! 2. adds positional encodings to both token sets;
//! 3. lets the global patch tokens query the key patches through multi-head cross-attention
//!    (`MHA(F_patch1, F_patch2, F_patch2)`), projects to 256 and mean-pools: `F' = Pool(Proj(MHA(..)))`;
//! 4. concatenates `[F_CLS, F', S]` into the condition `W` (768 + 256 + 7 = 1031 at full size).
//!
//! Choices the paper leaves open, made here:
//! * **Heads:** 8 by default (`heads`); `d_head = global_dim / heads`.
//! * **Positional encodings:** learnable, one per global patch position and one per cell of the local grid
//!   (so a key patch carries *where* it is, which the paper's 28x28 indexing implies), initialised N(0, 0.02).
//! * **Occlusion:** an invisible key patch's *feature* is zeroed as the paper says, but its positional encoding is
//!   kept, and no attention mask is used: the policy sees "something was here, unseen". Every key patch is
//!   attended to, visible or not.
//! * Cross-attention dropout is 0 (burn's default of 0.1 would make inference stochastic).

use burn::module::{Initializer, Module, Param};
use burn::nn::attention::{CrossAttention, CrossAttentionConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Sizes of the fusion head; `full()` are the paper's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FusionConfig {
    /// Width of the learnable global ViT's tokens (768 for ViT-B/16).
    pub global_dim: usize,
    /// Number of global patch tokens (196 = 14x14 for ViT-B/16 at 224).
    pub global_patches: usize,
    /// Width of the frozen local ViT's features (768 for ViT-B/16).
    pub local_dim: usize,
    /// Side of the local feature grid (28 = 2 sub-images x 14 patches).
    pub grid: usize,
    /// Cross-attention heads.
    pub heads: usize,
    /// Width of the distilled local feature `F'` (256 in the paper).
    pub out_dim: usize,
    /// Robot state size (7 joint angles).
    pub state_dim: usize,
}

impl FusionConfig {
    /// The paper's sizes: ViT-B/16 global and local encoders, 28x28 grid, `W` of 1031.
    pub fn full() -> Self {
        FusionConfig { global_dim: 768, global_patches: 196, local_dim: 768, grid: 28, heads: 8, out_dim: 256, state_dim: 7 }
    }

    /// Size of the condition vector `W`.
    pub fn condition_dim(&self) -> usize {
        self.global_dim + self.out_dim + self.state_dim
    }

    pub fn init(&self, device: &Device) -> Fusion {
        assert!(self.global_dim % self.heads == 0, "fusion: global_dim {} is not divisible by heads {}", self.global_dim, self.heads);
        let pos = Initializer::Normal { mean: 0.0, std: 0.02 };
        Fusion {
            global_pos: pos.init([self.global_patches, self.global_dim], device),
            local_pos: pos.init([self.grid * self.grid, self.local_dim], device),
            attention: CrossAttentionConfig::new(self.global_dim, self.local_dim, self.heads, self.heads, self.global_dim / self.heads)
                .with_dropout(0.0)
                .init(device),
            proj: LinearConfig::new(self.global_dim, self.out_dim).init(device),
            grid: self.grid,
        }
    }
}

/// The fusion head of eq. 3.
#[derive(Module, Debug)]
pub struct Fusion {
    global_pos: Param<Tensor<2>>,
    local_pos: Param<Tensor<2>>,
    attention: CrossAttention,
    proj: Linear,
    grid: usize,
}

/// Key patches picked from the local grid: features (invisible ones zeroed) and their cell indices.
#[derive(Clone, Debug)]
pub struct KeyPatches {
    /// `[B, N, C_local]`.
    pub features: Tensor<3>,
    /// `[B, N]` row-major cell index `row * grid + col`.
    pub cells: Tensor<2, Int>,
}

/// The grid cell of pixel `(x, y)` in a `width` x `height` image cut into `grid` x `grid` cells (clamped inside).
pub fn cell_of(x: f32, y: f32, width: u32, height: u32, grid: usize) -> usize {
    let col = ((x / width as f32) * grid as f32).floor().clamp(0.0, grid as f32 - 1.0) as usize;
    let row = ((y / height as f32) * grid as f32).floor().clamp(0.0, grid as f32 - 1.0) as usize;
    row * grid + col
}

/// Selects the key patches of eq. 3: for each keypoint `(x, y, visible)` (pixels of a `width` x `height` image),
/// the feature of its cell in `local_grid` (`[B, grid, grid, C]`), zeroed when the keypoint is not visible.
/// `keypoints` is `[B][N]`; every batch item must have the same N.
pub fn select_key_patches(local_grid: Tensor<4>, keypoints: &[Vec<[f32; 3]>], width: u32, height: u32) -> KeyPatches {
    let [batch, grid, grid_w, channels] = local_grid.dims();
    assert_eq!(grid, grid_w, "local_grid: expected a square [B, grid, grid, C] map, got {:?}", local_grid.dims());
    assert_eq!(keypoints.len(), batch, "keypoints: expected {batch} batch items, got {}", keypoints.len());
    let n = keypoints.first().map_or(0, Vec::len);
    assert!(keypoints.iter().all(|k| k.len() == n), "keypoints: every batch item must hold the same number of points");
    let device = local_grid.device();
    let mut cells = Vec::with_capacity(batch * n);
    let mut visible = Vec::with_capacity(batch * n);
    for (b, points) in keypoints.iter().enumerate() {
        for p in points {
            cells.push((b * grid * grid + cell_of(p[0], p[1], width, height, grid)) as i64);
            visible.push(if p[2] >= 0.5 { 1.0f32 } else { 0.0 });
        }
    }
    let flat = local_grid.reshape([batch * grid * grid, channels]);
    let index = Tensor::<1, Int>::from_data(TensorData::new(cells.clone(), [batch * n]), &device);
    let mask = Tensor::<1>::from_data(TensorData::new(visible, [batch * n]), &device);
    let features = flat.select(0, index).mul(mask.unsqueeze_dim(1)).reshape([batch, n, channels]);
    let local: Vec<i64> = cells.iter().enumerate().map(|(i, c)| c - ((i / n.max(1)) * grid * grid) as i64).collect();
    let cells = Tensor::<2, Int>::from_data(TensorData::new(local, [batch, n]), &device);
    KeyPatches { features, cells }
}

impl Fusion {
    /// `F' = Pool(Proj(MHA(F_patch1 + P_global, F_patch2 + P_local)))`: `[B, out_dim]`.
    /// `global_patches` is `[B, global_patches, global_dim]` (the patch tokens, CLS excluded).
    pub fn distill(&self, global_patches: Tensor<3>, key: &KeyPatches) -> Tensor<2> {
        let [batch, n, local_dim] = key.features.dims();
        let query = global_patches + self.global_pos.val().unsqueeze_dim(0);
        let cell_pos = self.local_pos.val().select(0, key.cells.clone().reshape([batch * n])).reshape([batch, n, local_dim]);
        let context = key.features.clone() + cell_pos;
        let attended = self.attention.forward(query, context, None);
        self.proj.forward(attended).mean_dim(1).squeeze_dim(1)
    }

    /// The condition `W = [F_CLS, F', S]` (`[B, global_dim + out_dim + state_dim]`).
    pub fn condition(&self, cls: Tensor<2>, global_patches: Tensor<3>, key: &KeyPatches, state: Tensor<2>) -> Tensor<2> {
        let distilled = self.distill(global_patches, key);
        Tensor::cat(vec![cls, distilled, state], 1)
    }

    /// Side of the local grid this head was built for.
    pub fn grid(&self) -> usize {
        self.grid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FusionConfig {
        FusionConfig { global_dim: 32, global_patches: 16, local_dim: 24, grid: 8, heads: 4, out_dim: 16, state_dim: 7 }
    }

    fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| (((i as u64 + 1) * (seed * 2 + 1) * 2654435761) % 1000) as f32 / 500.0 - 1.0).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn condition_has_the_papers_layout_and_size() {
        let device = Device::flex();
        let cfg = FusionConfig::full();
        assert_eq!(cfg.condition_dim(), 1031);
        let cfg = small();
        let fusion = cfg.init(&device);
        let grid = random([2, 8, 8, 24], 1, &device);
        let kp = vec![vec![[3.0, 5.0, 1.0], [60.0, 61.0, 0.0], [30.0, 10.0, 1.0]]; 2];
        let key = select_key_patches(grid, &kp, 64, 64);
        let global = random([2, 16, 32, 1], 2, &device).reshape([2, 16, 32]);
        let cls: Tensor<2> = random([2, 32, 1, 1], 3, &device).reshape([2, 32]);
        let state: Tensor<2> = random([2, 7, 1, 1], 4, &device).reshape([2, 7]);
        let w = fusion.condition(cls.clone(), global, &key, state.clone());
        assert_eq!(w.dims(), [2, cfg.condition_dim()]);
        let head: Vec<f32> = w.clone().narrow(1, 0, 32).into_data().try_to_vec().unwrap();
        assert_eq!(head, cls.into_data().try_to_vec::<f32>().unwrap(), "W starts with the CLS token");
        let tail: Vec<f32> = w.narrow(1, 48, 7).into_data().try_to_vec().unwrap();
        assert_eq!(tail, state.into_data().try_to_vec::<f32>().unwrap(), "W ends with the robot state");
    }

    #[test]
    fn key_patches_are_the_keypoint_cells_and_invisible_ones_are_zero() {
        let device = Device::flex();
        let grid = random([1, 8, 8, 24], 5, &device);
        let kp = vec![vec![[3.0, 5.0, 1.0], [63.9, 0.0, 1.0], [30.0, 40.0, 0.0]]];
        let key = select_key_patches(grid.clone(), &kp, 64, 64);
        assert_eq!(key.features.dims(), [1, 3, 24]);
        assert_eq!(key.cells.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), vec![0, 7, 5 * 8 + 3]);
        let cell = |r: usize, c: usize| grid.clone().narrow(1, r, 1).narrow(2, c, 1).reshape([24]).into_data().try_to_vec::<f32>().unwrap();
        let got = |i: usize| key.features.clone().narrow(1, i, 1).reshape([24]).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got(0), cell(0, 0));
        assert_eq!(got(1), cell(0, 7));
        assert!(got(2).iter().all(|v| *v == 0.0), "an invisible key patch must be zero");
        assert!(cell(5, 3).iter().any(|v| *v != 0.0));
    }

    /// Every visible key patch influences the output (nothing is masked away), and an invisible one's content does
    /// not (it is zeroed), while its position still counts.
    #[test]
    fn attention_sees_every_visible_key_patch_and_no_hidden_content() {
        let device = Device::flex();
        let fusion = small().init(&device);
        let global = random([1, 16, 32, 1], 7, &device).reshape([1, 16, 32]);
        let kp = vec![vec![[3.0, 5.0, 1.0], [40.0, 20.0, 1.0], [30.0, 40.0, 0.0]]];
        let out = |grid: Tensor<4>, kp: &Vec<Vec<[f32; 3]>>| {
            fusion.distill(global.clone(), &select_key_patches(grid, kp, 64, 64)).into_data().try_to_vec::<f32>().unwrap()
        };
        let base_grid = random([1, 8, 8, 24], 8, &device);
        let base = out(base_grid.clone(), &kp);
        for (row, col, hidden) in [(0, 0, false), (2, 5, false), (5, 3, true)] {
            let bump = Tensor::<4>::zeros([1, 8, 8, 24], &device).slice_assign([0..1, row..row + 1, col..col + 1, 0..24], Tensor::ones([1, 1, 1, 24], &device));
            let changed = out(base_grid.clone() + bump, &kp);
            let diff: f32 = base.iter().zip(&changed).map(|(a, b)| (a - b).abs()).sum();
            if hidden {
                assert_eq!(diff, 0.0, "the content of an invisible key patch leaked into the output");
            } else {
                assert!(diff > 1e-4, "changing the visible key patch at ({row}, {col}) did not change the output");
            }
        }
        let mut moved = kp.clone();
        moved[0][2] = [60.0, 60.0, 0.0];
        let diff: f32 = base.iter().zip(&out(base_grid, &moved)).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff > 1e-4, "an invisible key patch's position must still count");
    }
}
