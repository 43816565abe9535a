//! One robust image-loading path for the detection SDK and the trainer: bytes or a file in, an
//! 8-bit RGB image in displayed orientation out, or a typed error naming the file and the problem.
//!
//! Contract of [`load_image`] / [`decode_image`] (the same path; the first reads the file):
//!
//! - **Format from content.** The format is sniffed from the first bytes, never taken from the
//!   name: a PNG named `.jpg` loads; a text file named `.jpg` is [`ImageError::UnknownFormat`].
//!   Formats decoded: PNG, JPEG, GIF, BMP, WebP ([`SourceFormat`]); another recognised format
//!   (TIFF, ...) is [`ImageError::UnsupportedFormat`].
//! - **No decompression bombs.** Before any pixel is decoded the dimensions are read from the
//!   header by this module's own parser and checked against [`DecodeLimits`] (zero width or
//!   height: [`ImageError::ZeroSize`]; over the limits: [`ImageError::TooLarge`]); the decoder's
//!   own header is checked again, with the memory the decode needs, and the decoder is given
//!   explicit `image::Limits` (the EXIF-aware `ImageReader::into_decoder` path of `image` 0.25
//!   does not reserve the output buffer against the memory limit by itself). A 69-byte PNG
//!   claiming 100000 x 100000 pixels is an error, never an allocation. A decoder that panics on
//!   hostile data becomes [`ImageError::Decode`] (with `panic = "unwind"`, the default).
//! - **EXIF orientation.** Orientation 1-8 (JPEG APP1, PNG eXIf, WebP EXIF) is applied, so pixels,
//!   and boxes computed on them, are in displayed orientation; dimensions swap for 5-8.
//!   [`LoadedImage::orientation`] says which value was applied (1 when there is none).
//! - **One colour path.** Every colour type and bit depth (gray, gray+alpha, 1-16 bit, RGB(A),
//!   palette, CMYK JPEG, the first frame of an animated GIF) becomes an [`RgbImage`]. 16-bit
//!   samples are rounded to 8 bits (`(v + 128) / 257`). **Alpha is dropped, not composited**: a
//!   transparent pixel keeps its stored colour (the behaviour of Pillow's `convert("RGB")` and
//!   OpenCV's `IMREAD_COLOR`, so results match Python pipelines). Colour profiles are not applied.
//! - **Integrity warnings.** Problems a decoder papers over are reported in
//!   [`LoadedImage::warnings`] ([`ImageWarning::TruncatedJpeg`]: JPEG data ending before its
//!   end-of-image marker, which decoders fill silently). Callers in a strict mode turn them into
//!   errors with [`LoadedImage::deny_warnings`].

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::Serialize;

/// Resource limits applied to every decode. Exceeding one is a per-image error, never an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels (as stored, before orientation).
    pub max_width: u32,
    /// Largest accepted height in pixels (as stored, before orientation).
    pub max_height: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
    /// Largest number of bytes one decode may hold at once: the encoded file, and separately the
    /// decoded buffer in the decoder's layout, plus one RGB8 copy when the image needs a colour
    /// conversion or a rotation.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 20000 pixels per side, 400 megapixels and 3 GiB: camera photos and large aerial tiles
    /// (16000 x 16000 RGB is 768 MB decoded) load; a decompression bomb does not. 3 GiB holds a
    /// 400-megapixel RGBA decode (1.6 GB) plus its RGB copy (1.2 GB).
    fn default() -> Self {
        DecodeLimits { max_width: 20_000, max_height: 20_000, max_pixels: 400_000_000, max_alloc: 3 << 30 }
    }
}

impl DecodeLimits {
    /// The same limits in the `image` crate's terms, given to the decoder.
    fn to_image_limits(self) -> Limits {
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }

    /// Checks a header's dimensions: zero, over the dimension limits, or an RGB8 output alone
    /// over the memory limit.
    fn check_dimensions(&self, name: &str, width: u32, height: u32) -> Result<(), ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize { name: name.to_owned(), width, height });
        }
        if width > self.max_width || height > self.max_height {
            let limit = SizeLimit::Dimensions { max_width: self.max_width, max_height: self.max_height };
            return Err(ImageError::TooLarge { name: name.to_owned(), width, height, limit });
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            let limit = SizeLimit::Pixels { pixels, max_pixels: self.max_pixels };
            return Err(ImageError::TooLarge { name: name.to_owned(), width, height, limit });
        }
        self.check_memory(name, width, height, rgb8_bytes(width, height))
    }

    fn check_memory(&self, name: &str, width: u32, height: u32, needed: u64) -> Result<(), ImageError> {
        if needed > self.max_alloc {
            let limit = SizeLimit::Memory { needed, max_alloc: self.max_alloc };
            return Err(ImageError::TooLarge { name: name.to_owned(), width, height, limit });
        }
        Ok(())
    }
}

