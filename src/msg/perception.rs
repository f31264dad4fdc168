//! What perception hands the policy: tracked keypoints and the encoder's condition vector.

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::Float32Type;

use super::codec::{values, f32_array, tensor_meta, rows, check_finite};
use super::{Metadata, MsgError, Message, meta_ints, meta_one_of};

/// Tracked keypoints, shape `[N, 3]` = (x, y in pixels, visible in {0, 1}); N = 0 is an empty array with
/// shape `[0, 3]`. The tracker keeps a stable index per keypoint (DESIGN.md, "The graph").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Keypoints {
    /// `[x, y, visible]` per keypoint.
    pub points: Vec<[f32; 3]>,
}

impl Keypoints {
    /// The row-major flat vector `[x0, y0, v0, x1, ...]`.
    pub fn to_flat(&self) -> Vec<f32> {
        self.points.concat()
    }

    /// Splits a flat vector into rows; the length must be a multiple of 3 (no value validation).
    pub fn from_flat(flat: &[f32]) -> Result<Self, MsgError> {
        match flat.len() % 3 {
            0 => Ok(Self { points: flat.as_chunks::<3>().0.to_vec() }),
            _ => Err(MsgError::mismatch("data", "a multiple of 3 values ([N, 3])", flat.len().to_string())
                .within(Self::NAME)),
        }
    }
}

impl Message for Keypoints {
    const NAME: &'static str = "keypoints";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        (f32_array(self.to_flat()), tensor_meta(&[self.points.len(), 3]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        rows::<3>(array, meta).map(|points| Self { points })
    }

    fn check(&self) -> Result<(), MsgError> {
        for (i, &[x, y, visible]) in self.points.iter().enumerate() {
            if !(x.is_finite() && y.is_finite()) {
                return Err(MsgError::mismatch(format!("points[{i}].xy"), "finite pixels", format!("({x:?}, {y:?})")));
            }
            if visible != 0.0 && visible != 1.0 {
                return Err(MsgError::mismatch(
                    format!("points[{i}].visible"),
                    "exactly 0 or 1",
                    format!("{visible:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The encoder's global condition `W` for the policy (eq. 3 per observation step, the steps concatenated):
/// shape `[W]`, float32, every value finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub values: Vec<f32>,
}

impl Message for Condition {
    const NAME: &'static str = "condition";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        (f32_array(self.values.clone()), tensor_meta(&[self.values.len()]))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let data = values::<Float32Type>(array)?;
        meta_one_of(meta, "dtype", &["float32"])?;
        match meta_ints(meta, "shape")? {
            &[w] if w == data.len() as i64 && w > 0 => Ok(Self { values: data.to_vec() }),
            shape => Err(MsgError::mismatch("shape", format!("[{}] (one value per array element, W >= 1)", data.len()), format!("{shape:?}"))),
        }
    }

    fn check(&self) -> Result<(), MsgError> {
        check_finite("values", &self.values)
    }
}
