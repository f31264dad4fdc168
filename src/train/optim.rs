//! The optimisation pieces burn does not provide as Diffusion Policy uses them: the cosine learning-rate schedule
//! with linear warmup (diffusers' `get_cosine_schedule_with_warmup`), clipping by the *global* gradient norm
//! (PyTorch's `clip_grad_norm_`; burn clips per tensor), and the EMA of weights with Diffusion Policy's warmup
//! (`diffusion_policy/model/diffusion/ema_model.py`: decay `1 - (1 + step / inv_gamma)^-power`, capped).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Learning rate at `step` (0-based): linear warmup from 0 over `warmup` steps, then a half cosine to 0 at
/// `total`.
pub fn cosine_with_warmup(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Sum of squares of every gradient of `module`'s float parameters.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.total += f64::from(g.powi_scalar(2).sum().into_scalar::<f32>());
        }
    }
}

/// Multiplies every gradient by a factor.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (as `torch.nn.utils.clip_grad_norm_`, factor
/// `max_norm / (norm + 1e-6)` when above); returns the norm before clipping (non-finite when a gradient is).
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut norm = SquaredNorm { grads, total: 0.0 };
    module.visit(&mut norm);
    let norm = norm.total.sqrt();
    if norm.is_finite() && norm > max_norm {
        let factor = (max_norm / (norm + 1e-6)) as f32;
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

/// Diffusion Policy's EMA decay at optimisation step `step`.
pub fn ema_decay(step: usize, power: f64, max_decay: f64) -> f64 {
    let decay = 1.0 - (1.0 + step as f64).powf(-power);
    decay.clamp(0.0, max_decay)
}

/// The current values of a module's float parameters, flattened, by id.
struct Snapshot(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let value = if value.is_autodiff() { value.inner() } else { value };
        self.0.insert(param.id, value.flatten::<1>(0, D - 1));
    }
}

/// `ema ← decay · ema + (1 - decay) · model`, per parameter id.
struct Blend {
    model: HashMap<ParamId, Tensor<1>>,
    decay: f32,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.model.remove(&param.id) else { return param };
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            ema.mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

/// The exponential moving average of a model's weights, kept as a plain (non-autodiff) copy.
pub struct Ema<M> {
    pub model: M,
    /// DP's `power` (0.75) and `max_value` (0.9999).
    pub power: f64,
    pub max_decay: f64,
}

impl<M: Module> Ema<M> {
    /// Starts the average at the current weights of `model` (which may live on an autodiff device).
    pub fn new(model: &M, power: f64, max_decay: f64) -> Self {
        Self { model: model.valid(), power, max_decay }
    }