fn rgb8_bytes(width: u32, height: u32) -> u64 {
    u64::from(width).saturating_mul(u64::from(height)).saturating_mul(3)
}

/// The encoded format of a loaded image, as sniffed from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF (the first frame).
    Gif,
    /// BMP.
    Bmp,
    /// WebP.
    WebP,
}

impl SourceFormat {
    /// Lower-case short name: `png`, `jpeg`, `gif`, `bmp`, `webp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Png => "png",
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Gif => "gif",
            SourceFormat::Bmp => "bmp",
            SourceFormat::WebP => "webp",
        }
    }

    fn from_image(format: ImageFormat) -> Option<Self> {
        Some(match format {
            ImageFormat::Png => SourceFormat::Png,
            ImageFormat::Jpeg => SourceFormat::Jpeg,
            ImageFormat::Gif => SourceFormat::Gif,
            ImageFormat::Bmp => SourceFormat::Bmp,
            ImageFormat::WebP => SourceFormat::WebP,
            _ => return None,
        })
    }

    fn to_image(self) -> ImageFormat {
        match self {
            SourceFormat::Png => ImageFormat::Png,
            SourceFormat::Jpeg => ImageFormat::Jpeg,
            SourceFormat::Gif => ImageFormat::Gif,
            SourceFormat::Bmp => ImageFormat::Bmp,
            SourceFormat::WebP => ImageFormat::WebP,
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in an image that still decoded. Callers in a strict mode fail on any warning
/// ([`LoadedImage::deny_warnings`]); otherwise they report it and use the pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageWarning {
    /// The JPEG data ends before its end-of-image marker (FF D9); bytes after the marker are
    /// allowed. The decoder filled the missing part, so the lower part of the image (or the later
    /// passes of a progressive JPEG) does not come from the file.
    TruncatedJpeg,
    /// The EXIF metadata could not be read; orientation 1 (none) was assumed.
    UnreadableExif {
        /// The EXIF reader's error, as text.
        reason: String,
    },
}

impl fmt::Display for ImageWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageWarning::TruncatedJpeg => {
                f.write_str("truncated JPEG: no end-of-image marker, missing pixels were filled by the decoder")
            }
            ImageWarning::UnreadableExif { reason } => {
                write!(f, "unreadable EXIF metadata ({reason}), orientation ignored")
            }
        }
    }
}

/// Which limit an image exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SizeLimit {
    /// Width or height over [`DecodeLimits::max_width`] / [`DecodeLimits::max_height`].
    Dimensions {
        /// The largest width allowed.
        max_width: u32,
        /// The largest height allowed.
        max_height: u32,
    },
    /// `width * height` over [`DecodeLimits::max_pixels`].
    Pixels {
        /// The image's pixels.
        pixels: u64,
        /// The most pixels allowed.
        max_pixels: u64,
    },
    /// Decoding would need `needed` bytes, over [`DecodeLimits::max_alloc`].
    Memory {
        /// Bytes decoding needs.
        needed: u64,
        /// The most bytes allowed.
        max_alloc: u64,
    },
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeLimit::Dimensions { max_width, max_height } => {
                write!(f, "max {max_width}x{max_height} pixels, DecodeLimits::max_width/max_height")
            }
            SizeLimit::Pixels { pixels, max_pixels } => {
                write!(f, "{pixels} pixels, max {max_pixels}, DecodeLimits::max_pixels")
            }
            SizeLimit::Memory { needed, max_alloc } => {
                let mb = |b: u64| b as f64 / 1e6;
                write!(
                    f,
                    "decoding needs {needed} bytes ({:.1} MB), max {max_alloc} bytes ({:.1} MB), DecodeLimits::max_alloc",
                    mb(*needed),
                    mb(*max_alloc)
                )
            }
        }
    }
}

