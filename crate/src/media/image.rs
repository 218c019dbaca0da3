//! The image preprocessing of diffusers' `I2VGenXLPipeline`, reproduced exactly: `_center_crop_wide`
//! (PIL `BOX` resize then a centred crop) and `_resize_bilinear` (PIL `BILINEAR`), both with
//! Pillow's separable, antialiased 8-bit resampler (`libImaging/Resample.c`).

use crate::{Error, Result};

/// An 8-bit RGB image, rows top to bottom, decoded by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// 8192² pixels (67 megapixels): far above any output size, and 200 MB of RGB.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// The longest side over the shortest. Generation scales the image to cover the video, then
/// crops the centre (`center_crop_wide`), so the scaled copy grows with the mismatch of the two
/// shapes: a 16×100000 strip asks for 30 GB at 1280×704. At 8:1 an image cropped to a 16:9 frame
/// still keeps a fifth of itself, and the copy stays within 8 × the output's pixels times the
/// output's own ratio (with sides of at most 2048, about 100 MB of RGB).
pub const MAX_ASPECT_RATIO: u32 = 8;

/// Decode the bytes of a PNG, JPEG or WebP file to 8-bit RGB. The header is read first, so a huge
/// or extremely elongated picture is refused before anything is allocated, and a file cut short
/// is refused rather than decoded with its missing part filled in.
pub fn decode(bytes: &[u8]) -> Result<RgbImage> {
    use ::image::ImageReader;
    use std::io::Cursor;
    if bytes.is_empty() {
        return Err(Error::request("image", "the file is empty (0 bytes); choose a PNG, JPEG or WebP image"));
    }
    let reader =
        || ImageReader::new(Cursor::new(bytes)).with_guessed_format().expect("reading from memory cannot fail");
    let Some(format) = reader().format() else {
        return Err(Error::request("image", "the file is not a PNG, JPEG or WebP image; choose one of those"));
    };
    // With a readable header, refuse before decoding: a picture too large or too elongated, and a
    // file whose own structure does not run to its end (decoders fill a missing tail with grey
    // (JPEG) or fail with a vague error). Without one, the decoder's error says what is wrong.
    if let Ok((w, h)) = reader().into_dimensions() {
        check_dimensions(w, h)?;
        if !is_complete(format, bytes) {
            return Err(Error::request(
                "image",
                "the image file is cut short (truncated) or damaged; download or save it again",
            ));
        }
    }
    let decoded = reader().decode().map_err(|err| {
        Error::request(
            "image",
            format!("the file is not a PNG, JPEG or WebP image this build can decode (it may be damaged: {err})"),
        )
    })?;
    let rgb = decoded.to_rgb8();
    let (w, h) = rgb.dimensions();
    RgbImage::new(w as usize, h as usize, rgb.into_raw())
}

/// Refuse a picture too large to decode or too elongated to crop to a video shape.
fn check_dimensions(w: u32, h: u32) -> Result<()> {
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(Error::request(
            "image",
            format!(
                "the image is {w}×{h} pixels, too large to read: images up to {} megapixels work; scale it below 8192×8192 first",
                MAX_IMAGE_PIXELS / 1_000_000
            ),
        ));
    }
    let (long, short) = (w.max(h), w.min(h));
    if u64::from(long) > u64::from(MAX_ASPECT_RATIO) * u64::from(short) {
        return Err(Error::request(
            "image",
            format!(
                "the image is {w}×{h} pixels, too long and thin: aspect ratios up to 1:{MAX_ASPECT_RATIO} work; crop it closer to the video's shape"
            ),
        ));
    }
    Ok(())
}

/// Whether a file's container runs to its end: a PNG's chunks to `IEND`, a WebP's RIFF size, a
/// JPEG's markers to its end-of-image marker. Bytes after the end (a phone's "motion photo"
/// appends a video) are allowed.
fn is_complete(format: ::image::ImageFormat, bytes: &[u8]) -> bool {
    use ::image::ImageFormat;
    match format {
        ImageFormat::Png => png_is_complete(bytes),
        ImageFormat::WebP => bytes.get(4..8).is_some_and(|size| {
            u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]])) + 8 <= bytes.len() as u64
        }),
        ImageFormat::Jpeg => jpeg_is_complete(bytes),
        _ => true,
    }
}

/// Walk the chunks (length, type, data, CRC) after the 8-byte signature up to `IEND`.
fn png_is_complete(bytes: &[u8]) -> bool {
    let mut i = 8;
    while let Some(head) = bytes.get(i..i + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = i.saturating_add(12).saturating_add(len);
        if end > bytes.len() {
            return false;
        }
        if &head[4..8] == b"IEND" {
            return true;
        }
        i = end;
    }
    false
}

