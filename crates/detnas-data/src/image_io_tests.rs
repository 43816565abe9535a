//! Tests of `image_io`: every hostile or unusual input is generated here, with the `image` crate's
//! encoders or as raw bytes (a minimal PNG writer with stored deflate blocks, EXIF segments spliced
//! into encoded files). The two files the `image` crate cannot write (a CMYK JPEG and a
//! progressive JPEG) come from `tools/make_image_fixtures.py` in `tests/data/images/`.

use std::path::PathBuf;

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{Frame, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};

use super::*;

// ---------------------------------------------------------------------------------------------
// Builders

fn decode(bytes: &[u8]) -> Result<LoadedImage, ImageError> {
    decode_image(bytes, "mem.img", &DecodeLimits::default())
}

fn decode_ok(bytes: &[u8]) -> LoadedImage {
    match decode(bytes) {
        Ok(image) => image,
        Err(err) => panic!("expected the image to decode: {err}"),
    }
}

/// Encodes with the `image` crate (PNG, BMP, WebP lossless, GIF).
fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality).encode_image(image).expect("encode test JPEG");
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffff_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() { vec![&[]] } else { data.chunks(65_535).collect() };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).expect("block <= 65535");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).expect("chunk size").to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG written by hand: IHDR with any width/height/depth/colour type (even invalid ones), the
/// `extra` chunks, one IDAT holding `scanlines` (filter bytes included) and IEND.
fn raw_png(width: u32, height: u32, bit_depth: u8, colour_type: u8, extra: &[Vec<u8>], scanlines: &[u8]) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    out.extend(png_chunk(b"IHDR", &ihdr));
    for chunk in extra {
        out.extend_from_slice(chunk);
    }
    out.extend(png_chunk(b"IDAT", &zlib_stored(scanlines)));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A TIFF structure with one IFD entry: Orientation (0x0112, SHORT) = `orientation`.
fn exif_tiff(orientation: u16, big_endian: bool) -> Vec<u8> {
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut tiff = if big_endian { b"MM\x00\x2a".to_vec() } else { b"II\x2a\x00".to_vec() };
    tiff.extend(u32b(8));
    tiff.extend(u16b(1));
    tiff.extend(u16b(0x0112));
    tiff.extend(u16b(3));
    tiff.extend(u32b(1));
    tiff.extend(u16b(orientation));
    tiff.extend([0, 0]);
    tiff.extend(u32b(0));
    tiff
}

/// Inserts a JPEG marker segment right after SOI.
fn insert_jpeg_segment(jpeg: &[u8], marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend([0xff, marker]);
    out.extend(u16::try_from(payload.len() + 2).expect("segment size").to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn with_jpeg_exif(jpeg: &[u8], orientation: u16, big_endian: bool) -> Vec<u8> {
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend(exif_tiff(orientation, big_endian));
    insert_jpeg_segment(jpeg, 0xe1, &payload)
}

/// Inserts a chunk right after IHDR (offset 33) of an encoded PNG.
fn with_png_chunk(png: &[u8], chunk: &[u8]) -> Vec<u8> {
    let mut out = png[..33].to_vec();
    out.extend_from_slice(chunk);
    out.extend_from_slice(&png[33..]);
    out
}

/// Where stored pixel (x, y) of a `w` x `h` image is displayed under EXIF orientation `o`, from
/// the EXIF definitions ("row 0 is the visual top / right / bottom / left, column 0 is ...").
fn displayed(o: u8, x: u32, y: u32, w: u32, h: u32) -> (u32, u32) {
    match o {
        1 => (x, y),
        2 => (w - 1 - x, y),
        3 => (w - 1 - x, h - 1 - y),
        4 => (x, h - 1 - y),
        5 => (y, x),
        6 => (h - 1 - y, x),
        7 => (h - 1 - y, w - 1 - x),
        8 => (y, w - 1 - x),
        _ => unreachable!("orientation {o}"),
    }
}

fn assert_close(actual: Rgb<u8>, expected: [u8; 3], tolerance: u8, what: &str) {
    let close = actual.0.iter().zip(expected).all(|(&a, e)| a.abs_diff(e) <= tolerance);
    assert!(close, "{what}: got {:?}, expected {expected:?} (+-{tolerance})", actual.0);
}

/// A `w` x `h` image of four solid quadrants.
fn quadrants(w: u32, h: u32, colours: [[u8; 3]; 4]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb(colours[usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2)]))
}

const QUAD_RGB: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/images").join(name)
}

