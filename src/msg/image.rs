//! Camera images and instance segmentations (the node-hub raster convention).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt8Array};
use arrow::datatypes::UInt8Type;

use super::codec::{values, check_raster, raster_meta, meta_dim};
use super::{Metadata, MsgError, Message, meta_one_of, meta_optional};

/// An RGB camera image (rgb8, row-major, `width * height * 3` bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1).
    pub height: u32,
    /// Pixels, rgb8.
    pub data: Vec<u8>,
}

impl Message for Image {
    const NAME: &'static str = "image";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let array: ArrayRef = Arc::new(UInt8Array::from(self.data.clone()));
        (array, raster_meta(self.width, self.height, "rgb8", "image"))
    }

    /// Accepts `rgb8` and `bgr8` (converted to rgb).
    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let bytes = values::<UInt8Type>(array)?;
        let encoding = meta_one_of(meta, "encoding", &["rgb8", "bgr8"])?;
        meta_optional(meta, "primitive", "image")?;
        let (width, height) = (meta_dim(meta, "width")?, meta_dim(meta, "height")?);
        check_raster(width, height, bytes.len(), 3, encoding)?;
        let mut data = bytes.to_vec();
        if encoding == "bgr8" {
            data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
        }
        Ok(Self { width, height, data })
    }

    fn check(&self) -> Result<(), MsgError> {
        check_raster(self.width, self.height, self.data.len(), 3, "rgb8")
    }
}

/// Instance segmentation: one instance id per pixel (0 = background), encoding `mono8`,
/// primitive `segmentation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Width in pixels (>= 1).
    pub width: u32,
    /// Height in pixels (>= 1).
    pub height: u32,
    /// Instance id per pixel, row-major.
    pub data: Vec<u8>,
}

impl Message for Segmentation {
    const NAME: &'static str = "segmentation";

    fn encode_body(&self) -> (ArrayRef, Metadata) {
        let array: ArrayRef = Arc::new(UInt8Array::from(self.data.clone()));
        (array, raster_meta(self.width, self.height, "mono8", "segmentation"))
    }

    fn decode_body(array: &dyn Array, meta: &Metadata) -> Result<Self, MsgError> {
        let data = values::<UInt8Type>(array)?.to_vec();
        meta_one_of(meta, "encoding", &["mono8"])?;
        meta_optional(meta, "primitive", "segmentation")?;
        Ok(Self { width: meta_dim(meta, "width")?, height: meta_dim(meta, "height")?, data })
    }

    fn check(&self) -> Result<(), MsgError> {
        check_raster(self.width, self.height, self.data.len(), 1, "mono8")
    }
}
