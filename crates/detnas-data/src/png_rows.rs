//! Row-by-row reading of PNG files, for images too large to hold decoded (tiled detection of
//! orthophotos): memory is one row plus the decoder's state, whatever the image's height.
//!
//! Pixels are those of [`crate::image_io::load_image`] for the same file: every colour type and
//! bit depth becomes 8-bit RGB, 16-bit samples rounded (`(v + 128) / 257`), alpha dropped, gray
//! replicated. Files this reader cannot serve in displayed order are declined (`Ok(None)`) so the
//! caller decodes them whole: interlaced (Adam7) PNGs, whose rows arrive in passes, and PNGs with
//! EXIF metadata, whose orientation may turn rows into columns.

use crate::image_io::{ImageError, SourceFormat};
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

impl PngRows {
    /// Opens `path` for row reading: `Ok(None)` when it is not a PNG or is one that must be
    /// decoded whole (interlaced, or with EXIF metadata); errors name the file.
    pub fn open(path: &Path) -> Result<Option<PngRows>, ImageError> {
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
        // No decoder memory limit is needed: the reader never holds more than a row or two.
        let mut decoder = png::Decoder::new_with_limits(BufReader::new(file), png::Limits { bytes: usize::MAX });
        decoder.set_transformations(png::Transformations::EXPAND);
        let reader = decoder.read_info().map_err(decode)?;
        let info = reader.info();
        if info.interlaced || info.exif_metadata.is_some() {
            return Ok(None);
        }
        let (width, height) = (info.width, info.height);
        if width == 0 || height == 0 {
            return Err(ImageError::ZeroSize { name, width, height });
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