/// Why an image could not be loaded. Every variant names the file (`name`: the path as given to
/// [`load_image`], or the name given to [`decode_image`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be opened or read.
    #[error("{name}: cannot read image: {source}")]
    Io {
        /// The image's name (its path, or what the caller called the bytes).
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Zero bytes.
    #[error("{name}: empty file (0 bytes), not an image")]
    Empty {
        /// The image's name.
        name: String,
    },
    /// The content matches no known image signature (whatever the file's extension says).
    #[error("{name}: not an image: unknown format ({hint}); supported: {}", supported_formats())]
    UnknownFormat {
        /// The image's name.
        name: String,
        /// What the first bytes look like.
        hint: String,
    },
    /// A recognised image format this build does not decode.
    #[error("{name}: {format} images are not supported; supported: {}", supported_formats())]
    UnsupportedFormat {
        /// The image's name.
        name: String,
        /// The format recognised.
        format: String,
    },
    /// The encoded data alone is over [`DecodeLimits::max_alloc`].
    #[error("{name}: file is {bytes} bytes, over the decode limit of {limit} bytes")]
    FileTooLarge {
        /// The image's name.
        name: String,
        /// Size of the encoded data.
        bytes: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The header declares an image over the limits (a decompression bomb or a huge scan).
    #[error("{name}: {width}x{height} image is over the decode limit ({limit})")]
    TooLarge {
        /// The image's name.
        name: String,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit it is over.
        limit: SizeLimit,
    },
    /// The header declares zero width or height.
    #[error("{name}: header declares a zero-size image ({width}x{height})")]
    ZeroSize {
        /// The image's name.
        name: String,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The decoder refused a resource limit of its own (internal buffers).
    #[error("{name}: decoder resource limit exceeded: {reason}")]
    LimitExceeded {
        /// The image's name.
        name: String,
        /// The decoder's message.
        reason: String,
    },
    /// The data is corrupt or uses a feature the decoder does not support.
    #[error("{name}: cannot decode {format} image: {reason}")]
    Decode {
        /// The image's name.
        name: String,
        /// The format being decoded.
        format: SourceFormat,
        /// The decoder's message.
        reason: String,
    },
    /// A warning turned into an error by [`LoadedImage::deny_warnings`] (strict mode).
    #[error("{name}: {warning} (strict mode)")]
    Strict {
        /// The image's name.
        name: String,
        /// The warning.
        warning: ImageWarning,
    },
}

impl ImageError {
    /// The file (or given name) the error is about.
    pub fn name(&self) -> &str {
        match self {
            ImageError::Io { name, .. }
            | ImageError::Empty { name }
            | ImageError::UnknownFormat { name, .. }
            | ImageError::UnsupportedFormat { name, .. }
            | ImageError::FileTooLarge { name, .. }
            | ImageError::TooLarge { name, .. }
            | ImageError::ZeroSize { name, .. }
            | ImageError::LimitExceeded { name, .. }
            | ImageError::Decode { name, .. }
            | ImageError::Strict { name, .. } => name,
        }
    }
}

/// A decoded image, ready for preprocessing.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// 8-bit RGB pixels in displayed orientation (EXIF orientation applied, alpha dropped).
    pub rgb: RgbImage,
    /// The format sniffed from the content.
    pub original_format: SourceFormat,
    /// The EXIF orientation value (1-8) that was applied; 1 when the image has none.
    pub orientation: u8,
    /// Problems found in data that still decoded; empty for a clean image.
    pub warnings: Vec<ImageWarning>,
    /// Width and height of the full-resolution image in displayed orientation: `rgb`'s size,
    /// unless [`decode_image_fit`] decoded a JPEG at a reduced scale (then `rgb` is 1/2, 1/4 or
    /// 1/8 of it, rounded up).
    pub full_size: (u32, u32),
}

impl LoadedImage {
    /// Strict mode: the image unchanged if it has no warning, else [`ImageError::Strict`] with the
    /// first warning, naming `name`.
    pub fn deny_warnings(self, name: &str) -> Result<Self, ImageError> {
        match self.warnings.into_iter().next() {
            None => Ok(LoadedImage { warnings: Vec::new(), ..self }),
            Some(warning) => Err(ImageError::Strict { name: name.to_owned(), warning }),
        }
    }
}

/// Loads the image file at `path` (see the module docs for the contract). Errors name the path
/// as given. A file over `limits.max_alloc` bytes is refused before it is read.
pub fn load_image(path: &Path, limits: &DecodeLimits) -> Result<LoadedImage, ImageError> {
    let name = path.display().to_string();
    let bytes = read_capped(path, &name, limits.max_alloc)?;
    decode_image(&bytes, &name, limits)
}

/// Decodes an in-memory image (the path of [`load_image`]); `name` is used in errors only.
pub fn decode_image(bytes: &[u8], name: &str, limits: &DecodeLimits) -> Result<LoadedImage, ImageError> {
    decode_image_fit(bytes, name, limits, None)
}

/// [`load_image`] for an image that will be shrunk to fit `fit` (width, height), as a letterbox
/// does: see [`decode_image_fit`].
pub fn load_image_fit(path: &Path, limits: &DecodeLimits, fit: Option<(u32, u32)>) -> Result<LoadedImage, ImageError> {
    let name = path.display().to_string();
    let bytes = read_capped(path, &name, limits.max_alloc)?;
    decode_image_fit(&bytes, &name, limits, fit)
}

/// Smallest JPEG (width x height) [`decode_image_fit`] decodes at a reduced scale: under it the
/// full decode (SIMD) plus the resize is as fast as the reduced decode (measured on the shipped
/// model's 320x320 input: 1920x1080 breaks even, 4000x3000 takes 21.5 instead of 39.2 ms).
pub const REDUCED_DECODE_MIN_PIXELS: u64 = 3_000_000;

/// [`decode_image`] for an image that will be shrunk to fit within `fit` (width, height)
/// keeping its aspect ratio: a JPEG of at least [`REDUCED_DECODE_MIN_PIXELS`] and at least twice
/// that size in its limiting dimension is decoded
/// at the smallest DCT scale (1/2, 1/4, 1/8) that stays at least the fitted size, which skips
/// most of the inverse DCT and colour conversion work; [`LoadedImage::full_size`] keeps the full
/// size. The pixels differ a little from a full decode followed by the same resize (the DCT
/// scaling averages blocks instead of resampling). Grayscale and colour JPEGs only; CMYK, 12-bit
/// and truncated files, and every other format, take the full decode.
pub fn decode_image_fit(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
    fit: Option<(u32, u32)>,
) -> Result<LoadedImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.to_owned() });
    }
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > limits.max_alloc {
        return Err(ImageError::FileTooLarge { name: name.to_owned(), bytes: len, limit: limits.max_alloc });
    }
    let format = sniff_format(bytes, name)?;

    #[cfg(not(feature = "jpeg"))]
    let _ = fit; // no JPEG codec: nothing to decode at a reduced scale
    let mut warnings = Vec::new();
    let jpeg = (format == SourceFormat::Jpeg).then(|| scan_jpeg(bytes));
    let header_size = match &jpeg {
        Some(scan) => scan.frame_size,
        None => probe_dimensions(format, bytes),
    };
    if let Some((width, height)) = header_size {
        limits.check_dimensions(name, width, height)?;
    }
    if let Some(scan) = &jpeg
        && !scan.has_eoi(bytes)
    {
        warnings.push(ImageWarning::TruncatedJpeg);
    }

    #[cfg(feature = "jpeg")]
    if let (Some(_), Some(fit), Some(size)) = (&jpeg, fit, header_size)
        && warnings.is_empty()
        && let Ok(Ok(Some(loaded))) = catch_unwind(AssertUnwindSafe(|| reduced_jpeg(bytes, name, limits, size, fit)))
    {
        return Ok(loaded);
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| decode_rgb(bytes, name, format, limits, &mut warnings)));
    let (rgb, orientation) = match decoded {
        Ok(result) => result?,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_owned());
            let reason = format!("decoder panicked: {message}");
            return Err(ImageError::Decode { name: name.to_owned(), format, reason });
        }
    };
    let full_size = rgb.dimensions();
    Ok(LoadedImage { rgb, original_format: format, orientation, warnings, full_size })
}