/// A 64x64 JPEG with detail everywhere (so every MCU has entropy-coded data).
fn textured_jpeg() -> Vec<u8> {
    let image = RgbImage::from_fn(64, 64, |x, y| {
        Rgb([((x * 37 + y * 11) % 256) as u8, ((x * x + 3 * y) % 256) as u8, ((x ^ y) * 4 % 256) as u8])
    });
    encode_jpeg(&image, 90)
}

// ---------------------------------------------------------------------------------------------
// Files, names, formats

#[test]
fn empty_file_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.jpg");
    std::fs::write(&path, b"").expect("write");
    let err = load_image(&path, &DecodeLimits::default()).expect_err("empty file");
    assert!(matches!(err, ImageError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.jpg"), "{err}");
    assert_eq!(err.name(), path.display().to_string());
    assert!(matches!(decode(&[]), Err(ImageError::Empty { .. })));
}

#[test]
fn text_file_named_jpg_is_unknown_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, "hello, this is not a picture\n").expect("write");
    let err = load_image(&path, &DecodeLimits::default()).expect_err("text file");
    let ImageError::UnknownFormat { name, hint } = &err else { panic!("expected UnknownFormat, got {err:?}") };
    assert!(name.ends_with("photo.jpg"), "{name}");
    assert!(hint.contains("text") && hint.contains("hello, this is not a"), "{hint}");
    assert!(err.to_string().contains("photo.jpg"), "{err}");

    let binary = decode(&[0x00, 0x13, 0x37, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05]).expect_err("binary junk");
    let ImageError::UnknownFormat { hint, .. } = &binary else { panic!("expected UnknownFormat, got {binary:?}") };
    assert!(hint.contains("00 13 37 fe"), "{hint}");
}

#[test]
fn png_named_jpg_loads_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("really_a_png.jpg");
    let image = RgbImage::from_pixel(3, 2, Rgb([10, 200, 30]));
    std::fs::write(&path, encode(&DynamicImage::ImageRgb8(image.clone()), ImageFormat::Png)).expect("write");
    let loaded = load_image(&path, &DecodeLimits::default()).expect("PNG named .jpg");
    assert_eq!(loaded.original_format, SourceFormat::Png);
    assert_eq!(loaded.rgb, image);
    assert_eq!(loaded.orientation, 1);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn missing_file_and_directory_are_io_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.png");
    let err = load_image(&missing, &DecodeLimits::default()).expect_err("missing");
    assert!(matches!(err, ImageError::Io { .. }) && err.to_string().contains("nope.png"), "{err}");
    let err = load_image(dir.path(), &DecodeLimits::default()).expect_err("directory");
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
}

#[test]
fn recognised_but_unsupported_format_is_named() {
    let err = decode(b"II*\x00\x08\x00\x00\x00junkjunk").expect_err("TIFF");
    let ImageError::UnsupportedFormat { format, .. } = &err else { panic!("expected UnsupportedFormat: {err:?}") };
    assert_eq!(format, "Tiff");
}

#[test]
fn file_over_the_memory_limit_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.png");
    let png = encode(&DynamicImage::ImageRgb8(RgbImage::new(32, 32)), ImageFormat::Png);
    std::fs::write(&path, &png).expect("write");
    let limits = DecodeLimits { max_alloc: 50, ..DecodeLimits::default() };
    let err = load_image(&path, &limits).expect_err("over limit");
    assert!(matches!(err, ImageError::FileTooLarge { limit: 50, .. }), "{err:?}");
    assert!(matches!(decode_image(&png, "x", &limits), Err(ImageError::FileTooLarge { .. })));
}

// ---------------------------------------------------------------------------------------------
// Bombs, zero and tiny sizes

#[test]
fn png_bomb_header_is_too_large_not_an_allocation() {
    // 8 signature + 25 IHDR + 24 IDAT (one stored byte) + 12 IEND = 69 bytes for 10^10 pixels.
    let bomb = raw_png(100_000, 100_000, 8, 2, &[], &[0]);
    assert_eq!(bomb.len(), 69);
    let err = decode(&bomb).expect_err("bomb");
    let ImageError::TooLarge { width, height, limit, .. } = err else { panic!("expected TooLarge, got {err:?}") };
    assert_eq!((width, height), (100_000, 100_000));
    assert_eq!(limit, SizeLimit::Dimensions { max_width: 20_000, max_height: 20_000 });

    // With the dimension limits lifted, the memory limit still refuses it before decoding.
    let lax = DecodeLimits { max_width: u32::MAX, max_height: u32::MAX, max_pixels: u64::MAX, max_alloc: 1 << 30 };
    let err = decode_image(&bomb, "bomb.png", &lax).expect_err("bomb, memory");
    let ImageError::TooLarge { limit: SizeLimit::Memory { needed, max_alloc }, .. } = err else {
        panic!("expected TooLarge(Memory), got {err:?}")
    };
    assert_eq!((needed, max_alloc), (30_000_000_000, 1 << 30));

    // Through a file, too.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bomb.jpg");
    std::fs::write(&path, &bomb).expect("write");
    let err = load_image(&path, &DecodeLimits::default()).expect_err("bomb file");
    assert!(err.to_string().contains("bomb.jpg") && err.to_string().contains("100000x100000"), "{err}");
}

