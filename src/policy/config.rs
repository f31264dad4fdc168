//! Policy configurations: which observation encoder, the horizons, and every sub-model's configuration, in one
//! serialisable struct stored as the checkpoint's `config.json`.
//!
//! Two sizes share all code: `full` is the paper's (sec. III-C, IV): ViT-B/16 global and local encoders at 224,
//! a 28x28 key-patch grid, a 1031-wide condition per observation step, Diffusion Policy's U-Net
//! `down_dims` [256, 512, 1024]. `small` is sized for a 2-core CPU: 112-pixel input to a 4-layer, 128-wide global
//! ViT (8x8 patches of 14 px), the self-supervised 96-wide local ViT of `glue pretrain` (still a 28x28 grid),
//! a 64-wide distilled feature, and a U-Net with `down_dims` [64, 128, 256].

use serde::{Deserialize, Serialize};

use crate::diffusion::DdpmSchedulerConfig;
use crate::fusion::FusionConfig;
use crate::resnet::ResNetEncoderConfig;
use crate::unet::ConditionalUnet1dConfig;
use crate::vit::{ClipVisionConfig, HiddenAct};

/// Values per task object in the privileged state: position (3) and the first two columns of its rotation matrix
/// (6; the continuous rotation representation of Zhou et al., CVPR 2019, which quaternions' sign flip is not).
pub const OBJECT_FEATURES: usize = 9;

/// Values per tracked keypoint whose coordinates join the state: its `(x, y)` in frame pixels and its visibility.
pub const KEYPOINT_FEATURES: usize = 3;

/// Which observation encoder conditions the U-Net.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// GLUE: global CLS + key-patch cross-attention + state (eq. 3).
    Glue,
    /// The paper's ablation: global CLS + state only.
    GlueS,
    /// Diffusion Policy: ResNet-18 (GroupNorm) + spatial softmax + state.
    Dp,
    /// A diagnostic upper bound, not a visuomotor policy: no camera; the U-Net is conditioned on the robot state and
    /// the task objects' true poses from the simulator (Diffusion Policy's low-dimensional variant). What it
    /// cannot learn from the demonstrations, no image encoder will.
    State,
    /// A diagnostic, not the paper's: no camera; the U-Net is conditioned on the robot state and the tracked
    /// keypoints' image coordinates and visibility, as the perception pipeline (grounding, K-means, tracker) gives
    /// them. Between [`PolicyKind::State`] (true poses) and GLUE (the keypoints only as grid cells of key patches),
    /// it measures what the tracked points themselves tell about where the objects are.
    Keypoints,
}

impl PolicyKind {
    /// The CLI / file name of the policy.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Glue => "glue",
            PolicyKind::GlueS => "glue-s",
            PolicyKind::Dp => "dp",
            PolicyKind::State => "state",
            PolicyKind::Keypoints => "keypoints",
        }
    }

    /// Whether the policy needs keypoint tracks and a local encoder.
    pub fn uses_key_patches(self) -> bool {
        self == PolicyKind::Glue
    }

    /// Whether the policy needs keypoint tracks (GLUE's key patches, or their coordinates).
    pub fn uses_keypoints(self) -> bool {
        matches!(self, PolicyKind::Glue | PolicyKind::Keypoints)
    }

    /// Whether the tracked keypoints' coordinates always join the state (the keypoint-coordinate policy).
    pub fn uses_keypoint_coords(self) -> bool {
        self == PolicyKind::Keypoints
    }

    /// Whether the tracked keypoints' coordinates can join the state: always for the keypoint-coordinate policy, on
    /// request for the image policies (`glue train --keypoint-coords`: GLUE, and GLUE-S and DP to compare with it);
    /// not for the privileged-state diagnostic, which reads the true poses instead.
    pub fn accepts_keypoint_coords(self) -> bool {
        self != PolicyKind::State
    }

    /// Whether the policy sees the camera image.
    pub fn uses_images(self) -> bool {
        !matches!(self, PolicyKind::State | PolicyKind::Keypoints)
    }

    /// Whether the policy reads the simulator's object poses (privileged state).
    pub fn uses_object_poses(self) -> bool {
        self == PolicyKind::State
    }
}

/// The two model sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSize {
    /// The paper's sizes (GPU).
    Full,
    /// A 2-core CPU configuration with the same structure.
    Small,
}

