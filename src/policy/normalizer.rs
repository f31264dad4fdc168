//! Min-max normalisation of robot state and actions to `[-1, 1]`, as Diffusion Policy and LeRobot's
//! `Normalize(mode=MIN_MAX)` do it (`lerobot/policies/normalize.py`): `x' = 2 (x - min) / (max - min + ε) - 1`
//! with `ε = 1e-8`. The statistics come from the training data and are stored with the checkpoint
//! (`normalizer.json`), so inference maps exactly as training did.
//!
//! One departure, by default (`glue train --constant-span`, 0 for LeRobot's mapping): a dimension whose range is
//! below [`CONSTANT_SPAN`] counts as constant (`-1` out, `min` back). Without it, float rounding in a quantity that is constant in principle (the
//! quaternion components of a top-down grasp that only yaws vary by ~3e-8) is stretched over `[-1, 1]` and the
//! policy is trained to predict rounding noise. The threshold is stored with the statistics (`constant_span`), and
//! a `normalizer.json` (or `train.json`) written before it existed reads as `0`, LeRobot's exact mapping, so older
//! checkpoints act and resume bit for bit as they were trained.

use std::path::Path;

use eyre::{WrapErr, ensure};
use serde::{Deserialize, Serialize};

/// LeRobot's epsilon against zero ranges.
const EPS: f32 = 1e-8;

/// Ranges below this count as constant: far below any physical resolution of a state or action in SI units
/// (1 µm, 1 µrad), far above f32 rounding of values near 1 (6e-8).
pub const CONSTANT_SPAN: f32 = 1e-6;

/// Per-dimension range of one quantity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// Ranges below this count as constant (the `constant_span` it was fitted with; `0` in files that predate it).
    #[serde(default)]
    pub constant_span: f32,
}

impl Range {
    /// The per-dimension range of `rows` (each of length `dim`), ranges under `constant_span` counting as constant
    /// ([`CONSTANT_SPAN`], or `0` for LeRobot's exact mapping). Errors on no rows, a wrong length or a non-finite
    /// value, naming `what` and the row.
    pub fn fit<'a>(
        what: &str,
        dim: usize,
        rows: impl IntoIterator<Item = &'a [f32]>,
        constant_span: f32,
    ) -> eyre::Result<Self> {
        let mut min = vec![f32::INFINITY; dim];
        let mut max = vec![f32::NEG_INFINITY; dim];
        let mut count = 0usize;
        for (i, row) in rows.into_iter().enumerate() {
            ensure!(row.len() == dim, "{what}: row {i} has {} values, expected [{dim}]", row.len());
            ensure!(row.iter().all(|v| v.is_finite()), "{what}: row {i} holds a non-finite value: {row:?}");
            for (d, &v) in row.iter().enumerate() {
                min[d] = min[d].min(v);
                max[d] = max[d].max(v);
            }
            count += 1;
        }
        ensure!(count > 0, "{what}: no data to fit the normaliser on");
        Ok(Self { min, max, constant_span })
    }

    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// Maps `x` into `[-1, 1]` in place (values outside the fitted range map outside it; a constant dimension
    /// maps to `-1`).
    pub fn normalize(&self, x: &mut [f32]) {
        for (d, v) in x.iter_mut().enumerate() {
            let span = self.max[d] - self.min[d];
            *v = if span < self.constant_span { -1.0 } else { 2.0 * (*v - self.min[d]) / (span + EPS) - 1.0 };
        }
    }

    /// The inverse of [`Range::normalize`], in place (a constant dimension returns its `min`).
    pub fn denormalize(&self, x: &mut [f32]) {
        for (d, v) in x.iter_mut().enumerate() {
            let span = self.max[d] - self.min[d];
            *v = if span < self.constant_span { self.min[d] } else { (*v + 1.0) / 2.0 * (span + EPS) + self.min[d] };
        }
    }
}

/// The statistics of a training set: robot state (the policy's state input) and action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub state: Range,
    pub action: Range,
}