/// Walk a JPEG's segments by their lengths (so an EXIF thumbnail's own end marker is skipped),
/// and each scan's entropy-coded data up to the next real marker (`FF 00` is a stuffed byte,
/// `FF D0`–`FF D7` restart markers), until the end-of-image marker.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    let is_rst = |m: u8| (0xD0..=0xD7).contains(&m);
    let mut i = 2; // after SOI
    loop {
        // Any number of 0xFF fill bytes may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else { return false };
        i += 2;
        if marker == EOI {
            return true;
        }
        if is_rst(marker) || marker == 0x01 {
            continue;
        }
        let Some(len) = bytes.get(i..i + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
            return false;
        };
        i += len;
        if marker == SOS {
            while i + 1 < bytes.len() && !(bytes[i] == 0xFF && bytes[i + 1] != 0 && !is_rst(bytes[i + 1])) {
                i += 1;
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Filter {
    Box,
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
        }
    }
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input index and the fixed-point weights (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(Error::request(
                "image",
                format!("an RGB image of {width}×{height} needs {} bytes, got {}", width * height * 3, data.len()),
            ));
        }
        Ok(Self { width, height, data })
    }

    /// `Image.resize((width, height), filter)`: a horizontal then a vertical pass, each only when
    /// that dimension changes, in 8-bit fixed point.
    pub fn resize(&self, width: usize, height: usize, filter: Filter) -> Self {
        let mut image = self.clone();
        if width != image.width {
            let coeffs = coefficients(image.width, width, filter);
            let mut out = vec![0u8; width * image.height * 3];
            for y in 0..image.height {
                let row = &image.data[y * image.width * 3..(y + 1) * image.width * 3];
                for (x, (xmin, weights)) in coeffs.iter().enumerate() {
                    for c in 0..3 {
                        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                        for (i, w) in weights.iter().enumerate() {
                            acc += i64::from(row[(xmin + i) * 3 + c]) * i64::from(*w);
                        }
                        out[(y * width + x) * 3 + c] = clip8(acc);
                    }
                }
            }
            image = Self { width, height: image.height, data: out };
        }
        if height != image.height {
            let coeffs = coefficients(image.height, height, filter);
            let mut out = vec![0u8; image.width * height * 3];
            for (y, (ymin, weights)) in coeffs.iter().enumerate() {
                for x in 0..image.width * 3 {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, w) in weights.iter().enumerate() {
                        acc += i64::from(image.data[(ymin + i) * image.width * 3 + x]) * i64::from(*w);
                    }
                    out[y * image.width * 3 + x] = clip8(acc);
                }
            }
            image = Self { width: image.width, height, data: out };
        }
        image
    }

    /// `Image.crop((left, top, left + width, top + height))`; like PIL, pixels outside the image
    /// are black.
    pub fn crop(&self, left: i64, top: i64, width: usize, height: usize) -> Self {
        let mut data = vec![0u8; width * height * 3];
        for y in 0..height {
            let sy = top + y as i64;
            if sy < 0 || sy >= self.height as i64 {
                continue;
            }
            for x in 0..width {
                let sx = left + x as i64;
                if sx >= 0 && sx < self.width as i64 {
                    let (src, dst) = ((sy as usize * self.width + sx as usize) * 3, (y * width + x) * 3);
                    data[dst..dst + 3].copy_from_slice(&self.data[src..src + 3]);
                }
            }
        }
        Self { width, height, data }
    }

    /// diffusers' `_center_crop_wide(image, (width, height))`: scale with PIL `BOX` so the image
    /// just covers the target, then crop the centre. Quirk: the scaled size comes from Python's
    /// float `//`, which can land one pixel short (37 // (37/40) == 39), and the crop then takes a
    /// black row or column from outside the image, as PIL does.
    pub fn center_crop_wide(&self, width: usize, height: usize) -> Self {
        let (w, h) = (self.width as f64, self.height as f64);
        let scale = (w / width as f64).min(h / height as f64);
        let (new_w, new_h) = (py_floordiv(w, scale) as usize, py_floordiv(h, scale) as usize);
        let resized = if (new_w, new_h) == (self.width, self.height) {
            self.clone()
        } else {
            self.resize(new_w, new_h, Filter::Box)
        };
        // Python's `//` on ints floors, also below zero.
        let left = (new_w as i64 - width as i64).div_euclid(2);
        let top = (new_h as i64 - height as i64).div_euclid(2);
        resized.crop(left, top, width, height)
    }

    /// Values in [0, 1] as `[3, H, W]` planes (channel-first, row-major).
    pub fn to_planes(&self) -> Vec<f32> {
        let n = self.width * self.height;
        let mut planes = vec![0.0; 3 * n];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * n + i] = f32::from(px[c]) / 255.0;
            }
        }
        planes
    }
}

/// Python's `a // b` for floats (`float_floor_div`): floor of the exact quotient, computed through
/// `fmod` so values just below an integer are not rounded up.
fn py_floordiv(a: f64, b: f64) -> f64 {
    let rem = a % b;
    let mut div = (a - rem) / b;
    if rem != 0.0 && ((b < 0.0) != (rem < 0.0)) {
        div -= 1.0;
    }
    if div == 0.0 {
        return 0.0f64.copysign(a / b);
    }
    let floor = div.floor();
    if div - floor > 0.5 { floor + 1.0 } else { floor }
}

#[cfg(test)]
mod tests {
    use super::py_floordiv;

    #[test]
    fn floordiv_matches_python() {
        // Values checked in CPython 3.11.
        assert_eq!(py_floordiv(1280.0, 1.0), 1280.0);
        assert_eq!(py_floordiv(7.0, 2.0), 3.0);
        assert_eq!(py_floordiv(1.0, 0.1), 9.0); // 1.0 / 0.1 == 10.0 but 1.0 // 0.1 == 9.0
        assert_eq!(py_floordiv(-7.0, 2.0), -4.0);
    }
}