/// Everything that shapes a policy network and its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub policy: PolicyKind,
    pub size: ModelSize,
    /// Observation steps `T_o` feeding one prediction (Diffusion Policy: 2).
    pub n_obs_steps: usize,
    /// Prediction horizon `T_p`: actions per chunk.
    pub horizon: usize,
    /// Action horizon `T_a`: actions executed per chunk, starting at the last observation step.
    pub n_action_steps: usize,
    /// Robot state entries fed to the policy: the first `state_dim` of [`crate::msg::RobotState::NAMES`] (7 joints).
    pub state_dim: usize,
    /// Task objects whose poses join the state ([`PolicyKind::State`]; 0 for the image policies), each as
    /// [`OBJECT_FEATURES`] values ([`crate::policy::observation::object_features`]).
    #[serde(default)]
    pub n_objects: usize,
    /// Tracked keypoints whose coordinates join the state ([`PolicyKind::Keypoints`]; the image policies with
    /// `--keypoint-coords`, in GLUE extending eq. 3's `S`; 0 otherwise), each as [`KEYPOINT_FEATURES`] values.
    #[serde(default)]
    pub n_keypoints: usize,
    /// Action width ([`crate::msg::Action::to_array`]: position, quaternion, gripper).
    pub action_dim: usize,
    /// Side of the square image the global encoder sees (the crop is resized to it).
    pub image_size: usize,
    /// Side of the random training crop as a fraction of the frame; inference takes the centred crop.
    pub crop_ratio: f32,
    /// The learnable global ViT (GLUE, GLUE-S).
    pub global_vit: ClipVisionConfig,
    /// The fusion head (GLUE); `local_dim` and `grid` must match the local encoder.
    pub fusion: FusionConfig,
    /// Sub-images per side fed to the frozen local encoder (the paper's 2x2).
    pub local_split: usize,
    /// The Diffusion Policy image encoder (DP).
    pub resnet: ResNetEncoderConfig,
    /// The noise-prediction U-Net; `global_cond_dim` is `n_obs_steps` x the per-step condition width.
    pub unet: ConditionalUnet1dConfig,
    /// DDPM training schedule (squaredcos_cap_v2, 100 steps, epsilon); DDIM sampling uses the same betas.
    pub noise_scheduler: DdpmSchedulerConfig,
    /// DDIM steps at inference.
    pub num_inference_steps: usize,
}

impl PolicyConfig {
    /// The configuration of `policy` at `size`.
    pub fn new(policy: PolicyKind, size: ModelSize) -> Self {
        let (global_vit, fusion, resnet_width, down_dims, step_embed, image_size) = match size {
            ModelSize::Full => {
                (ClipVisionConfig::vit_b16(), FusionConfig::full(), 64, vec![256, 512, 1024], 128, 224)
            }
            ModelSize::Small => {
                let vit = ClipVisionConfig {
                    hidden_size: 128,
                    intermediate_size: 512,
                    num_hidden_layers: 4,
                    num_attention_heads: 4,
                    image_size: 112,
                    patch_size: 14,
                    hidden_act: HiddenAct::Gelu,
                    ..ClipVisionConfig::default()
                };
                let fusion = FusionConfig {
                    global_dim: 128,
                    global_patches: 64,
                    local_dim: 96,
                    grid: 28,
                    heads: 4,
                    out_dim: 64,
                    state_dim: 7,
                    local_pos: crate::fusion::LocalPos::Learned,
                };
                (vit, fusion, 16, vec![64, 128, 256], 64, 112)
            }
        };
        let resnet = ResNetEncoderConfig { base_width: resnet_width, ..ResNetEncoderConfig::default() };
        let mut config = Self {
            policy,
            size,
            n_obs_steps: 2,
            horizon: 16,
            n_action_steps: 8,
            state_dim: 7,
            n_objects: 0,
            n_keypoints: 0,
            action_dim: 8,
            image_size,
            crop_ratio: 0.9,
            global_vit,
            fusion,
            local_split: 2,
            resnet,
            unet: ConditionalUnet1dConfig { diffusion_step_embed_dim: step_embed, down_dims, ..ConditionalUnet1dConfig::new(8, 0) },
            noise_scheduler: DdpmSchedulerConfig::default(),
            num_inference_steps: 10,
        };
        config.unet.global_cond_dim = config.n_obs_steps * config.step_dim();
        config
    }

