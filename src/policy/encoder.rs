//! Observation encoders: one [`ObservationEncoder`] trait, three visuomotor implementations and the
//! camera-free diagnostics (privileged state, keypoint coordinates), each turning one observation
//! step into the per-step condition the U-Net's FiLM layers see (paper sec. III-C; Diffusion Policy sec. 3).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::config::{PolicyConfig, PolicyKind};
use crate::fusion::{Fusion, KeyPatches};
use crate::resnet::ResNetEncoder;
use crate::vit::ClipVisionModel;

/// A batch of observation steps, ready for an encoder (`M = B · T_o` rows, batch-major, step-minor).
#[derive(Debug, Clone)]
pub struct Observations {
    /// Normalised pixels `[M, 3, S, S]` of the (cropped, resized) camera image (`None` for the camera-free
    /// diagnostics).
    pub images: Option<Tensor<4>>,
    /// Normalised state `[M, state_width]` ([`super::observation::state_row`]).
    pub state: Tensor<2>,
    /// The key patches of each image (GLUE): frozen local features `[M, N, C_local]` and grid cells `[M, N]`.
    pub key_patches: Option<KeyPatches>,
}

/// Maps observation steps to per-step conditions `[M, step_dim]`.
pub trait ObservationEncoder {
    /// The per-step condition.
    fn encode(&self, obs: &Observations) -> Tensor<2>;
}

/// GLUE (eq. 3): `W = [F_CLS, Pool(Proj(MHA(F_patch1, F_patch2))), S]`.
#[derive(Module, Debug)]
pub struct GlueEncoder {
    /// The learnable global ViT.
    pub global: ClipVisionModel,
    pub fusion: Fusion,
}

impl ObservationEncoder for GlueEncoder {
    fn encode(&self, obs: &Observations) -> Tensor<2> {
        let key = obs.key_patches.as_ref().expect("GLUE needs key patches: Observations::key_patches is None");
        let out = self.global.forward(obs.images());
        let [m, tokens, width] = out.last_hidden_state.dims();
        let patches = out.last_hidden_state.slice([0..m, 1..tokens, 0..width]);
        self.fusion.condition(out.pooler_output, patches, key, obs.state.clone())
    }
}

/// GLUE-S, the paper's ablation without key patches: `[F_CLS, S]`.
#[derive(Module, Debug)]
pub struct GlueSEncoder {
    pub global: ClipVisionModel,
}

impl ObservationEncoder for GlueSEncoder {
    fn encode(&self, obs: &Observations) -> Tensor<2> {
        let cls = self.global.forward(obs.images()).pooler_output;
        Tensor::cat(vec![cls, obs.state.clone()], 1)
    }
}

/// Diffusion Policy's encoder: `[ResNet-18-GN + spatial softmax features, S]`.
#[derive(Module, Debug)]
pub struct DpEncoder {
    pub rgb: ResNetEncoder,
}

impl ObservationEncoder for DpEncoder {
    fn encode(&self, obs: &Observations) -> Tensor<2> {
        Tensor::cat(vec![self.rgb.forward(obs.images()), obs.state.clone()], 1)
    }
}

/// The camera-free diagnostics ([`PolicyKind::State`], [`PolicyKind::Keypoints`]): the identity on the normalised
/// state row (robot state, then object or keypoint features), as Diffusion Policy's low-dimensional policies
/// condition the U-Net on the observation itself
/// (`diffusion_policy/policy/diffusion_unet_lowdim_policy.py`, `obs_as_global_cond`).
#[derive(Module, Debug)]
pub struct StateEncoder {
    /// Width of the per-step condition (the state width).
    pub width: usize,
}

impl ObservationEncoder for StateEncoder {
    fn encode(&self, obs: &Observations) -> Tensor<2> {
        assert_eq!(obs.state.dims()[1], self.width, "low-dimensional state: expected [M, {}]", self.width);
        obs.state.clone()
    }
}

impl Observations {
    /// The camera images; the image encoders call it, and only the camera-free diagnostics build none.
    fn images(&self) -> Tensor<4> {
        self.images.clone().expect("an image policy's observations carry images")
    }
}

/// The encoder a [`PolicyConfig`] names.
#[derive(Module, Debug)]
pub enum Encoder {
    Glue(GlueEncoder),
    GlueS(GlueSEncoder),
    Dp(DpEncoder),
    State(StateEncoder),
}

impl Encoder {
    /// A freshly initialised encoder for `config`.
    pub fn init(config: &PolicyConfig, device: &Device) -> Self {
        match config.policy {
            PolicyKind::Glue => Encoder::Glue(GlueEncoder {
                global: ClipVisionModel::new(&config.global_vit, device),
                fusion: config.fusion.init(device),
            }),
            PolicyKind::GlueS => Encoder::GlueS(GlueSEncoder { global: ClipVisionModel::new(&config.global_vit, device) }),
            PolicyKind::Dp => Encoder::Dp(DpEncoder { rgb: config.resnet.init(device) }),
            PolicyKind::State | PolicyKind::Keypoints => Encoder::State(StateEncoder { width: config.state_width() }),
        }
    }
}

impl ObservationEncoder for Encoder {
    fn encode(&self, obs: &Observations) -> Tensor<2> {
        match self {
            Encoder::Glue(e) => e.encode(obs),
            Encoder::GlueS(e) => e.encode(obs),
            Encoder::Dp(e) => e.encode(obs),
            Encoder::State(e) => e.encode(obs),
        }
    }
}