    /// Blends `model`'s weights in after optimisation step `step`; returns the decay used. Errors when the average
    /// does not hold every parameter of `model` (matched by parameter id: an EMA loaded into a fresh network would
    /// silently stop following the model).
    pub fn update(&mut self, model: &M, step: usize) -> eyre::Result<f64> {
        let decay = ema_decay(step, self.power, self.max_decay);
        let mut snapshot = Snapshot(HashMap::new());
        model.visit(&mut snapshot);
        let mut blend = Blend { model: snapshot.0, decay: decay as f32 };
        let ema = std::mem::replace(&mut self.model, model.valid());
        self.model = ema.map(&mut blend);
        eyre::ensure!(
            blend.model.is_empty(),
            "EMA: {} parameters of the model have no counterpart in the average (parameter ids differ)",
            blend.model.len()
        );
        Ok(decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(cosine_with_warmup(1.0, 0, 10, 110), 0.0);
        assert!((cosine_with_warmup(1.0, 5, 10, 110) - 0.5).abs() < 1e-12);
        assert!((cosine_with_warmup(1.0, 10, 10, 110) - 1.0).abs() < 1e-12);
        assert!((cosine_with_warmup(1.0, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(cosine_with_warmup(1.0, 110, 10, 110).abs() < 1e-12);
    }

    #[test]
    fn ema_decay_warms_up() {
        assert_eq!(ema_decay(0, 0.75, 0.9999), 0.0);
        assert!((ema_decay(15, 0.75, 0.9999) - 0.875).abs() < 1e-12);
        assert_eq!(ema_decay(10_000_000_000, 0.75, 0.9999), 0.9999);
    }

    fn linear(device: &Device) -> Linear {
        LinearConfig::new(3, 2).init(device)
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let device = Device::flex().autodiff();
        let model = linear(&device);
        let x = Tensor::<2>::from_data(TensorData::new(vec![100.0f32; 6], [2, 3]), &device);
        let grads = model.forward(x).sum().backward();
        let mut grads = GradientsParams::from_grads(grads, &model);
        let before = clip_global_norm(&model, &mut grads, 1.0);
        assert!(before > 1.0, "{before}");
        let after = clip_global_norm(&model, &mut grads, 1.0);
        assert!((after - 1.0).abs() < 1e-3, "global norm after clipping: {after}");
    }

    #[test]
    fn ema_moves_towards_the_model() {
        let device = Device::flex();
        let a = linear(&device);
        let mut ema = Ema::new(&a, 0.75, 0.9999);
        let b = a.clone().map(&mut Blend { model: HashMap::new(), decay: 1.0 });
        // A model two units away on every weight.
        let shifted = b.clone();
        let mut snapshot = Snapshot(HashMap::new());
        shifted.visit(&mut snapshot);
        let target: HashMap<ParamId, Tensor<1>> = snapshot.0.into_iter().map(|(k, v)| (k, v.add_scalar(2.0))).collect();
        let shifted = shifted.map(&mut Blend { model: target, decay: 0.0 });
        let decay = ema.update(&shifted, 15).unwrap();
        // An average of an unrelated network (fresh parameter ids) is refused.
        let mut stranger = Ema::new(&linear(&device), 0.75, 0.9999);
        assert!(stranger.update(&a, 1).unwrap_err().to_string().contains("parameter ids"));
        let w0: Vec<f32> = a.weight.val().into_data().try_to_vec().unwrap();
        let we: Vec<f32> = ema.model.weight.val().into_data().try_to_vec().unwrap();
        for (x, y) in w0.iter().zip(&we) {
            assert!((y - (x + 2.0 * (1.0 - decay as f32))).abs() < 1e-5, "{x} -> {y} at decay {decay}");
        }
    }

    #[test]
    fn a_reloaded_average_keeps_following_the_model() {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let device = Device::flex();
        let model = linear(&device);
        let path = std::env::temp_dir().join(format!("glue-ema-{}.safetensors", std::process::id()));
        model.save_into(&mut SafetensorsStore::from_file(&path).overwrite(true)).unwrap();
        // As `--resume` does: the model and its average both come back from files.
        let mut model = linear(&device);
        model.load_from(&mut SafetensorsStore::from_file(&path)).unwrap();
        let mut ema = Ema::new(&model, 0.75, 0.9999);
        ema.model.load_from(&mut SafetensorsStore::from_file(&path)).unwrap();
        let before: Vec<f32> = ema.model.weight.val().into_data().try_to_vec().unwrap();
        let mut snapshot = Snapshot(HashMap::new());
        model.visit(&mut snapshot);
        let target: HashMap<ParamId, Tensor<1>> = snapshot.0.into_iter().map(|(k, v)| (k, v.add_scalar(2.0))).collect();
        let moved = model.map(&mut Blend { model: target, decay: 0.0 });
        ema.update(&moved, 15).unwrap();
        let after: Vec<f32> = ema.model.weight.val().into_data().try_to_vec().unwrap();
        std::fs::remove_file(&path).ok();
        assert!(before.iter().zip(&after).all(|(b, a)| (a - b - 2.0 * 0.125).abs() < 1e-4), "{before:?} -> {after:?}");
    }
}
