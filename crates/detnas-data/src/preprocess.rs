//! Letterbox pre-processing into the network input tensor (the contract recorded in the model).

use detnas_core::detector::boxes::Letterbox;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// Fills `out` (length `3 * height * width`, NCHW planes, RGB 0-255) with `image` letterboxed into
/// `width x height`: scaled keeping its aspect ratio (bilinear), top-left aligned, the rest set to
/// `pad_value`. Returns the geometry needed to map boxes back to the image.
///
/// Resampling is SIMD bilinear convolution with support widened when downscaling (the same filter
/// family as Pillow's `BILINEAR`).
pub fn letterbox_into(image: &RgbImage, width: u32, height: u32, pad_value: f32, out: &mut [f32]) -> Letterbox {
    let plane = (width * height) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer must hold 3 x {height} x {width} values");
    let lb = Letterbox::fit(image.width().max(1), image.height().max(1), width, height);
    let resized;
    let src: &[u8] = if (image.width(), image.height()) == (lb.resized_w, lb.resized_h) {
        image.as_raw()
    } else {
        resized = resize_rgb(image, lb.resized_w, lb.resized_h);
        resized.buffer()
    };
    out.fill(pad_value);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let w = width as usize;
    let rw = lb.resized_w as usize;
    for (y, row) in src.chunks_exact(rw * 3).enumerate() {
        let base = y * w;
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[base + x] = px[0] as f32;
            g[base + x] = px[1] as f32;
            b[base + x] = px[2] as f32;
        }
    }
    lb
}

/// Bilinear resize of an RGB8 image (any aspect change); the result's buffer is RGB8 rows.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> Image<'static> {
    let src = ImageRef::new(image.width(), image.height(), image.as_raw(), PixelType::U8x3)
        .expect("an RgbImage buffer always matches its dimensions");
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&src, &mut dst, &options).expect("RGB8 to RGB8 resize is supported");
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_bottom_right_and_keeps_channels() {
        let mut img = RgbImage::new(4, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([10 * x as u8, 100 + y as u8, 200]);
        }
        let mut buf = vec![0.0; 3 * 8 * 8];
        let lb = letterbox_into(&img, 8, 8, 7.0, &mut buf);
        assert_eq!((lb.resized_w, lb.resized_h), (8, 4));
        assert_eq!(buf[8 * 5], 7.0, "row 5 is padding");
        assert_eq!(buf[2 * 64], 200.0, "blue plane");
        assert!(buf[0] < buf[7], "red grows with x");
    }

    #[test]
    fn exact_size_is_copied_without_resampling() {
        let img = RgbImage::from_fn(3, 3, |x, y| image::Rgb([(x + 3 * y) as u8, 0, 0]));
        let mut buf = vec![0.0; 27];
        letterbox_into(&img, 3, 3, 0.0, &mut buf);
        assert_eq!(&buf[..9], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    }
}
