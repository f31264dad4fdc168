//! CLIP's vision transformer in burn, loading Hugging Face checkpoints as published and matching
//! `transformers`' `CLIPVisionModel` and `CLIPImageProcessor` (`transformers/models/clip/modeling_clip.py`,
//! `image_processing_clip.py`).
//!
//! GLUE (paper sec. III-C) encodes the full observation with a learnable CLIP ViT-B/16 (global CLS token and 196
//! global patch features) and the four quarter images of the first frame with a frozen one (local grid features);
//! both are this module, at [`ClipVisionConfig::vit_b16`] for the full-size model or a small configuration for
//! tests and the CPU demo.
//!
//! - [`config`]: [`ClipVisionConfig`] from a `config.json`;
//! - [`model`]: [`ClipVisionModel`] and its forward pass;
//! - [`load`]: checkpoint folders by HF tensor names;
//! - [`grid`]: [`GridEncoder`], the frozen local feature grid of 2x2 sub-images;
//! - [`preprocess`] and `resample`: [`ImageProcessor`] with Pillow's bicubic resize (and the bilinear one SAM's
//!   processor uses).

pub mod config;
pub mod grid;
pub mod load;
pub mod model;
pub mod preprocess;
pub(crate) mod resample;

use std::path::Path;

use burn::module::{Module, Param};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor};
use eyre::{WrapErr, eyre};

pub use config::{ClipVisionConfig, HiddenAct};
pub use grid::GridEncoder;
pub use model::{ClipVisionModel, ClipVisionOutput};
pub use preprocess::{ImageProcessor, Resize};

/// The two outputs of one image, saved under `CLIPVisionModel`'s output names.
#[derive(Module, Debug)]
struct Features {
    last_hidden_state: Param<Tensor<3>>,
    pooler_output: Param<Tensor<2>>,
}

/// Encodes one PNG with the checkpoint in `weights_dir` (on the CPU) and writes `last_hidden_state`
/// `[1, tokens, hidden]` and `pooler_output` `[1, hidden]` to a safetensors file.
pub fn features(weights_dir: &Path, image_png: &Path, out_safetensors: &Path) -> eyre::Result<()> {
    let device = Device::flex();
    let (model, _, processor) = ClipVisionModel::load(weights_dir, &device)?;
    let image = image::open(image_png).wrap_err_with(|| format!("cannot read image {}", image_png.display()))?;
    let pixels = Tensor::from_data(processor.preprocess(&image.to_rgb8()), &device);
    let output = model.forward(pixels);
    let features = Features {
        last_hidden_state: Param::from_tensor(output.last_hidden_state),
        pooler_output: Param::from_tensor(output.pooler_output),
    };
    features
        .save_into(&mut SafetensorsStore::from_file(out_safetensors).overwrite(true))
        .map_err(|error| eyre!("{error}"))
        .wrap_err_with(|| format!("cannot write {}", out_safetensors.display()))
}