#[test]
fn aerial_tile_of_16000_square_passes_the_default_limits() {
    // The header of a 16000 x 16000 RGB PNG (768 MB decoded) with a single byte of pixel data: the
    // default limits let it through to the decoder, which then reports the missing rows. (With
    // the former 1 GiB budget, which also counted an RGB copy, this was `TooLarge`.)
    let tile = raw_png(16_000, 16_000, 8, 2, &[], &[0]);
    let err = decode_image(&tile, "tile.png", &DecodeLimits::default()).expect_err("no pixel data");
    assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    // 20000 x 20000 (the documented side limit) passes too: the message's limit is the real one.
    let edge = raw_png(20_000, 20_000, 8, 2, &[], &[0]);
    let err = decode_image(&edge, "edge.png", &DecodeLimits::default()).expect_err("no pixel data");
    assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    let over = raw_png(20_001, 100, 8, 2, &[], &[0]);
    let err = decode_image(&over, "over.png", &DecodeLimits::default()).expect_err("over the side limit");
    let msg = err.to_string();
    assert!(msg.contains("over.png: 20001x100 image is over the decode limit (max 20000x20000 pixels"), "{msg}");
}

#[test]
fn pixel_and_memory_limits_state_their_numbers() {
    let strip = raw_png(30_000, 15_000, 8, 2, &[], &[0]);
    let wide = DecodeLimits { max_width: 40_000, ..DecodeLimits::default() };
    let msg = decode_image(&strip, "strip.png", &wide).expect_err("over the pixel limit").to_string();
    assert!(msg.contains("450000000 pixels, max 400000000, DecodeLimits::max_pixels"), "{msg}");
    let small = DecodeLimits { max_alloc: 1_000_000, ..DecodeLimits::default() };
    let msg = decode_image(&raw_png(1000, 1000, 8, 2, &[], &[0]), "m.png", &small).expect_err("memory").to_string();
    assert!(msg.contains("needs 3000000 bytes (3.0 MB), max 1000000 bytes (1.0 MB)"), "{msg}");
}

#[test]
fn rgb_decode_without_rotation_needs_no_second_copy() {
    // 3000 x 2000 RGB is 18 MB decoded: a budget of 19 MB suffices because nothing is converted or
    // rotated (the same accounting lets a 768 MB aerial tile decode under the default 3 GiB).
    let (w, h) = (3000usize, 2000usize);
    let mut rows = vec![0u8; h * (1 + 3 * w)];
    for (y, row) in rows.chunks_mut(1 + 3 * w).enumerate() {
        row[1] = y as u8;
    }
    let png = raw_png(w as u32, h as u32, 8, 2, &[], &rows);
    let limits = DecodeLimits { max_alloc: 19_000_000, ..DecodeLimits::default() };
    let image = decode_image(&png, "big.png", &limits).expect("fits the budget");
    assert_eq!(image.rgb.dimensions(), (3000, 2000));
    assert_eq!(image.rgb.get_pixel(0, 1999).0, [(1999 % 256) as u8, 0, 0]);
}

#[test]
fn memory_limit_applies_within_the_dimension_limits() {
    let png = raw_png(1000, 1000, 8, 2, &[], &[0]);
    let limits = DecodeLimits { max_alloc: 1_000_000, ..DecodeLimits::default() };
    let err = decode_image(&png, "mid.png", &limits).expect_err("over memory");
    assert!(matches!(err, ImageError::TooLarge { limit: SizeLimit::Memory { .. }, .. }), "{err:?}");
}