impl Normalizer {
    /// Writes `normalizer.json`.
    pub fn save(&self, path: &Path) -> eyre::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?).wrap_err_with(|| format!("cannot write {}", path.display()))
    }

    /// Reads `normalizer.json`, checking the dimensions.
    pub fn load(path: &Path, state_dim: usize, action_dim: usize) -> eyre::Result<Self> {
        let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read normaliser {}", path.display()))?;
        let n: Self = serde_json::from_str(&text).wrap_err_with(|| format!("bad normaliser {}", path.display()))?;
        for (what, range, dim) in [("state", &n.state, state_dim), ("action", &n.action, action_dim)] {
            ensure!(
                range.min.len() == dim && range.max.len() == dim,
                "{}: {what} range has {} / {} values, expected [{dim}]",
                path.display(),
                range.min.len(),
                range.max.len()
            );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_range_to_minus_one_one_and_back() {
        let rows = [vec![0.0f32, -2.0, 5.0], vec![1.0, 2.0, 5.0], vec![0.5, 0.0, 5.0]];
        let range = Range::fit("state", 3, rows.iter().map(Vec::as_slice), CONSTANT_SPAN).unwrap();
        let mut lo = rows[0].clone();
        range.normalize(&mut lo);
        assert!((lo[0] + 1.0).abs() < 1e-6 && (lo[1] + 1.0).abs() < 1e-6, "{lo:?}");
        let mut hi = rows[1].clone();
        range.normalize(&mut hi);
        assert!((hi[0] - 1.0).abs() < 1e-6 && (hi[1] - 1.0).abs() < 1e-6, "{hi:?}");
        // A constant dimension maps to -1 without dividing by zero.
        assert!((hi[2] + 1.0).abs() < 1e-6 && hi[2].is_finite());
        let mut mid = rows[2].clone();
        range.normalize(&mut mid);
        range.denormalize(&mut mid);
        for (a, b) in mid.iter().zip(&rows[2]) {
            assert!((a - b).abs() < 1e-5, "{mid:?}");
        }
    }

    #[test]
    fn rounding_noise_counts_as_constant() {
        // Dimension 1 is a quaternion component that is zero up to f32 rounding, as in a yawing top-down grasp.
        let rows = [vec![0.0f32, -3e-8], vec![1.0, 2.9e-8], vec![0.5, 1e-9]];
        let range = Range::fit("action", 2, rows.iter().map(Vec::as_slice), CONSTANT_SPAN).unwrap();
        for row in &rows {
            let mut x = row.clone();
            range.normalize(&mut x);
            assert_eq!(x[1], -1.0, "{row:?} -> {x:?}");
            let mut y = [x[0], 0.7];
            range.denormalize(&mut y);
            assert!((y[0] - row[0]).abs() < 1e-6 && y[1] == -3e-8, "{y:?}");
        }
        // A normaliser.json from before the threshold keeps LeRobot's mapping, noise and all.
        let old: Range = serde_json::from_str(r#"{"min": [0.0, -3e-8], "max": [1.0, 2.9e-8]}"#).unwrap();
        assert_eq!(old.constant_span, 0.0);
        let mut x = rows[1].clone();
        old.normalize(&mut x);
        assert!((x[1] - (2.0 * 5.9e-8 / 6.9e-8 - 1.0)).abs() < 1e-3, "{x:?}");
        // Fitting with a span of 0 (`glue train --constant-span 0`) gives that same mapping.
        let lerobot = Range::fit("action", 2, rows.iter().map(Vec::as_slice), 0.0).unwrap();
        let mut y = rows[1].clone();
        lerobot.normalize(&mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn rejects_bad_rows_by_name() {
        let nan = [vec![0.0f32, f32::NAN]];
        let err = Range::fit("action", 2, nan.iter().map(Vec::as_slice), CONSTANT_SPAN).unwrap_err().to_string();
        assert!(err.contains("action") && err.contains("non-finite"), "{err}");
        let short = [vec![0.0f32]];
        let err = Range::fit("state", 2, short.iter().map(Vec::as_slice), CONSTANT_SPAN).unwrap_err().to_string();
        assert!(err.contains("state") && err.contains("[2]"), "{err}");
        assert!(Range::fit("state", 2, std::iter::empty(), CONSTANT_SPAN).is_err());
    }

    #[test]
    fn load_checks_dimensions() {
        let dir = std::env::temp_dir().join(format!("glue-normalizer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("normalizer.json");
        let r = |n| Range { min: vec![0.0; n], max: vec![1.0; n], constant_span: CONSTANT_SPAN };
        Normalizer { state: r(7), action: r(8) }.save(&path).unwrap();
        assert!(Normalizer::load(&path, 7, 8).is_ok());
        let err = Normalizer::load(&path, 7, 9).unwrap_err().to_string();
        assert!(err.contains("action") && err.contains("[9]"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
