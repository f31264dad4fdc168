//! The masks and keypoints drawn over a frame (`glue keypoints`' overlay).

use eyre::ensure;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use super::{Keypoint, Mask};
use crate::viz::{PointStyle, draw_points, instance_colour};

/// The colour of object `i` in overlays (the palette of `viz`'s instance tints).
pub fn object_colour(object: usize) -> Rgb<u8> {
    instance_colour((object % 255) as u8 + 1)
}

/// `image` with each mask tinted in its object's colour (35%) and the keypoints drawn as discs of that colour
/// with a dark outline, upscaled `scale` times (nearest neighbour).
pub fn draw_overlay(image: &RgbImage, masks: &[Mask], keypoints: &[Keypoint], scale: u32) -> eyre::Result<RgbImage> {
    ensure!(scale >= 1, "overlay: scale must be at least 1");
    let mut img = image.clone();
    for (i, mask) in masks.iter().enumerate() {
        ensure!(mask.dimensions() == img.dimensions(), "overlay: mask {i} does not match the image size");
        let tint = object_colour(i).0;
        for (x, y) in mask.pixels() {
            let p = img.get_pixel_mut(x, y);
            p.0 = std::array::from_fn(|c| ((u16::from(p.0[c]) * 65 + u16::from(tint[c]) * 35) / 100) as u8);
        }
    }
    if scale > 1 {
        img = imageops::resize(&img, img.width() * scale, img.height() * scale, FilterType::Nearest);
    }
    let s = scale as f32;
    for (object, _) in masks.iter().enumerate() {
        let points: Vec<[f32; 3]> =
            keypoints.iter().filter(|k| k.object == object).map(|k| [k.x * s, k.y * s, 1.0]).collect();
        let style = PointStyle { visible: object_colour(object), radius: 0.5 + s, ..PointStyle::KEYPOINTS };
        draw_points(&mut img, &points, &style);
    }
    Ok(img)
}