#[test]
fn jpeg_and_gif_headers_are_checked_before_decoding() {
    // A JPEG whose SOF claims 65535 x 65535.
    let mut jpeg = encode_jpeg(&RgbImage::new(16, 16), 90);
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("SOF0");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let err = decode(&jpeg).expect_err("JPEG bomb");
    assert!(matches!(err, ImageError::TooLarge { width: 65535, height: 65535, .. }), "{err:?}");
    // ... and one with zero width.
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x00, 0x10, 0x00, 0x00]);
    let err = decode(&jpeg).expect_err("zero-width JPEG");
    assert!(matches!(err, ImageError::ZeroSize { width: 0, height: 16, .. }), "{err:?}");

    // A GIF whose logical screen is 60000 x 60000.
    let gif = b"GIF89a\x60\xea\x60\xea\x00\x00\x00;";
    let err = decode(gif).expect_err("GIF bomb");
    assert!(matches!(err, ImageError::TooLarge { width: 60000, height: 60000, .. }), "{err:?}");
}

#[test]
fn zero_width_or_height_is_zero_size() {
    let err = decode(&raw_png(0, 10, 8, 2, &[], &[0])).expect_err("zero width");
    assert!(matches!(err, ImageError::ZeroSize { width: 0, height: 10, .. }), "{err:?}");
    let err = decode(&raw_png(10, 0, 8, 0, &[], &[0])).expect_err("zero height");
    assert!(matches!(err, ImageError::ZeroSize { width: 10, height: 0, .. }), "{err:?}");
    let err = decode(b"GIF89a\x00\x00\x00\x00\x00\x00\x00;").expect_err("zero GIF");
    assert!(matches!(err, ImageError::ZeroSize { .. }), "{err:?}");
    // A lossy WebP ("VP8 ") frame header with zero width.
    let mut webp = b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00".to_vec();
    webp.extend([0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x00, 0x08, 0x00]);
    let err = decode(&webp).expect_err("zero WebP");
    assert!(matches!(err, ImageError::ZeroSize { width: 0, height: 8, .. }), "{err:?}");
}

#[test]
fn one_by_one_images_decode() {
    let pixel = Rgb([10, 20, 30]);
    let png = decode_ok(&raw_png(1, 1, 8, 2, &[], &[0, 10, 20, 30]));
    assert_eq!((png.rgb.dimensions(), *png.rgb.get_pixel(0, 0)), ((1, 1), pixel));
    let jpeg = decode_ok(&encode_jpeg(&RgbImage::from_pixel(1, 1, Rgb([200, 100, 50])), 95));
    assert_eq!(jpeg.rgb.dimensions(), (1, 1));
    assert_close(*jpeg.rgb.get_pixel(0, 0), [200, 100, 50], 8, "1x1 JPEG");
    let gif = decode_ok(&encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, pixel)), ImageFormat::Gif));
    assert_eq!(gif.rgb.dimensions(), (1, 1));
    assert_close(*gif.rgb.get_pixel(0, 0), [10, 20, 30], 4, "1x1 GIF");
}

// ---------------------------------------------------------------------------------------------
// Truncated JPEG

#[test]
fn complete_jpeg_has_no_warning_even_with_trailing_bytes() {
    let jpeg = textured_jpeg();
    assert!(decode_ok(&jpeg).warnings.is_empty());
    for tail in [&b"\x00\x00\x00\x00"[..], b"\xff\xff", b"\r\n", b"appended trailer / motion photo data \xff\xd8"] {
        let mut padded = jpeg.clone();
        padded.extend_from_slice(tail);
        let loaded = decode_ok(&padded);
        assert!(loaded.warnings.is_empty(), "tail {tail:?}: {:?}", loaded.warnings);
    }
}

#[test]
fn truncated_jpeg_decodes_with_a_warning_and_fails_in_strict_mode() {
    let jpeg = textured_jpeg();
    let cut = &jpeg[..jpeg.len() * 2 / 3];
    let loaded = decode_ok(cut);
    assert_eq!(loaded.warnings, vec![ImageWarning::TruncatedJpeg]);
    assert_eq!(loaded.rgb.dimensions(), (64, 64));
    let err = loaded.deny_warnings("cut.jpg").expect_err("strict");
    assert!(matches!(err, ImageError::Strict { warning: ImageWarning::TruncatedJpeg, .. }), "{err:?}");
    assert!(err.to_string().contains("cut.jpg") && err.to_string().contains("truncated"), "{err}");

    // Zero padding after the cut does not hide the truncation.
    let mut padded = cut.to_vec();
    padded.extend([0; 64]);
    assert_eq!(decode_ok(&padded).warnings, vec![ImageWarning::TruncatedJpeg]);

    // Nor does an FF D9 inside an earlier segment (an EXIF thumbnail's end marker).
    let with_thumbnail = insert_jpeg_segment(&jpeg, 0xe1, b"Exif\x00\x00fake thumbnail \xff\xd8 ... \xff\xd9");
    assert!(decode_ok(&with_thumbnail).warnings.is_empty());
    let cut = &with_thumbnail[..with_thumbnail.len() * 2 / 3];
    assert_eq!(decode_ok(cut).warnings, vec![ImageWarning::TruncatedJpeg]);

    // A clean image passes strict mode unchanged.
    assert!(decode_ok(&jpeg).deny_warnings("ok.jpg").is_ok());
}

