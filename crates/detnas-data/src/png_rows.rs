//! Row-by-row reading of PNG files, for images too large to hold decoded (tiled detection of
//! orthophotos): memory is one row plus the decoder's state, whatever the image's height, within
//! the decode limit's `max_alloc` ([`PngRows::open`]).
//!
//! Pixels are those of [`crate::image_io::load_image`] for the same file: every colour type and
//! bit depth becomes 8-bit RGB, 16-bit samples rounded (`(v + 128) / 257`), alpha dropped, gray
//! replicated. Files this reader cannot serve in displayed order are declined (`Ok(None)`) so the
//! caller decodes them whole: interlaced (Adam7) PNGs, whose rows arrive in passes, and PNGs with
//! EXIF metadata, whose orientation may turn rows into columns.

use crate::image_io::{DecodeLimits, ImageError, SizeLimit, SourceFormat};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// An open PNG file read one RGB8 row at a time, top to bottom.
pub struct PngRows {
    reader: png::Reader<BufReader<File>>,
    name: String,
    width: u32,
    height: u32,
    color: png::ColorType,
    sixteen: bool,
    next: u32,
}

impl std::fmt::Debug for PngRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PngRows")
            .field("name", &self.name)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Bytes of the rows a reader holds for an image with this header: the decoder's raw current and
/// previous rows (filter byte included), its expanded output row (at most 4 samples of 1 byte, 2
/// for 16-bit images) and one RGB8 row.
fn row_memory(header: &png::Info<'_>) -> u64 {
    let width = u64::from(header.width);
    let depth = u64::from(header.bit_depth as u8);
    let raw = (width * header.color_type.samples() as u64 * depth).div_ceil(8) + 1;
    let sample_bytes = if depth == 16 { 2 } else { 1 };
    2 * raw + 4 * sample_bytes * width + 3 * width
}

impl PngRows {
    /// Opens `path` for row reading: `Ok(None)` when it is not a PNG or is one that must be
    /// decoded whole (interlaced, or with EXIF metadata); errors name the file.
    ///
    /// Memory: the rows the reader holds (the decoder's raw current and previous rows, its
    /// expanded output row and one RGB8 row) must fit in `limits.max_alloc`, else
    /// [`ImageError::TooLarge`] before any row is read (a header of a few bytes can declare a row
    /// of gigabytes); the decoder's other buffers are held to the same limit. The pixel and
    /// dimension limits do not apply: the height does not count, and the caller bounds what it
    /// keeps of the rows.
    pub fn open(path: &Path, limits: &DecodeLimits) -> Result<Option<PngRows>, ImageError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| ImageError::Io { name: name.clone(), source: e };
        let mut file = File::open(path).map_err(io)?;
        let mut head = [0u8; 8];
        use std::io::{Read, Seek};
        if file.read_exact(&mut head).is_err() || head != SIGNATURE {
            return Ok(None);
        }
        file.rewind().map_err(io)?;
        let decode = |e: png::DecodingError| ImageError::Decode {
            name: name.clone(),
            format: SourceFormat::Png,
            reason: e.to_string(),
        };
        let bytes = usize::try_from(limits.max_alloc).unwrap_or(usize::MAX);
        let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), png::Limits { bytes });
        decoder.set_transformations(png::Transformations::EXPAND);
        let header = decoder.read_header_info().map_err(decode)?;
        let (width, height) = (header.width, header.height);
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize { name, width, height });
        }
        if header.interlaced {
            return Ok(None);
        }
        let needed = row_memory(header);
        if needed > limits.max_alloc {
            let limit = SizeLimit::Memory { needed, max_alloc: limits.max_alloc };
            return Err(ImageError::TooLarge { name, width, height, limit });
        }
        let reader = decoder.read_info().map_err(decode)?;
        if reader.info().exif_metadata.is_some() {
            return Ok(None);
        }
        let (color, depth) = reader.output_color_type();
        Ok(Some(PngRows { reader, name, width, height, color, sixteen: depth == png::BitDepth::Sixteen, next: 0 }))
    }

    /// Width and height in pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The file's name as given, for errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends the next row (`3 * width` bytes, RGB8) to `out`; a row past the last one or a
    /// truncated or corrupt file is an error naming the file and the row.
    pub fn read_row(&mut self, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let (name, index) = (&self.name, self.next);
        let failed = |reason: String| ImageError::Decode {
            name: name.clone(),
            format: SourceFormat::Png,
            reason: format!("row {index}: {reason}"),
        };
        let row = match self.reader.next_row() {
            Ok(Some(row)) => row,
            Ok(None) => return Err(failed("the image has no more rows".into())),
            Err(e) => return Err(failed(e.to_string())),
        };
        let channels = self.color.samples();
        let data = row.data();
        let sample = |i: usize| -> u8 {
            if self.sixteen {
                let v = u16::from_be_bytes([data[2 * i], data[2 * i + 1]]) as u32;
                ((v + 128) / 257) as u8
            } else {
                data[i]
            }
        };
        let width = self.width as usize;
        if data.len() < width * channels * if self.sixteen { 2 } else { 1 } {
            return Err(failed(format!("short row of {} bytes", data.len())));
        }
        out.reserve(width * 3);
        for x in 0..width {
            let at = x * channels;
            match channels {
                1 | 2 => {
                    let v = sample(at);
                    out.extend_from_slice(&[v, v, v]);
                }
                _ => out.extend_from_slice(&[sample(at), sample(at + 1), sample(at + 2)]),
            }
        }
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target `image_decode`, seed 0, case 3431; reconstructed): 68 bytes whose
    /// header declares a 16-bit gray row of 2 726 963 362 pixels made the reader allocate a
    /// 5.4 GB row whatever the decode limits.
    const HUGE_ROW: &[u8] =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\xa2\x8a\x28\xa2\x00\x00\x00\x1e\x10\x00\x00\x00\x00\
        \x1f\xe6\x74\x30\x00\x00\x00\x0bIDAT\x78\x9c\x63\x60\x80\x00\x00\x00\x08\x00\x01\xb7\x58\x73\x95\
        \x00\x00\x00\x00IEND\xae\x42\x60\x82";

    #[test]
    fn rows_over_the_memory_limit_are_refused_before_any_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let wide = dir.path().join("wide.png");
        std::fs::write(&wide, HUGE_ROW).unwrap();
        let err = PngRows::open(&wide, &DecodeLimits::default()).unwrap_err();
        let refused = matches!(
            err,
            ImageError::TooLarge { width: 2_726_963_362, height: 30, limit: SizeLimit::Memory { .. }, .. }
        );
        assert!(refused && err.to_string().contains("wide.png"), "{err}");

        let small = dir.path().join("small.png");
        image::RgbImage::from_fn(7, 3, |x, y| image::Rgb([x as u8 * 30, y as u8 * 80, 9])).save(&small).unwrap();
        let mut rows = PngRows::open(&small, &DecodeLimits::default()).unwrap().expect("a plain PNG");
        let mut pixels = Vec::new();
        for _ in 0..3 {
            rows.read_row(&mut pixels).unwrap();
        }
        assert_eq!(pixels, image::open(&small).unwrap().to_rgb8().into_raw());
        // Its rows need 2 x 22 raw + 4 x 7 expanded + 21 RGB bytes.
        let tight = DecodeLimits { max_alloc: 92, ..DecodeLimits::default() };
        assert!(matches!(PngRows::open(&small, &tight), Err(ImageError::TooLarge { .. })));
        let enough = DecodeLimits { max_alloc: 93, ..DecodeLimits::default() };
        assert!(PngRows::open(&small, &enough).unwrap().is_some());
    }
}