    /// Feeds the first `n` entries of [`crate::msg::RobotState::NAMES`] to the policy (`glue train --state-dim`):
    /// 7 is the paper's joint state (sec. III-C, `S ∈ R^7`), 8 adds the gripper width, which tells a missed grasp
    /// from a held object. Keeps the fusion and the U-Net's condition width in step.
    pub fn set_state_dim(&mut self, n: usize) -> eyre::Result<()> {
        let max = crate::msg::RobotState::NAMES.len();
        eyre::ensure!(
            (1..=max).contains(&n),
            "--state-dim: expected 1..={max} robot-state entries (7: the joints, 8: the joints and the gripper width), got {n}"
        );
        self.state_dim = n;
        self.sync_widths();
        Ok(())
    }

    /// Keeps the fusion's state width (GLUE: the robot state and any keypoint coordinates) and the U-Net's
    /// condition width in step with the state's parts.
    fn sync_widths(&mut self) {
        self.fusion.state_dim = self.fusion_state_dim();
        self.unet.global_cond_dim = self.n_obs_steps * self.step_dim();
    }

    /// The width of eq. 3's `S` in GLUE's fusion: the robot state, then the keypoint features when they join it
    /// (the other policies leave the fusion unused at the robot state's width).
    fn fusion_state_dim(&self) -> usize {
        let coords = if self.policy.uses_key_patches() { KEYPOINT_FEATURES * self.n_keypoints } else { 0 };
        self.state_dim + coords
    }

    /// Sets the number of task objects whose poses the privileged-state policy reads (`glue train` takes it from
    /// the demonstrations), keeping the U-Net's condition width in step.
    pub fn set_n_objects(&mut self, n: usize) -> eyre::Result<()> {
        eyre::ensure!(self.policy.uses_object_poses(), "--policy {} reads no object poses", self.policy.name());
        eyre::ensure!(n > 0, "the privileged-state policy needs at least one task object, got 0");
        self.n_objects = n;
        self.sync_widths();
        Ok(())
    }

    /// Sets the number of tracked keypoints whose coordinates join the state (`glue train` takes it from the
    /// demonstrations; 0 removes them from GLUE's), keeping the fusion's and the U-Net's widths in step.
    pub fn set_n_keypoints(&mut self, n: usize) -> eyre::Result<()> {
        eyre::ensure!(
            n == 0 || self.policy.accepts_keypoint_coords(),
            "--policy {} reads no keypoint coordinates",
            self.policy.name()
        );
        eyre::ensure!(n > 0 || !self.policy.uses_keypoint_coords(), "the keypoint-coordinate policy needs at least one keypoint, got 0");
        self.n_keypoints = n;
        self.sync_widths();
        Ok(())
    }

    /// Width of the normalised state vector: the robot state, then the object features (privileged-state policy),
    /// then the keypoint features (keypoint-coordinate policy, the image policies with `--keypoint-coords`).
    pub fn state_width(&self) -> usize {
        self.state_dim + OBJECT_FEATURES * self.n_objects + KEYPOINT_FEATURES * self.n_keypoints
    }

    /// Whether each frame needs the keypoint tracks: for GLUE's key patches, or for coordinates in the state.
    pub fn reads_keypoints(&self) -> bool {
        self.policy.uses_keypoints() || self.n_keypoints > 0
    }

    /// Width of one observation step's condition.
    pub fn step_dim(&self) -> usize {
        match self.policy {
            PolicyKind::Glue => self.fusion.condition_dim(),
            PolicyKind::GlueS => self.global_vit.hidden_size + self.state_width(),
            PolicyKind::Dp => self.resnet.feature_dim() + self.state_width(),
            PolicyKind::State | PolicyKind::Keypoints => self.state_width(),
        }
    }