/// The reduced-scale JPEG decode of [`decode_image_fit`]: `Ok(None)` when the image is not
/// large enough, or is of a kind the full decode handles (CMYK, 12-bit), or its EXIF cannot be
/// read; errors of the reduced decoder also fall back to the full decode (the caller ignores them).
#[cfg(feature = "jpeg")]
fn reduced_jpeg(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
    (width, height): (u32, u32),
    (fit_w, fit_h): (u32, u32),
) -> Result<Option<LoadedImage>, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg);
    reader.limits(limits.to_image_limits());
    let Ok(mut header) = reader.into_decoder() else { return Ok(None) };
    let Ok(orientation) = header.orientation() else { return Ok(None) };
    let exif = orientation.to_exif();
    let (shown_w, shown_h) = if exif >= 5 { (height, width) } else { (width, height) };
    // the letterbox's scale; a DCT scale of 1/2 or less needs it at or under 1/2
    let ratio = (f64::from(fit_w) / f64::from(shown_w)).min(f64::from(fit_h) / f64::from(shown_h));
    let pixels = u64::from(width) * u64::from(height);
    if ratio > 0.5 || pixels < REDUCED_DECODE_MIN_PIXELS || width > u32::from(u16::MAX) || height > u32::from(u16::MAX)
    {
        return Ok(None);
    }
    let want = |v: u32| ((f64::from(v) * ratio).ceil() as u32).clamp(1, u32::from(u16::MAX)) as u16;
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    let failed = |e: jpeg_decoder::Error| ImageError::Decode {
        name: name.to_owned(),
        format: SourceFormat::Jpeg,
        reason: e.to_string(),
    };
    let (dw, dh) = decoder.scale(want(width), want(height)).map_err(failed)?;
    let (dw, dh) = (u32::from(dw), u32::from(dh));
    let Some(info) = decoder.info() else { return Ok(None) };
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => {
            let pixels = decoder.decode().map_err(failed)?;
            RgbImage::from_raw(dw, dh, pixels)
        }
        jpeg_decoder::PixelFormat::L8 => {
            let pixels = decoder.decode().map_err(failed)?;
            RgbImage::from_raw(dw, dh, pixels.iter().flat_map(|&v| [v, v, v]).collect())
        }
        _ => return Ok(None),
    };
    let Some(rgb) = rgb else { return Ok(None) };
    let mut rgb = DynamicImage::ImageRgb8(rgb);
    rgb.apply_orientation(orientation);
    Ok(Some(LoadedImage {
        rgb: rgb.into_rgb8(),
        original_format: SourceFormat::Jpeg,
        orientation: exif,
        warnings: Vec::new(),
        full_size: (shown_w, shown_h),
    }))
}

