//! A real camera's frames for the `camera` node: raw rgb24 frames read from any byte stream (the stdout of a
//! capture command such as ffmpeg reading a V4L2 device) and fitted to the policy's input size.

use std::io::{ErrorKind, Read};

use eyre::{Result, WrapErr, ensure};
use image::RgbImage;
use image::imageops::{self, FilterType};

/// Splits a stream of raw rgb24 frames of one size into images.
pub struct FrameReader<R> {
    source: R,
    width: u32,
    height: u32,
}

impl<R: Read> FrameReader<R> {
    pub fn new(source: R, width: u32, height: u32) -> Result<Self> {
        ensure!(width > 0 && height > 0, "camera: frame size {width}x{height}: expected both sides > 0");
        Ok(Self { source, width, height })
    }

    /// The next frame; `Ok(None)` at a clean end of the stream, an error for a frame cut short.
    pub fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let len = self.width as usize * self.height as usize * 3;
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.source.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => eyre::bail!(
                    "camera: the source ended inside a frame ({filled} of {len} bytes of a {}x{} rgb24 frame): is SOURCE_WIDTH x SOURCE_HEIGHT the size it writes?",
                    self.width,
                    self.height
                ),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).wrap_err("camera: reading the source"),
            }
        }
        Ok(RgbImage::from_raw(self.width, self.height, buf))
    }
}

/// Centre-crops `frame` to the aspect ratio of `width x height` and resizes it to that size (a no-op copy when
/// the sizes agree).
pub fn fit(frame: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = frame.dimensions();
    if (w, h) == (width, height) {
        return frame.clone();
    }
    // Largest crop with the target aspect: w' / h' = width / height.
    let (cw, ch) = if u64::from(w) * u64::from(height) > u64::from(h) * u64::from(width) {
        ((u64::from(h) * u64::from(width) / u64::from(height)) as u32, h)
    } else {
        (w, (u64::from(w) * u64::from(height) / u64::from(width)) as u32)
    };
    let crop = imageops::crop_imm(frame, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    imageops::resize(&crop, width, height, FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_whole_and_a_cut_frame_is_an_error() {
        let bytes: Vec<u8> = (0..2 * 2 * 3 * 2).map(|i| i as u8).collect();
        let mut reader = FrameReader::new(&bytes[..], 2, 2).unwrap();
        assert_eq!(reader.next_frame().unwrap().unwrap().get_pixel(1, 1).0, [9, 10, 11]);
        assert_eq!(reader.next_frame().unwrap().unwrap().get_pixel(0, 0).0, [12, 13, 14]);
        assert!(reader.next_frame().unwrap().is_none());
        let mut cut = FrameReader::new(&bytes[..15], 2, 2).unwrap();
        cut.next_frame().unwrap();
        let err = cut.next_frame().unwrap_err().to_string();
        assert!(err.contains("3 of 12 bytes") && err.contains("SOURCE_WIDTH"), "{err}");
        assert!(FrameReader::new(&bytes[..], 0, 2).is_err());
    }

    #[test]
    fn fit_crops_the_centre_to_the_target_aspect() {
        // 6x2, left and right thirds red, middle green: a 2x2 target keeps the middle.
        let frame = RgbImage::from_fn(6, 2, |x, _| if (2..4).contains(&x) { image::Rgb([0, 255, 0]) } else { image::Rgb([255, 0, 0]) });
        let out = fit(&frame, 2, 2);
        assert_eq!(out.dimensions(), (2, 2));
        assert!(out.pixels().all(|p| p.0 == [0, 255, 0]), "{:?}", out.pixels().collect::<Vec<_>>());
        let tall = fit(&RgbImage::new(4, 8), 8, 8);
        assert_eq!(tall.dimensions(), (8, 8));
    }
}