#[test]
fn every_prefix_of_a_jpeg_is_a_warning_or_an_error_never_a_panic() {
    let jpeg = encode_jpeg(&quadrants(16, 16, QUAD_RGB), 80);
    for len in 1..jpeg.len() {
        match decode(&jpeg[..len]) {
            Ok(loaded) => assert_eq!(loaded.warnings, vec![ImageWarning::TruncatedJpeg], "prefix {len}"),
            Err(ImageError::Decode { reason, .. }) => {
                assert!(!reason.contains("panicked"), "prefix {len}: {reason}")
            }
            Err(ImageError::UnknownFormat { .. }) => assert!(len < 3, "prefix {len}"),
            Err(other) => panic!("prefix {len}: unexpected {other:?}"),
        }
    }
}

#[test]
fn truncated_progressive_jpeg_is_reported() {
    let bytes = std::fs::read(fixture("progressive.jpg")).expect("fixture (tools/make_image_fixtures.py)");
    let full = load_image(&fixture("progressive.jpg"), &DecodeLimits::default()).expect("progressive");
    assert!(full.warnings.is_empty());
    for (i, (x, y)) in [(8, 8), (24, 8), (8, 24), (24, 24)].into_iter().enumerate() {
        assert_close(*full.rgb.get_pixel(x, y), QUAD_RGB[i], 12, "progressive quadrant");
    }
    match decode(&bytes[..bytes.len() * 3 / 4]) {
        Ok(loaded) => assert_eq!(loaded.warnings, vec![ImageWarning::TruncatedJpeg]),
        Err(err) => assert!(matches!(err, ImageError::Decode { .. }), "{err:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation

#[test]
fn png_exif_orientation_1_to_8_moves_every_pixel_to_its_displayed_place() {
    let (w, h) = (5_u32, 3_u32);
    let stored = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 50) as u8, (y * 100) as u8, 200]));
    let png = encode(&DynamicImage::ImageRgb8(stored.clone()), ImageFormat::Png);
    for big_endian in [true, false] {
        for o in 1..=8_u8 {
            let tagged = with_png_chunk(&png, &png_chunk(b"eXIf", &exif_tiff(u16::from(o), big_endian)));
            let loaded = decode_ok(&tagged);
            assert_eq!(loaded.orientation, o);
            assert!(loaded.warnings.is_empty());
            let expected_dims = if o >= 5 { (h, w) } else { (w, h) };
            assert_eq!(loaded.rgb.dimensions(), expected_dims, "orientation {o}");
            for (x, y, pixel) in stored.enumerate_pixels() {
                let (dx, dy) = displayed(o, x, y, w, h);
                assert_eq!(loaded.rgb.get_pixel(dx, dy), pixel, "orientation {o}: stored ({x},{y}) -> ({dx},{dy})");
            }
        }
    }
}

#[test]
fn jpeg_exif_orientation_1_to_8_moves_marked_blocks() {
    let (w, h) = (64_u32, 32_u32);
    let jpeg = encode_jpeg(&quadrants(w, h, QUAD_RGB), 95);
    let centres = [(16, 8), (48, 8), (16, 24), (48, 24)];
    for big_endian in [true, false] {
        for o in 1..=8_u8 {
            let loaded = decode_ok(&with_jpeg_exif(&jpeg, u16::from(o), big_endian));
            assert_eq!(loaded.orientation, o);
            assert_eq!(loaded.rgb.dimensions(), if o >= 5 { (h, w) } else { (w, h) }, "orientation {o}");
            for (i, &(x, y)) in centres.iter().enumerate() {
                let (dx, dy) = displayed(o, x, y, w, h);
                assert_close(*loaded.rgb.get_pixel(dx, dy), QUAD_RGB[i], 24, &format!("orientation {o}, block {i}"));
            }
        }
    }
}

#[test]
fn out_of_range_orientation_is_ignored() {
    let png = encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 2, Rgb([1, 2, 3]))), ImageFormat::Png);
    for value in [0_u16, 9, 0xffff] {
        let loaded = decode_ok(&with_png_chunk(&png, &png_chunk(b"eXIf", &exif_tiff(value, true))));
        assert_eq!((loaded.orientation, loaded.rgb.dimensions()), (1, (4, 2)), "value {value}");
    }
}