/// Reads at most `cap` bytes of a file; more is [`ImageError::FileTooLarge`] (checked from the
/// metadata first, and again while reading for files whose size is not known in advance).
fn read_capped(path: &Path, name: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
    let io_error = |source| ImageError::Io { name: name.to_owned(), source };
    let file = File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if metadata.is_dir() {
        let source = std::io::Error::other("is a directory");
        return Err(ImageError::Io { name: name.to_owned(), source });
    }
    if metadata.len() > cap {
        return Err(ImageError::FileTooLarge { name: name.to_owned(), bytes: metadata.len(), limit: cap });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes).map_err(io_error)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > cap {
        return Err(ImageError::FileTooLarge { name: name.to_owned(), bytes: read, limit: cap });
    }
    Ok(bytes)
}

/// The formats this build decodes (`PNG, JPEG`): the image codecs are cargo features.
pub fn supported_formats() -> String {
    let all = [SourceFormat::Png, SourceFormat::Jpeg, SourceFormat::Gif, SourceFormat::Bmp, SourceFormat::WebP];
    let names: Vec<String> = all
        .iter()
        .filter(|f| f.to_image().reading_enabled())
        .map(|f| if *f == SourceFormat::WebP { "WebP".to_owned() } else { f.as_str().to_ascii_uppercase() })
        .collect();
    if names.is_empty() { "none (this build has no image codec)".to_owned() } else { names.join(", ") }
}

/// The format from the content's signature; a known format this build does not decode (a codec
/// feature left out) is [`ImageError::UnsupportedFormat`].
fn sniff_format(bytes: &[u8], name: &str) -> Result<SourceFormat, ImageError> {
    match image::guess_format(bytes) {
        Ok(format) => SourceFormat::from_image(format)
            .filter(|f| f.to_image().reading_enabled())
            .ok_or_else(|| ImageError::UnsupportedFormat { name: name.to_owned(), format: format!("{format:?}") }),
        Err(_) => Err(ImageError::UnknownFormat { name: name.to_owned(), hint: describe_start(bytes) }),
    }
}

