//! Arrow encoding helpers shared by the message types: typed array access, tensor shape checks, value checks
//! and the node-hub raster metadata.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, Float32Array, PrimitiveArray};
use arrow::datatypes::Float32Type;

use super::{MetaValue, Metadata, MsgError, GRIPPER_MAX, meta_get, meta_ints, meta_one_of};

/// The values of a non-null primitive array of type `T`; the error names field `data`.
pub(super) fn values<T: ArrowPrimitiveType>(array: &dyn Array) -> Result<&[T::Native], MsgError> {
    let typed = array.as_any().downcast_ref::<PrimitiveArray<T>>().ok_or_else(|| {
        MsgError::mismatch("data", format!("a {} array", T::DATA_TYPE), format!("{}", array.data_type()))
    })?;
    match typed.null_count() {
        0 => Ok(&typed.values()[..]),
        n => Err(MsgError::mismatch("data", "no nulls", format!("{n} nulls"))),
    }
}

pub(super) fn f32_array(values: Vec<f32>) -> ArrayRef {
    Arc::new(Float32Array::from(values))
}

/// Tensor metadata: `shape` and `dtype: "float32"`.
pub(super) fn tensor_meta(shape: &[usize]) -> Metadata {
    let shape = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    Metadata::from([
        ("shape".to_owned(), MetaValue::Ints(shape)),
        ("dtype".to_owned(), MetaValue::Str("float32".to_owned())),
    ])
}

/// Checks a tensor's `dtype`, that its `shape` metadata is `[cols]` (or `[N, cols]` when `matrix`), and that
/// the array length agrees with the shape.
pub(super) fn tensor<'a>(array: &'a dyn Array, meta: &Metadata, matrix: bool, cols: usize) -> Result<&'a [f32], MsgError> {
    let data = values::<Float32Type>(array)?;
    meta_one_of(meta, "dtype", &["float32"])?;
    let shape = meta_ints(meta, "shape")?;
    let rows = match (matrix, shape) {
        (false, &[c]) if c == cols as i64 => Some(1),
        (true, &[n, c]) if c == cols as i64 => u64::try_from(n).ok(),
        _ => None,
    };
    let Some(rows) = rows else {
        let form = if matrix { format!("[N, {cols}] with N >= 0") } else { format!("[{cols}]") };
        return Err(MsgError::mismatch("shape", form, format!("{shape:?}")));
    };
    let want = u128::from(rows) * cols as u128;
    if want == data.len() as u128 {
        Ok(data)
    } else {
        Err(MsgError::mismatch("data", format!("{want} f32 values (shape {shape:?})"), data.len().to_string()))
    }
}

/// A fixed-shape `[N]` tensor as an array.
pub(super) fn fixed<const N: usize>(array: &dyn Array, meta: &Metadata) -> Result<[f32; N], MsgError> {
    let data = tensor(array, meta, false, N)?;
    Ok(*data.first_chunk::<N>().expect("tensor() checked the length is N"))
}

/// Rows of a `[N, C]` tensor.
pub(super) fn rows<const C: usize>(array: &dyn Array, meta: &Metadata) -> Result<Vec<[f32; C]>, MsgError> {
    Ok(tensor(array, meta, true, C)?.as_chunks::<C>().0.to_vec())
}

pub(super) fn check_finite(field: &str, values: &[f32]) -> Result<(), MsgError> {
    match values.iter().all(|v| v.is_finite()) {
        true => Ok(()),
        false => Err(MsgError::mismatch(field, "finite values", format!("{values:?}"))),
    }
}

/// Checks a finite quaternion (x, y, z, w) whose norm is within `tol` of 1.
pub(super) fn check_quat(field: &str, q: &[f32; 4], tol: f64) -> Result<(), MsgError> {
    let norm = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    match (norm - 1.0).abs() <= tol {
        true => Ok(()),
        false => Err(MsgError::mismatch(
            field,
            format!("a unit quaternion (x, y, z, w) with |norm - 1| <= {tol}"),
            format!("{q:?} (norm {norm})"),
        )),
    }
}

/// Checks a gripper width in `[0 - tol, GRIPPER_MAX + tol]` metres (NaN fails).
pub(super) fn check_gripper(field: &str, width: f32, tol: f32) -> Result<(), MsgError> {
    match (-tol..=GRIPPER_MAX + tol).contains(&width) {
        true => Ok(()),
        false => {
            let range =
                if tol == 0.0 { format!("[0, {GRIPPER_MAX}]") } else { format!("[0, {GRIPPER_MAX}] (+/- {tol})") };
            Err(MsgError::mismatch(field, format!("a finite width in {range} m"), format!("{width:?}")))
        }
    }
}

/// Checks `width, height >= 1` and `data.len() == width * height * channels` for a raster of `encoding`.
pub(super) fn check_raster(width: u32, height: u32, len: usize, channels: u64, encoding: &str) -> Result<(), MsgError> {
    for (field, value) in [("width", width), ("height", height)] {
        if value == 0 {
            return Err(MsgError::mismatch(field, ">= 1", "0"));
        }
    }
    let want = u64::from(width) * u64::from(height) * channels;
    match want == len as u64 {
        true => Ok(()),
        false => {
            Err(MsgError::mismatch("data", format!("{want} bytes ({width}x{height} {encoding})"), len.to_string()))
        }
    }
}

/// Raster metadata in the node-hub convention.
pub(super) fn raster_meta(width: u32, height: u32, encoding: &str, primitive: &str) -> Metadata {
    Metadata::from([
        ("encoding".to_owned(), MetaValue::Str(encoding.to_owned())),
        ("width".to_owned(), MetaValue::Int(width.into())),
        ("height".to_owned(), MetaValue::Int(height.into())),
        ("primitive".to_owned(), MetaValue::Str(primitive.to_owned())),
    ])
}

/// Reads an image dimension: an Int in `1..=u32::MAX`.
pub(super) fn meta_dim(meta: &Metadata, key: &str) -> Result<u32, MsgError> {
    meta_get(meta, key, "Int in 1..=4294967295", |v| match v {
        MetaValue::Int(i) => u32::try_from(*i).ok().filter(|&d| d >= 1),
        _ => None,
    })
}