// ---------------------------------------------------------------------------------------------
// Colour types and bit depths: one path to RGB8

#[test]
fn gray_and_gray_alpha_8_and_16_bit() {
    let gray = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 60 + y * 7) as u8]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png));
    for (x, y, p) in gray.enumerate_pixels() {
        assert_eq!(loaded.rgb.get_pixel(x, y).0, [p.0[0]; 3]);
    }

    // Alpha is dropped, not composited: a fully transparent pixel keeps its gray value.
    let gray_alpha = ImageBuffer::from_fn(3, 2, |x, y| LumaA([(x * 60 + y * 7) as u8, (x * 120) as u8]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageLumaA8(gray_alpha.clone()), ImageFormat::Png));
    for (x, y, p) in gray_alpha.enumerate_pixels() {
        assert_eq!(loaded.rgb.get_pixel(x, y).0, [p.0[0]; 3], "({x},{y}) alpha {}", p.0[1]);
    }

    let gray16 = ImageBuffer::from_fn(2, 2, |x, y| Luma([[0_u16, 0x1234, 0x8080, 0xffff][(x + 2 * y) as usize]]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageLuma16(gray16), ImageFormat::Png));
    let expected = [0_u8, 18, 128, 255];
    for (x, y, p) in loaded.rgb.enumerate_pixels() {
        assert_eq!(p.0, [expected[(x + 2 * y) as usize]; 3]);
    }

    let gray_alpha16 = ImageBuffer::from_pixel(2, 1, LumaA([0x4000_u16, 0]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageLumaA16(gray_alpha16), ImageFormat::Png));
    assert_eq!(loaded.rgb.get_pixel(1, 0).0, [64; 3]);
}

#[test]
fn rgb16_rgba8_rgba16() {
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_pixel(2, 2, Rgb([0xffff, 0x8080, 0x1234]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png));
    assert!(loaded.rgb.pixels().all(|p| p.0 == [255, 128, 18]));

    let rgba = RgbaImage::from_fn(2, 1, |x, _| if x == 0 { Rgba([200, 100, 50, 0]) } else { Rgba([1, 2, 3, 255]) });
    let loaded = decode_ok(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    assert_eq!(loaded.rgb.get_pixel(0, 0).0, [200, 100, 50], "transparent pixel keeps its colour");
    assert_eq!(loaded.rgb.get_pixel(1, 0).0, [1, 2, 3]);

    let rgba16: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::from_pixel(1, 2, Rgba([0, 0x0101, 0xfefe, 0x7777]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageRgba16(rgba16), ImageFormat::Png));
    assert!(loaded.rgb.pixels().all(|p| p.0 == [0, 1, 254]));
}

#[test]
fn palette_and_low_bit_depth_png() {
    // 8-bit palette with a transparent entry: 2x2, indices 0..3, one scanline per row (filter 0).
    let plte = png_chunk(b"PLTE", &[255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
    let trns = png_chunk(b"tRNS", &[255, 0]);
    let png = raw_png(2, 2, 8, 3, &[plte.clone(), trns], &[0, 0, 1, 0, 2, 3]);
    let loaded = decode_ok(&png);
    let expected = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
    for (x, y, p) in loaded.rgb.enumerate_pixels() {
        assert_eq!(p.0, expected[(x + 2 * y) as usize], "({x},{y})");
    }

    // 2-bit palette: one row of four pixels packed in one byte.
    let loaded = decode_ok(&raw_png(4, 1, 2, 3, &[plte], &[0, 0b00_01_10_11]));
    let row: Vec<[u8; 3]> = loaded.rgb.pixels().map(|p| p.0).collect();
    assert_eq!(row, expected.to_vec());

    // 1-bit grayscale: 8 pixels in one byte.
    let loaded = decode_ok(&raw_png(8, 1, 1, 0, &[], &[0, 0b1011_0000]));
    let row: Vec<u8> = loaded.rgb.pixels().map(|p| p.0[0]).collect();
    assert_eq!(row, vec![255, 0, 255, 255, 0, 0, 0, 0]);
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    let loaded = load_image(&fixture("cmyk.jpg"), &DecodeLimits::default()).expect("CMYK fixture");
    assert_eq!((loaded.original_format, loaded.rgb.dimensions()), (SourceFormat::Jpeg, (32, 32)));
    assert!(loaded.warnings.is_empty());
    // Cyan, magenta / yellow, white.
    let expected = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [255, 255, 255]];
    for (i, (x, y)) in [(8, 8), (24, 8), (8, 24), (24, 24)].into_iter().enumerate() {
        assert_close(*loaded.rgb.get_pixel(x, y), expected[i], 16, "CMYK quadrant");
    }
}

#[test]
fn animated_gif_gives_its_first_frame() {
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        encoder.set_repeat(Repeat::Infinite).expect("repeat");
        let frames = [Rgba([255, 0, 0, 255]), Rgba([0, 0, 255, 255])]
            .map(|colour| Frame::new(RgbaImage::from_pixel(6, 4, colour)));
        encoder.encode_frames(frames).expect("encode GIF");
    }
    let loaded = decode_ok(&gif);
    assert_eq!((loaded.original_format, loaded.rgb.dimensions()), (SourceFormat::Gif, (6, 4)));
    for p in loaded.rgb.pixels() {
        assert_close(*p, [255, 0, 0], 4, "first frame");
    }
}

#[test]
fn bmp_and_lossless_webp_round_trip_exactly() {
    let image = RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 30) as u8, (y * 50) as u8, ((x + y) * 9) as u8]));
    for format in [ImageFormat::Bmp, ImageFormat::WebP, ImageFormat::Png] {
        let loaded = decode_ok(&encode(&DynamicImage::ImageRgb8(image.clone()), format));
        assert_eq!(loaded.original_format.to_image(), format);
        assert_eq!(loaded.rgb, image, "{format:?}");
    }
    // RGBA WebP: alpha dropped.
    let rgba = RgbaImage::from_pixel(3, 3, Rgba([9, 8, 7, 0]));
    let loaded = decode_ok(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::WebP));
    assert!(loaded.rgb.pixels().all(|p| p.0 == [9, 8, 7]));
}