/// A short description of unrecognised content for the error message: quoted text when it looks
/// like text, otherwise the first bytes in hex.
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(24)];
    let texty = |b: &u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    if head.iter().all(texty) {
        let text: String = head.iter().map(|&b| if b.is_ascii_whitespace() { ' ' } else { char::from(b) }).collect();
        let more = if bytes.len() > head.len() { "..." } else { "" };
        format!("content is text: \"{}{more}\"", text.trim_end())
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("starts with bytes {}", hex.join(" "))
    }
}

/// Decodes through the `image` crate with explicit limits, applies EXIF orientation, converts to
/// RGB8. Returns the image and the EXIF orientation value applied.
fn decode_rgb(
    bytes: &[u8],
    name: &str,
    format: SourceFormat,
    limits: &DecodeLimits,
    warnings: &mut Vec<ImageWarning>,
) -> Result<(RgbImage, u8), ImageError> {
    let decode_error = |err| map_decoder_error(name, format, err);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.to_image());
    reader.limits(limits.to_image_limits());
    let mut decoder = reader.into_decoder().map_err(decode_error)?;

    // The decoder's own view of the header: checked again, with the memory the decode needs
    // (decoded buffer, plus one RGB8 copy when a colour conversion or a rotation makes one).
    let (width, height) = decoder.dimensions();
    limits.check_dimensions(name, width, height)?;
    let orientation = match decoder.orientation() {
        Ok(orientation) => orientation,
        Err(err) => {
            warnings.push(ImageWarning::UnreadableExif { reason: err.to_string() });
            Orientation::NoTransforms
        }
    };
    let decoded = decoder.total_bytes();
    let rgb8 = rgb8_bytes(width, height);
    let in_place = decoder.color_type() == image::ColorType::Rgb8 && orientation == Orientation::NoTransforms;
    let needed = if in_place { decoded } else { decoded.max(rgb8).saturating_add(rgb8) };
    limits.check_memory(name, width, height, needed)?;
    // As `ImageReader::decode` does, and `into_decoder` does not: the output buffer counts
    // against the memory limit the decoder gets for its own buffers.
    let mut decoder_limits = limits.to_image_limits();
    decoder_limits.max_alloc = Some(limits.max_alloc.saturating_sub(decoded));
    decoder.set_limits(decoder_limits).map_err(decode_error)?;

    let image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    let mut rgb = DynamicImage::ImageRgb8(image.into_rgb8());
    rgb.apply_orientation(orientation);
    Ok((rgb.into_rgb8(), orientation.to_exif()))
}

