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
//! * **Positional encodings:** learnable for the global patch positions, initialised N(0, 0.02). For the key
//!   patches (so a key patch carries *where* it is, which the paper's 28x28 indexing implies) either learnable, one
//!   per cell of the local grid ([`LocalPos::Learned`]), or the fixed 2-D sine-cosine encoding of the cell
//!   ([`LocalPos::SinCos`], MAE's `get_2d_sincos_pos_embed`): a learned table only learns the cells that
//!   demonstrations visit, the fixed one is smooth in position and generalises to cells never seen in training.
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
    /// The key patches' positional encoding (checkpoints without this field used [`LocalPos::Learned`]).
    #[serde(default)]
    pub local_pos: LocalPos,
}

/// How a key patch's grid cell is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LocalPos {
    /// One learnable vector per cell.
    #[default]
    Learned,
    /// The fixed 2-D sine-cosine encoding of the cell's row and column (no parameters).
    SinCos,
}

/// MAE's 2-D sine-cosine table (`get_2d_sincos_pos_embed` in facebookresearch/mae `util/pos_embed.py`):
/// `[grid * grid, dim]`, row-major cells; the first half of each vector encodes the column, the second the row,
/// each as `[sin(p w_i), cos(p w_i)]` with `w_i = 10000^(-i / (dim / 4))`. `dim` must be a multiple of 4.
pub fn sincos_table(grid: usize, dim: usize) -> Vec<f32> {
    assert!(dim % 4 == 0, "sincos_table: dim {dim} is not a multiple of 4");
    let quarter = dim / 4;
    let mut table = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for p in [col, row] {
                let angles: Vec<f64> = (0..quarter).map(|i| p as f64 * 10000f64.powf(-(i as f64) / quarter as f64)).collect();
                table.extend(angles.iter().map(|a| a.sin() as f32));
                table.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
    }
    table
}

impl FusionConfig {
    /// The paper's sizes: ViT-B/16 global and local encoders, 28x28 grid, `W` of 1031.
    pub fn full() -> Self {
        FusionConfig {
            global_dim: 768,
            global_patches: 196,
            local_dim: 768,
            grid: 28,
            heads: 8,
            out_dim: 256,
            state_dim: 7,
            local_pos: LocalPos::Learned,
        }
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
            local_pos: match self.local_pos {
                LocalPos::Learned => Some(pos.init([self.grid * self.grid, self.local_dim], device)),
                LocalPos::SinCos => None,
            },
            sincos: match self.local_pos {
                LocalPos::Learned => Vec::new(),
                LocalPos::SinCos => sincos_table(self.grid, self.local_dim),
            },
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
    /// `None`: the fixed sine-cosine encoding ([`LocalPos::SinCos`]).
    local_pos: Option<Param<Tensor<2>>>,
    /// The fixed table ([`sincos_table`]) when `local_pos` is `None`, built once (empty otherwise).
    #[module(skip)]
    sincos: Vec<f32>,
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
/// Whether a keypoint `(x, y, visible)` counts as visible: its key patch is kept, an occluded one's is zeroed.
pub fn is_visible(point: &[f32; 3]) -> bool {
    point[2] >= 0.5
}

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
            visible.push(if is_visible(p) { 1.0f32 } else { 0.0 });
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
        let device = key.features.device();
        let table = match &self.local_pos {
            Some(learned) => learned.val(),
            None => Tensor::from_data(TensorData::new(self.sincos.clone(), [self.grid * self.grid, local_dim]), &device),
        };
        let cell_pos = table.select(0, key.cells.clone().reshape([batch * n])).reshape([batch, n, local_dim]);
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
        FusionConfig { global_dim: 32, global_patches: 16, local_dim: 24, grid: 8, heads: 4, out_dim: 16, state_dim: 7, local_pos: LocalPos::Learned }
    }

    #[test]
    fn sincos_table_matches_maes_layout() {
        let (grid, dim) = (4, 8);
        let t = sincos_table(grid, dim);
        assert_eq!(t.len(), grid * grid * dim);
        // Cell (row 0, col 0): sin 0 = 0, cos 0 = 1 in both halves.
        assert_eq!(&t[..dim], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // Cell (row 2, col 1): column half [sin 1, sin 0.01, cos 1, cos 0.01], row half with p = 2.
        let c = &t[(2 * grid + 1) * dim..(2 * grid + 2) * dim];
        let want = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos(), 2f64.sin(), 0.02f64.sin(), 2f64.cos(), 0.02f64.cos()];
        for (a, b) in c.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{c:?} vs {want:?}");
        }
    }

    /// With the fixed encoding the head has no cell table to learn, and a key patch's cell still changes the output.
    #[test]
    fn sincos_fusion_has_no_cell_parameters_and_sees_position() {
        let device = Device::flex();
        let learned = small().init(&device);
        let fixed = FusionConfig { local_pos: LocalPos::SinCos, ..small() }.init(&device);
        assert_eq!(learned.num_params() - fixed.num_params(), 8 * 8 * 24);
        let global = random([1, 16, 32, 1], 7, &device).reshape([1, 16, 32]);
        let grid = random([1, 8, 8, 24], 8, &device).mul_scalar(0.0);
        let out = |kp: &Vec<Vec<[f32; 3]>>| {
            fixed.distill(global.clone(), &select_key_patches(grid.clone(), kp, 64, 64)).into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b) = (out(&vec![vec![[3.0, 5.0, 1.0]]]), out(&vec![vec![[40.0, 20.0, 1.0]]]));
        let diff: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
        assert!(diff > 1e-4, "zero features at two cells gave the same output: position is lost");
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
