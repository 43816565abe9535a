//! Annotated copies of images: boxes and `label score` captions in a built-in 5x7 bitmap font
//! (no font file needed), as [`super::detect_folder`] draws them.

use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut};
use imageproc::rect::Rect;

/// 5x7 glyphs, one byte per row (low 5 bits, MSB = leftmost column).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        ' ' => [0; 7],
        _ => [31, 17, 17, 17, 17, 17, 31],
    }
}

/// A distinct colour per class.
pub fn class_colour(class: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 8] = [
        [255, 56, 56],
        [50, 205, 50],
        [30, 144, 255],
        [255, 157, 0],
        [186, 85, 211],
        [0, 206, 209],
        [255, 20, 147],
        [154, 205, 50],
    ];
    Rgb(PALETTE[class % PALETTE.len()])
}

/// Writes `text` at (x, y) scaled by `scale`, clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: i32, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i32 * 6 + col) * scale + dx;
                        let py = y + row as i32 * scale + dy;
                        if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                            img.put_pixel(px as u32, py as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

/// Draws one box with a caption above it (inside when there is no room).
pub fn draw_detection(img: &mut RgbImage, bbox: [f32; 4], caption: &str, class: usize) {
    let colour = class_colour(class);
    let thickness = ((img.width().max(img.height()) as f32 / 400.0).ceil() as i32).clamp(1, 6);
    let (x1, y1) = (bbox[0].floor() as i32, bbox[1].floor() as i32);
    let (w, h) = ((bbox[2] - bbox[0]).round().max(1.0) as i32, (bbox[3] - bbox[1]).round().max(1.0) as i32);
    for t in 0..thickness {
        let (rw, rh) = ((w - 2 * t).max(1) as u32, (h - 2 * t).max(1) as u32);
        draw_hollow_rect_mut(img, Rect::at(x1 + t, y1 + t).of_size(rw, rh), colour);
    }
    let scale = thickness.max(1);
    let (tw, th) = ((caption.chars().count() as i32 * 6 + 1) * scale, 9 * scale);
    let ty = if y1 - th >= 0 { y1 - th } else { y1 };
    draw_filled_rect_mut(img, Rect::at(x1, ty).of_size(tw as u32, th as u32), colour);
    draw_text(img, x1 + scale, ty + scale, caption, scale, Rgb([255, 255, 255]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_inside_the_image_even_at_the_border() {
        let mut img = RgbImage::new(50, 40);
        draw_detection(&mut img, [-10.0, -5.0, 60.0, 45.0], "tree 0.91", 0);
        draw_detection(&mut img, [10.0, 10.0, 30.0, 30.0], "x", 3);
        assert!(img.pixels().any(|p| *p == class_colour(0)));
        assert!(img.pixels().any(|p| *p == class_colour(3)));
    }
}