fn map_decoder_error(name: &str, format: SourceFormat, err: image::ImageError) -> ImageError {
    let name = name.to_owned();
    match err {
        image::ImageError::Limits(limit) => ImageError::LimitExceeded { name, reason: limit.to_string() },
        other => ImageError::Decode { name, format, reason: other.to_string() },
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing: dimensions as declared, read before any decoder allocates.

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

/// Width and height as declared by the header of a non-JPEG image (JPEG: [`scan_jpeg`]); `None`
/// when the header is too short or malformed (the decoder then reports the problem).
fn probe_dimensions(format: SourceFormat, bytes: &[u8]) -> Option<(u32, u32)> {
    match format {
        // Signature, then the IHDR chunk: length 13, "IHDR", width, height (big-endian).
        SourceFormat::Png => {
            (bytes.get(12..16)? == b"IHDR").then_some(())?;
            Some((be32(bytes, 16)?, be32(bytes, 20)?))
        }
        // "GIF8xa", logical screen width and height (little-endian u16).
        SourceFormat::Gif => Some((u32::from(le16(bytes, 6)?), u32::from(le16(bytes, 8)?))),
        // File header (14 bytes), then the DIB header: its size, then width and height; the
        // 12-byte OS/2 core header has u16 sizes, later ones i32 (negative height: top-down).
        SourceFormat::Bmp => match le32(bytes, 14)? {
            12 => Some((u32::from(le16(bytes, 18)?), u32::from(le16(bytes, 20)?))),
            _ => {
                let width = i32::from_le_bytes(bytes.get(18..22)?.try_into().ok()?);
                let height = i32::from_le_bytes(bytes.get(22..26)?.try_into().ok()?);
                Some((u32::try_from(width).ok()?, height.unsigned_abs()))
            }
        },
        SourceFormat::WebP => probe_webp(bytes),
        SourceFormat::Jpeg => scan_jpeg(bytes).frame_size,
    }
}

/// WebP: "RIFF", size, "WEBP", then the first chunk: VP8X (extended: canvas size), VP8L
/// (lossless: 14-bit sizes after the 0x2f signature) or "VP8 " (lossy: 14-bit sizes after the
/// frame tag and the 9d 01 2a start code).
fn probe_webp(bytes: &[u8]) -> Option<(u32, u32)> {
    (bytes.get(0..4)? == b"RIFF" && bytes.get(8..12)? == b"WEBP").then_some(())?;
    match bytes.get(12..16)? {
        b"VP8X" => Some((le24(bytes, 24)? + 1, le24(bytes, 27)? + 1)),
        b"VP8L" => {
            (*bytes.get(20)? == 0x2f).then_some(())?;
            let bits = le32(bytes, 21)?;
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8 " => {
            (bytes.get(23..26)? == [0x9d, 0x01, 0x2a]).then_some(())?;
            Some((u32::from(le16(bytes, 26)? & 0x3fff), u32::from(le16(bytes, 28)? & 0x3fff)))
        }
        _ => None,
    }
}

/// What a walk over a JPEG's marker segments found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct JpegScan {
    /// Width and height from the first start-of-frame segment.
    frame_size: Option<(u32, u32)>,
    /// The end-of-image marker was reached through the segment structure.
    eoi: bool,
    /// The walk met bytes that are not a marker where one must be (the structure is damaged or
    /// unusual); `eoi` is then unknown rather than false.
    malformed: bool,
}

impl JpegScan {
    /// Whether the data has its end-of-image marker. When the segment walk reached the end of the
    /// data, no; when it stopped on damaged structure, falls back to the tail: the last bytes,
    /// after trailing padding (00, FF, ASCII whitespace), are FF D9.
    fn has_eoi(&self, bytes: &[u8]) -> bool {
        if self.eoi {
            return true;
        }
        if !self.malformed {
            return false;
        }
        let end = bytes.iter().rposition(|b| !matches!(b, 0x00 | 0xff | b' ' | b'\t' | b'\r' | b'\n'));
        match end {
            Some(last) => bytes[last] == 0xd9 && last > 0 && bytes[last - 1] == 0xff,
            None => false,
        }
    }
}

/// Walks a JPEG from SOI over its marker segments, skipping entropy-coded data after each SOS
/// (byte-stuffed FF 00 and restart markers included), until EOI or the end of the data. Bytes
/// after EOI (camera trailers, padding, appended video) are not looked at; an FF D9 inside a
/// segment (an EXIF thumbnail) is skipped with its segment, so neither fools the check.
fn scan_jpeg(bytes: &[u8]) -> JpegScan {
    let mut scan = JpegScan::default();
    if bytes.get(0..2) != Some(&[0xff, 0xd8]) {
        scan.malformed = true;
        return scan;
    }
    let mut at = 2;
    loop {
        if at >= bytes.len() {
            return scan;
        }
        if bytes[at] != 0xff {
            scan.malformed = true;
            return scan;
        }
        // Any number of FF fill bytes may precede a marker.
        while bytes.get(at) == Some(&0xff) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else { return scan };
        at += 1;
        match marker {
            0xd9 => {
                scan.eoi = true;
                return scan;
            }
            // Stand-alone markers: no length field.
            0x01 | 0xd0..=0xd8 => continue,
            0x00 => {
                scan.malformed = true;
                return scan;
            }
            _ => {}
        }
        let Some(length) = be16(bytes, at) else { return scan };
        let length = usize::from(length);
        if length < 2 {
            scan.malformed = true;
            return scan;
        }
        let is_frame = matches!(marker, 0xc0..=0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf);
        if is_frame
            && scan.frame_size.is_none()
            && let (Some(height), Some(width)) = (be16(bytes, at + 3), be16(bytes, at + 5))
        {
            scan.frame_size = Some((u32::from(width), u32::from(height)));
        }
        at += length;
        if marker == 0xda {
            // Entropy-coded data runs to the next FF not followed by 00 (stuffing), a restart
            // marker or more FF fill.
            loop {
                let Some(offset) = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xff)) else {
                    return scan;
                };
                let ff = at + offset;
                let mut next = ff + 1;
                while bytes.get(next) == Some(&0xff) {
                    next += 1;
                }
                match bytes.get(next) {
                    None => return scan,
                    Some(0x00 | 0xd0..=0xd7) => at = next + 1,
                    Some(_) => {
                        at = ff;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "image_io_tests.rs"]
mod tests;