    /// Checks the sizes against each other; errors name the fields.
    pub fn validate(&self) -> eyre::Result<()> {
        use eyre::ensure;
        ensure!(self.n_obs_steps >= 1, "n_obs_steps must be at least 1");
        ensure!(
            self.n_obs_steps - 1 + self.n_action_steps <= self.horizon,
            "n_obs_steps - 1 + n_action_steps ({}) must not exceed horizon ({})",
            self.n_obs_steps - 1 + self.n_action_steps,
            self.horizon
        );
        ensure!(
            self.horizon.is_multiple_of(self.unet.horizon_multiple()),
            "horizon {} must be a multiple of {} for unet.down_dims {:?}",
            self.horizon,
            self.unet.horizon_multiple(),
            self.unet.down_dims
        );
        ensure!(self.unet.action_dim == self.action_dim, "unet.action_dim {} != action_dim {}", self.unet.action_dim, self.action_dim);
        ensure!(
            self.unet.global_cond_dim == self.n_obs_steps * self.step_dim(),
            "unet.global_cond_dim {} != n_obs_steps x step width = {}",
            self.unet.global_cond_dim,
            self.n_obs_steps * self.step_dim()
        );
        ensure!(
            self.fusion.state_dim == self.fusion_state_dim(),
            "fusion.state_dim {} != state_dim (+ {KEYPOINT_FEATURES} x n_keypoints for GLUE) = {}",
            self.fusion.state_dim,
            self.fusion_state_dim()
        );
        ensure!(
            self.fusion.global_dim == self.global_vit.hidden_size,
            "fusion.global_dim {} != global_vit.hidden_size {}",
            self.fusion.global_dim,
            self.global_vit.hidden_size
        );
        let patches = (self.image_size / self.global_vit.patch_size).pow(2);
        ensure!(
            self.fusion.global_patches == patches,
            "fusion.global_patches {} != (image_size / patch_size)^2 = {patches}",
            self.fusion.global_patches
        );
        ensure!(self.crop_ratio > 0.0 && self.crop_ratio <= 1.0, "crop_ratio must be in (0, 1], got {}", self.crop_ratio);
        ensure!(self.state_dim <= crate::msg::RobotState::NAMES.len(), "state_dim {} exceeds the robot state", self.state_dim);
        ensure!(
            (self.n_objects > 0) == self.policy.uses_object_poses(),
            "n_objects {}: expected {} for policy {}",
            self.n_objects,
            if self.policy.uses_object_poses() { "at least 1" } else { "0" },
            self.policy.name()
        );
        let keypoints_ok = if self.policy.uses_keypoint_coords() {
            self.n_keypoints > 0
        } else {
            self.n_keypoints == 0 || self.policy.accepts_keypoint_coords()
        };
        ensure!(
            keypoints_ok,
            "n_keypoints {}: expected {} for policy {}",
            self.n_keypoints,
            if self.policy.uses_keypoint_coords() { "at least 1" } else { "0" },
            self.policy.name()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_glue_matches_the_paper() {
        let c = PolicyConfig::new(PolicyKind::Glue, ModelSize::Full);
        assert_eq!(c.step_dim(), 768 + 256 + 7);
        assert_eq!(c.fusion.grid, 28);
        assert_eq!(c.unet.down_dims, vec![256, 512, 1024]);
        assert_eq!((c.horizon, c.n_action_steps), (16, 8));
        c.validate().unwrap();
    }

    #[test]
    fn every_policy_and_size_is_consistent() {
        for policy in [PolicyKind::Glue, PolicyKind::GlueS, PolicyKind::Dp, PolicyKind::State, PolicyKind::Keypoints] {
            for size in [ModelSize::Full, ModelSize::Small] {
                let mut c = PolicyConfig::new(policy, size);
                if policy.uses_object_poses() {
                    assert!(c.validate().unwrap_err().to_string().contains("n_objects"), "{policy:?} without objects");
                    c.set_n_objects(2).unwrap();
                    assert_eq!(c.step_dim(), 7 + 2 * OBJECT_FEATURES);
                }
                if policy.uses_keypoint_coords() {
                    assert!(c.validate().unwrap_err().to_string().contains("n_keypoints"), "{policy:?} without keypoints");
                    c.set_n_keypoints(15).unwrap();
                    assert_eq!(c.step_dim(), 7 + 15 * KEYPOINT_FEATURES);
                } else if policy.accepts_keypoint_coords() {
                    // The image policies with --keypoint-coords: they extend the state (GLUE: eq. 3's S).
                    let mut with = c.clone();
                    with.set_n_keypoints(15).unwrap();
                    assert_eq!(with.step_dim(), c.step_dim() + 15 * KEYPOINT_FEATURES);
                    assert!(with.reads_keypoints());
                    if policy == PolicyKind::Glue {
                        assert_eq!(with.fusion.condition_dim(), with.step_dim());
                    }
                    with.validate().unwrap();
                } else {
                    assert!(c.set_n_keypoints(15).is_err(), "{policy:?} takes no keypoint coordinates");
                }
                c.validate().unwrap_or_else(|e| panic!("{policy:?} {size:?}: {e}"));
                assert_eq!(c.unet.global_cond_dim, 2 * c.step_dim());
            }
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
        c.horizon = 10;
        assert!(c.validate().unwrap_err().to_string().contains("horizon"));
        let mut c = PolicyConfig::new(PolicyKind::Glue, ModelSize::Small);
        c.unet.global_cond_dim += 1;
        assert!(c.validate().unwrap_err().to_string().contains("global_cond_dim"));
    }
}
