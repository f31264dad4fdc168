//! Loading a PyTorch `state_dict` (saved as safetensors) into burn layers by PyTorch's own tensor names.
//!
//! burn and PyTorch agree on the layout of `Conv1d` (`[out, in, k]`) and `ConvTranspose1d` (`[in, out, k]`)
//! weights, but not on the rest:
//!
//! | PyTorch                                   | burn                                       |
//! |-------------------------------------------|--------------------------------------------|
//! | `nn.Linear.weight` `[out, in]`            | `Linear.weight` `[in, out]` (transposed)   |
//! | `nn.GroupNorm.weight` / `.bias`           | `GroupNorm.gamma` / `.beta`                |
//! | `nn.Conv1d.weight` / `.bias`              | `Conv1d.weight` / `.bias`                  |
//! | `nn.ConvTranspose1d.weight` / `.bias`     | `ConvTranspose1d.weight` / `.bias`         |
//!
//! The layers are first built lazily from their configs (nothing is allocated until a parameter is read), then
//! each parameter is replaced by the checkpoint tensor after its shape was checked against the lazy shape.
//! Loading is strict like `torch.nn.Module.load_state_dict(strict=True)`: a missing tensor, a tensor of the
//! wrong shape, and a tensor under the prefix that no layer consumed are all errors naming the tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::nn::{GroupNorm, Linear};
use burn::store::{ModuleStore, SafetensorsStore, bridge};
use burn::tensor::{Device, Tensor, TensorData};
use eyre::{Result, bail, eyre};

/// The float tensors of one safetensors file whose names start with a prefix (the prefix stripped), consumed
/// one by one while a model takes its parameters from them.
pub(crate) struct StateDict {
    prefix: String,
    tensors: BTreeMap<String, TensorData>,
    used: BTreeSet<String>,
    device: Device,
}

impl StateDict {
    /// Reads every tensor of `path` whose name starts with `prefix` and converts it to f32 (f16, bf16 and f64
    /// checkpoints load too). Use `""` for a bare module `state_dict`, or e.g. `"diffusion.unet."` for the
    /// U-Net inside a LeRobot `DiffusionPolicy` `model.safetensors`.
    pub(crate) fn from_safetensors(path: impl AsRef<Path>, prefix: &str, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let mut store = SafetensorsStore::from_file(path);
        let all = store.get_all_tensors().map_err(|e| eyre!("reading {}: {e}", path.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, tensor) in all {
            let Some(key) = name.strip_prefix(prefix) else { continue };
            let data = bridge::to_data(tensor)
                .map_err(|e| eyre!("{}: tensor `{name}`: {e}", path.display()))?
                .try_cast_as::<f32>()
                .map_err(|e| eyre!("{}: tensor `{name}` cannot be read as f32: {e}", path.display()))?;
            tensors.insert(key.to_string(), data);
        }
        if tensors.is_empty() {
            bail!("{}: no tensor name starts with `{prefix}`", path.display());
        }
        Ok(Self { prefix: prefix.to_string(), tensors, used: BTreeSet::new(), device: device.clone() })
    }

    /// Fails if some tensor under the prefix was never consumed (`load_state_dict`'s "unexpected keys").
    pub(crate) fn finish(self) -> Result<()> {
        let unused: Vec<String> =
            self.tensors.keys().filter(|k| !self.used.contains(*k)).map(|k| format!("{}{k}", self.prefix)).collect();
        if unused.is_empty() { Ok(()) } else { bail!("unexpected tensors in the checkpoint: {unused:?}") }
    }

    /// Marks tensor `key` used and returns it, after checking its shape against `expected` (PyTorch layout).
    fn take(&mut self, key: &str, expected: &[usize]) -> Result<TensorData> {
        let full = format!("{}{key}", self.prefix);
        let data =
            self.tensors.get(key).ok_or_else(|| eyre!("missing tensor `{full}` (expected shape {expected:?})"))?;
        let found = data.shape().as_slice();
        if found != expected {
            bail!("tensor `{full}` has shape {found:?} in the checkpoint but the model expects {expected:?}");
        }
        self.used.insert(key.to_string());
        Ok(data.clone())
    }

    /// Loads a parameter whose burn layout equals PyTorch's.
    fn load<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<D>>) -> Result<()> {
        let data = self.take(key, param.lazy_shape().as_slice())?;
        *param = Param::from_tensor(Tensor::from_data(data, &self.device));
        Ok(())
    }

    /// Loads an optional parameter (a bias) that the model may not have.
    fn load_opt(&mut self, key: &str, param: &mut Option<Param<Tensor<1>>>) -> Result<()> {
        match param {
            Some(param) => self.load(key, param),
            None => Ok(()),
        }
    }

    /// `nn.Conv1d` `{key}.weight` `[out, in, k]` and `{key}.bias`.
    pub(crate) fn conv1d(&mut self, key: &str, conv: &mut Conv1d) -> Result<()> {
        self.load(&format!("{key}.weight"), &mut conv.weight)?;
        self.load_opt(&format!("{key}.bias"), &mut conv.bias)
    }

    /// `nn.ConvTranspose1d` `{key}.weight` `[in, out, k]` and `{key}.bias`.
    pub(crate) fn conv_transpose1d(&mut self, key: &str, conv: &mut ConvTranspose1d) -> Result<()> {
        self.load(&format!("{key}.weight"), &mut conv.weight)?;
        self.load_opt(&format!("{key}.bias"), &mut conv.bias)
    }

    /// `nn.GroupNorm` `{key}.weight` -> `gamma`, `{key}.bias` -> `beta`.
    pub(crate) fn group_norm(&mut self, key: &str, norm: &mut GroupNorm) -> Result<()> {
        if let (Some(gamma), Some(beta)) = (&mut norm.gamma, &mut norm.beta) {
            self.load(&format!("{key}.weight"), gamma)?;
            self.load(&format!("{key}.bias"), beta)?;
        }
        Ok(())
    }

    /// `nn.Linear` `{key}.weight` `[out, in]`, stored transposed as burn's `[in, out]`, and `{key}.bias`.
    pub(crate) fn linear(&mut self, key: &str, linear: &mut Linear) -> Result<()> {
        let [d_in, d_out] = linear.weight.lazy_shape().dims();
        let data = self.take(&format!("{key}.weight"), &[d_out, d_in])?;
        linear.weight = Param::from_tensor(Tensor::<2>::from_data(data, &self.device).transpose());
        self.load_opt(&format!("{key}.bias"), &mut linear.bias)
    }
}