// ---------------------------------------------------------------------------------------------
// Header parsers agree with the decoders

#[test]
fn header_probe_matches_decoder_dimensions() {
    let image = DynamicImage::ImageRgb8(RgbImage::new(37, 23));
    for format in [ImageFormat::Png, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::WebP] {
        let bytes = encode(&image, format);
        let sniffed = SourceFormat::from_image(format).expect("supported");
        assert_eq!(probe_dimensions(sniffed, &bytes), Some((37, 23)), "{format:?}");
    }
    let jpeg = encode_jpeg(&RgbImage::new(37, 23), 90);
    let scan = scan_jpeg(&jpeg);
    assert_eq!(scan, JpegScan { frame_size: Some((37, 23)), eoi: true, malformed: false });

    // Extended (VP8X) and lossy (VP8) WebP headers, written by hand.
    let mut vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00".to_vec();
    vp8x.extend([99, 0, 0, 49, 0, 0]);
    assert_eq!(probe_dimensions(SourceFormat::WebP, &vp8x), Some((100, 50)));
    let mut vp8 = b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00".to_vec();
    vp8.extend([0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    assert_eq!(probe_dimensions(SourceFormat::WebP, &vp8), Some((320, 240)));
    // Too short or malformed headers leave the decision to the decoder.
    assert_eq!(probe_dimensions(SourceFormat::Png, &[0x89, b'P', b'N', b'G']), None);
    assert_eq!(probe_dimensions(SourceFormat::WebP, b"RIFF\x00\x00\x00\x00WEBPJUNK"), None);
}

#[test]
fn warnings_and_limits_serialise_for_reports() {
    let json = serde_json::to_string(&ImageWarning::TruncatedJpeg).expect("json");
    assert_eq!(json, r#"{"kind":"truncated_jpeg"}"#);
    let json = serde_json::to_string(&SourceFormat::WebP).expect("json");
    assert_eq!(json, r#""webp""#);
    let limits = DecodeLimits::default();
    let l = (limits.max_width, limits.max_height, limits.max_pixels, limits.max_alloc);
    assert_eq!(l, (20_000, 20_000, 400_000_000, 3 << 30));
}

#[test]
fn jpeg_scan_falls_back_to_the_tail_on_damaged_structure() {
    // Junk where a marker must be: the walk gives up, the tail decides.
    let damaged = b"\xff\xd8\xff\xe0\x00\x04\x00\x00junk\xff\xda\x00\x02\xff\xd9\x00\x00";
    let scan = scan_jpeg(damaged);
    assert!(scan.malformed && !scan.eoi);
    assert!(scan.has_eoi(damaged));
    let cut = &damaged[..damaged.len() - 4];
    assert!(!scan_jpeg(cut).has_eoi(cut));
    // A well-formed walk that runs out of data is truncated, whatever the last bytes are.
    let clean_cut = b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xda\x00\x02\x12\x34\xff\x00";
    let scan = scan_jpeg(clean_cut);
    assert!(!scan.malformed && !scan.has_eoi(clean_cut));
    // Restart markers and stuffed bytes inside entropy-coded data are not the end.
    let with_restarts = b"\xff\xd8\xff\xda\x00\x02\x01\xff\x00\x02\xff\xd0\x03\xff\xff\xd1\x04\xff\xd9";
    assert!(scan_jpeg(with_restarts).eoi);
}

// ---------------------------------------------------------------------------------------------
// Reduced-scale JPEG decoding

#[test]
fn a_large_jpeg_is_decoded_at_the_dct_scale_that_still_covers_the_fit() {
    let limits = DecodeLimits::default();
    let quads = quadrants(2400, 1600, QUAD_RGB);
    let jpeg = encode_jpeg(&quads, 90);
    // letterboxed into 320x320 the image shrinks by 0.133: 1/4 still covers 320x213, 1/8 would not
    let fit = decode_image_fit(&jpeg, "big.jpg", &limits, Some((320, 320))).unwrap();
    assert_eq!(fit.rgb.dimensions(), (600, 400));
    assert_eq!(fit.full_size, (2400, 1600));
    for (x, y, q) in [(150, 100, 0), (450, 100, 1), (150, 300, 2), (450, 300, 3)] {
        assert_close(*fit.rgb.get_pixel(x, y), QUAD_RGB[q], 6, "a quadrant's colour at 1/4 scale");
    }
    let whole = decode_image(&jpeg, "big.jpg", &limits).unwrap();
    assert_eq!((whole.rgb.dimensions(), whole.full_size), ((2400, 1600), (2400, 1600)));
    // under twice the fit, under the pixel floor, or without a fit: the full decode
    let near = encode_jpeg(&quadrants(2000, 2000, QUAD_RGB), 90);
    assert_eq!(decode_image_fit(&near, "n.jpg", &limits, Some((1200, 1200))).unwrap().rgb.dimensions(), (2000, 2000));
    let small = encode_jpeg(&quadrants(1600, 1200, QUAD_RGB), 90);
    assert_eq!(decode_image_fit(&small, "s.jpg", &limits, Some((320, 320))).unwrap().rgb.dimensions(), (1600, 1200));
    assert_eq!(decode_image_fit(&jpeg, "big.jpg", &limits, None).unwrap().rgb.dimensions(), (2400, 1600));
    // other formats are never reduced
    let png = encode(&DynamicImage::ImageRgb8(quads), ImageFormat::Png);
    let p = decode_image_fit(&png, "big.png", &limits, Some((320, 320))).unwrap();
    assert_eq!((p.rgb.dimensions(), p.full_size), ((2400, 1600), (2400, 1600)));
}

#[test]
fn reduced_decoding_keeps_exif_orientation_grayscale_and_the_truncation_warning() {
    let limits = DecodeLimits::default();
    let quads = quadrants(2800, 1400, QUAD_RGB);
    let rotated = with_jpeg_exif(&encode_jpeg(&quads, 90), 6, false);
    let r = decode_image_fit(&rotated, "rot.jpg", &limits, Some((320, 320))).unwrap();
    assert_eq!((r.orientation, r.full_size), (6, (1400, 2800)));
    assert_eq!(r.rgb.dimensions(), (175, 350), "1/8 of the displayed size");
    let whole = decode_image(&rotated, "rot.jpg", &limits).unwrap();
    let (w, h) = r.rgb.dimensions();
    for (x, y) in [(10, 10), (w - 10, 10), (10, h - 10), (w - 10, h - 10)] {
        let full = whole.rgb.get_pixel(x * 8, y * 8).0;
        assert_close(*r.rgb.get_pixel(x, y), full, 8, "rotated like the full decode");
    }
    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(2048, 2048, |x, _| image::Luma([(x / 8) as u8])));
    let g = decode_image_fit(&encode(&gray, ImageFormat::Jpeg), "g.jpg", &limits, Some((256, 256))).unwrap();
    assert_eq!(g.rgb.dimensions(), (256, 256));
    let px = g.rgb.get_pixel(128, 128).0;
    assert!(px[0] == px[1] && px[1] == px[2] && px[0].abs_diff(128) <= 3, "{px:?}");
    // a truncated JPEG takes the full decode, which reports it
    let jpeg = encode_jpeg(&quads, 90);
    let cut = decode_image_fit(&jpeg[..jpeg.len() * 2 / 3], "cut.jpg", &limits, Some((320, 320))).unwrap();
    assert_eq!(cut.rgb.dimensions(), (2800, 1400));
    assert_eq!(cut.warnings, vec![ImageWarning::TruncatedJpeg]);
}
