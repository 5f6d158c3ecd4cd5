//! Rendering one frame of an uncompressed image for display (PS3.18 8.3.5.1, the WADO-RS
//! `/rendered` and `/thumbnail` resources): the Modality LUT (Rescale Slope and Intercept),
//! the VOI LUT (a window given by the client, else the data set's first Window Center and
//! Width with its VOI LUT Function, else the frame's full range), MONOCHROME1 inverted, an
//! optional source region and a viewport the image is fitted into, then 8-bit grey or RGB
//! encoded as JPEG or PNG. Pure computation over bytes already decoded to native little
//! endian; no I/O.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Why a frame cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("missing or invalid {0}")]
    Attribute(&'static str),
    #[error("no frame {0} in this instance")]
    NoSuchFrame(u32),
    #[error("{0} images cannot be rendered (only MONOCHROME1, MONOCHROME2, RGB and YBR_FULL)")]
    Photometric(String),
    #[error("{0}")]
    Parameter(String),
    #[error("encoding the image failed: {0}")]
    Encode(String),
}

/// Most output pixels of one rendering (a 4096 x 4096 viewport).
pub const MAX_OUTPUT_PIXELS: u64 = 4096 * 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Photometric {
    Monochrome1,
    Monochrome2,
    Rgb,
    YbrFull,
}

/// The VOI LUT Function (PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    pub fn parse(text: &str) -> Option<VoiFunction> {
        match text.trim().to_ascii_lowercase().as_str() {
            "linear" => Some(VoiFunction::Linear),
            "linear_exact" | "linear-exact" => Some(VoiFunction::LinearExact),
            "sigmoid" => Some(VoiFunction::Sigmoid),
            _ => None,
        }
    }
}

/// A VOI window over modality values (after rescale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

impl Window {
    /// The 8-bit display value of modality value `x` (PS3.3 C.11.2.1.2).
    fn apply(&self, x: f64) -> u8 {
        let (c, w) = (self.center, self.width);
        let y = match self.function {
            VoiFunction::Linear => {
                let w1 = (w - 1.0).max(f64::MIN_POSITIVE);
                if x <= c - 0.5 - w1 / 2.0 {
                    0.0
                } else if x > c - 0.5 + w1 / 2.0 {
                    1.0
                } else {
                    (x - (c - 0.5)) / w1 + 0.5
                }
            }
            VoiFunction::LinearExact => {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        };
        // Non-negative: adding a half and truncating rounds.
        (y.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
    }
}

/// The part of the frame to show (`viewport=vw,vh,sx,sy,sw,sh`) and the size to fit it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    /// Source region: x, y, width, height in frame pixels; `None` for the whole frame.
    pub region: Option<(u32, u32, u32, u32)>,
}

/// What to render and how.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rendering {
    /// 1-based frame number.
    pub frame: u32,
    pub window: Option<Window>,
    pub viewport: Option<Viewport>,
}

/// 8-bit pixels ready for an image encoder: grey (1 channel) or RGB (3), row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// An uncompressed image instance's Image Pixel description and pixel data.
#[derive(Debug)]
pub struct Image<'a> {
    rows: u32,
    columns: u32,
    samples: u8,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    frames: u32,
    photometric: Photometric,
    slope: f64,
    intercept: f64,
    stored_window: Option<Window>,
    data: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Image<'a> {
    /// The image of a data set whose Pixel Data is native (uncompressed, little endian).
    pub fn from_object(object: &'a InMemDicomObject) -> Result<Image<'a>, RenderError> {
        let int = |tag: Tag, name: &'static str| -> Result<i64, RenderError> {
            object
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<i64>().ok())
                .ok_or(RenderError::Attribute(name))
        };
        let float = |tag: Tag| -> Option<f64> {
            object
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_float64().ok())
                .and_then(|v| v.first().copied())
                .filter(|v| v.is_finite())
        };
        let text = |tag: Tag| -> Option<String> {
            object
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().to_string())
        };
        let rows = int(tags::ROWS, "Rows")?;
        let columns = int(tags::COLUMNS, "Columns")?;
        let samples = int(tags::SAMPLES_PER_PIXEL, "Samples per Pixel").unwrap_or(1);
        let bits_allocated = int(tags::BITS_ALLOCATED, "Bits Allocated")?;
        let bits_stored = int(tags::BITS_STORED, "Bits Stored").unwrap_or(bits_allocated);
        let photometric = match text(tags::PHOTOMETRIC_INTERPRETATION).as_deref() {
            Some("MONOCHROME1") => Photometric::Monochrome1,
            Some("MONOCHROME2") | None => Photometric::Monochrome2,
            Some("RGB") => Photometric::Rgb,
            Some("YBR_FULL") => Photometric::YbrFull,
            Some(other) => return Err(RenderError::Photometric(other.to_string())),
        };
        if !(1..=65535).contains(&rows) || !(1..=65535).contains(&columns) {
            return Err(RenderError::Attribute("Rows or Columns"));
        }
        let grey = matches!(
            photometric,
            Photometric::Monochrome1 | Photometric::Monochrome2
        );
        match (grey, samples, bits_allocated) {
            (true, 1, 8 | 16) | (false, 3, 8) => {}
            _ => {
                return Err(RenderError::Attribute(
                    "Samples per Pixel or Bits Allocated",
                ))
            }
        }
        if !(1..=bits_allocated).contains(&bits_stored) {
            return Err(RenderError::Attribute("Bits Stored"));
        }
        let stored_window = match (
            float(tags::WINDOW_CENTER),
            float(tags::WINDOW_WIDTH).filter(|w| *w >= 1.0),
        ) {
            (Some(center), Some(width)) => Some(Window {
                center,
                width,
                function: text(tags::VOILUT_FUNCTION)
                    .and_then(|f| VoiFunction::parse(&f))
                    .unwrap_or(VoiFunction::Linear),
            }),
            _ => None,
        };
        // Native Pixel Data as read (OB: bytes as they are; OW: 16-bit words, written back
        // little endian).
        let data = object
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .and_then(|e| e.to_bytes().ok())
            .ok_or(RenderError::Attribute("Pixel Data (native)"))?;
        Ok(Image {
            rows: rows as u32,
            columns: columns as u32,
            samples: samples as u8,
            bits_allocated: bits_allocated as u16,
            bits_stored: bits_stored as u16,
            signed: int(tags::PIXEL_REPRESENTATION, "Pixel Representation").unwrap_or(0) == 1,
            planar: samples == 3 && int(tags::PLANAR_CONFIGURATION, "").unwrap_or(0) == 1,
            frames: int(tags::NUMBER_OF_FRAMES, "Number of Frames")
                .unwrap_or(1)
                .clamp(1, u32::MAX as i64) as u32,
            photometric,
            slope: float(tags::RESCALE_SLOPE).unwrap_or(1.0),
            intercept: float(tags::RESCALE_INTERCEPT).unwrap_or(0.0),
            stored_window,
            data,
        })
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    fn frame_len(&self) -> usize {
        self.rows as usize
            * self.columns as usize
            * self.samples as usize
            * (self.bits_allocated as usize / 8)
    }

    /// Renders one frame as `rendering` says.
    pub fn render(&self, rendering: &Rendering) -> Result<Raster, RenderError> {
        let frame = rendering.frame;
        let len = self.frame_len();
        let start = (frame as usize)
            .checked_sub(1)
            .filter(|_| frame <= self.frames)
            .map(|n| n * len)
            .ok_or(RenderError::NoSuchFrame(frame))?;
        let bytes = self
            .data
            .get(start..start + len)
            .ok_or(RenderError::NoSuchFrame(frame))?;
        let full = match self.photometric {
            Photometric::Monochrome1 | Photometric::Monochrome2 => {
                self.grey(bytes, rendering.window)
            }
            Photometric::Rgb | Photometric::YbrFull => self.colour(bytes),
        };
        match rendering.viewport {
            Some(viewport) => fit(&full, &viewport),
            None => Ok(full),
        }
    }

    /// The stored value a raw sample stands for: masked to Bits Stored, sign-extended.
    fn stored_value(&self, raw: u32) -> i32 {
        let bits = self.bits_stored as u32;
        let mask: u32 = if bits >= 32 {
            u32::MAX
        } else {
            (1 << bits) - 1
        };
        let v = raw & mask;
        if self.signed && bits < 32 && v & (1 << (bits - 1)) != 0 {
            (v | !mask) as i32
        } else {
            v as i32
        }
    }

    /// Hands each sample of the frame (8 or 16 bits, little endian), masked to Bits
    /// Stored, to `f`.
    fn each_sample(&self, bytes: &[u8], mut f: impl FnMut(usize)) {
        let bits = self.bits_stored as u32;
        let mask = if bits >= 32 {
            u32::MAX
        } else {
            (1 << bits) - 1
        } as usize;
        if self.bits_allocated == 8 {
            for b in bytes {
                f(*b as usize & mask);
            }
        } else {
            for c in bytes.chunks_exact(2) {
                f(u16::from_le_bytes([c[0], c[1]]) as usize & mask);
            }
        }
    }

    fn grey(&self, bytes: &[u8], window: Option<Window>) -> Raster {
        let modality = |v: i32| v as f64 * self.slope + self.intercept;
        let window = window.or(self.stored_window).unwrap_or_else(|| {
            // No window anywhere: the frame's own range.
            let (mut lo, mut hi) = (i32::MAX, i32::MIN);
            self.each_sample(bytes, |n| {
                let v = self.stored_value(n as u32);
                lo = lo.min(v);
                hi = hi.max(v);
            });
            let (lo, hi) = (modality(lo), modality(hi));
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            Window {
                center: (lo + hi) / 2.0,
                width: (hi - lo).max(1.0),
                function: VoiFunction::LinearExact,
            }
        });
        let invert = self.photometric == Photometric::Monochrome1;
        // One table entry per masked sample (4,096 for 12 bits): the window is evaluated
        // that many times instead of once a pixel, and each pixel is one lookup (a plain
        // loop per sample size: this runs once a pixel).
        let table: Vec<u8> = (0..1u32 << self.bits_stored)
            .map(|n| {
                let y = window.apply(modality(self.stored_value(n)));
                if invert {
                    255 - y
                } else {
                    y
                }
            })
            .collect();
        let mask = table.len() - 1;
        let pixels = if self.bits_allocated == 8 {
            bytes.iter().map(|b| table[*b as usize & mask]).collect()
        } else {
            (bytes.chunks_exact(2))
                .map(|c| table[u16::from_le_bytes([c[0], c[1]]) as usize & mask])
                .collect()
        };
        Raster {
            width: self.columns,
            height: self.rows,
            channels: 1,
            pixels,
        }
    }

    fn colour(&self, bytes: &[u8]) -> Raster {
        let n = self.rows as usize * self.columns as usize;
        let mut pixels = Vec::with_capacity(n * 3);
        for i in 0..n {
            let [a, b, c] = if self.planar {
                [bytes[i], bytes[n + i], bytes[2 * n + i]]
            } else {
                [bytes[3 * i], bytes[3 * i + 1], bytes[3 * i + 2]]
            };
            if self.photometric == Photometric::YbrFull {
                // PS3.3 C.7.6.3.1.2, full range.
                let (y, cb, cr) = (a as f64, b as f64 - 128.0, c as f64 - 128.0);
                let clamp = |v: f64| v.round().clamp(0.0, 255.0) as u8;
                pixels.extend_from_slice(&[
                    clamp(y + 1.402 * cr),
                    clamp(y - 0.344136 * cb - 0.714136 * cr),
                    clamp(y + 1.772 * cb),
                ]);
            } else {
                pixels.extend_from_slice(&[a, b, c]);
            }
        }
        Raster {
            width: self.columns,
            height: self.rows,
            channels: 3,
            pixels,
        }
    }
}

/// The viewport's source region of `raster`, scaled (bilinear, aspect ratio kept) to fit in
/// the viewport's size.
fn fit(raster: &Raster, viewport: &Viewport) -> Result<Raster, RenderError> {
    let (sx, sy, sw, sh) = viewport
        .region
        .unwrap_or((0, 0, raster.width, raster.height));
    if sw == 0
        || sh == 0
        || sx.checked_add(sw).is_none_or(|end| end > raster.width)
        || sy.checked_add(sh).is_none_or(|end| end > raster.height)
    {
        return Err(RenderError::Parameter(format!(
            "the viewport's source region {sx},{sy},{sw},{sh} is not inside the {}x{} image",
            raster.width, raster.height
        )));
    }
    if viewport.width == 0 || viewport.height == 0 {
        return Err(RenderError::Parameter("an empty viewport".into()));
    }
    let scale = (viewport.width as f64 / sw as f64).min(viewport.height as f64 / sh as f64);
    let width = ((sw as f64 * scale).round() as u32).max(1);
    let height = ((sh as f64 * scale).round() as u32).max(1);
    if width as u64 * height as u64 > MAX_OUTPUT_PIXELS {
        return Err(RenderError::Parameter(format!(
            "a {width}x{height} rendering is over {MAX_OUTPUT_PIXELS} pixels"
        )));
    }
    let channels = raster.channels as usize;
    let stride = raster.width as usize * channels;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * channels);
    // Output pixel centres mapped back into the source region.
    let source = |out: u32, size: u32, start: u32, span: u32| -> (usize, usize, f64) {
        let x = (out as f64 + 0.5) * span as f64 / size as f64 - 0.5;
        let x = x.clamp(0.0, (span - 1) as f64);
        let x0 = x.floor() as u32;
        let x1 = (x0 + 1).min(span - 1);
        ((start + x0) as usize, (start + x1) as usize, x - x0 as f64)
    };
    let columns: Vec<_> = (0..width).map(|x| source(x, width, sx, sw)).collect();
    for y in 0..height {
        let (y0, y1, fy) = source(y, height, sy, sh);
        for &(x0, x1, fx) in &columns {
            for c in 0..channels {
                let at = |x: usize, y: usize| raster.pixels[y * stride + x * channels + c] as f64;
                let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
                let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
                pixels.push((top * (1.0 - fy) + bottom * fy).round() as u8);
            }
        }
    }
    Ok(Raster {
        width,
        height,
        channels: raster.channels,
        pixels,
    })
}

/// `raster` as a baseline JPEG of `quality` (1-100), by libjpeg-turbo (the system's
/// TurboJPEG library, as the JPEG codecs of DCMTK and Orthanc): grey as one component, colour
/// as YCbCr, 4:4:4 from quality 90 up and 4:2:0 below.
pub fn encode_jpeg(raster: &Raster, quality: u8) -> Result<Vec<u8>, RenderError> {
    let (format, subsampling) = if raster.channels == 3 {
        let subsampling = if quality >= 90 {
            turbojpeg::Subsamp::None
        } else {
            turbojpeg::Subsamp::Sub2x2
        };
        (turbojpeg::PixelFormat::RGB, subsampling)
    } else {
        (turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray)
    };
    let width = raster.width as usize;
    let height = raster.height as usize;
    let pitch = width * raster.channels as usize;
    if width > 65535 || height > 65535 || raster.pixels.len() < pitch * height {
        return Err(RenderError::Encode(format!(
            "a {width}x{height} raster of {} bytes cannot be a JPEG",
            raster.pixels.len()
        )));
    }
    let image = turbojpeg::Image {
        pixels: raster.pixels.as_slice(),
        width,
        pitch,
        height,
        format,
    };
    let encode = || -> Result<Vec<u8>, turbojpeg::Error> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(quality.clamp(1, 100) as i32);
        compressor.set_subsamp(subsampling);
        compressor.compress_to_vec(image)
    };
    encode().map_err(|e| RenderError::Encode(e.to_string()))
}

/// `raster` as a PNG (lossless, 8 bits a sample).
pub fn encode_png(raster: &Raster) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, raster.width, raster.height);
    encoder.set_color(if raster.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .write_image_data(&raster.pixels)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn image(attrs: &[(Tag, VR, PrimitiveValue)], pixels: Vec<u8>) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        for (tag, vr, value) in attrs {
            object.put(DataElement::new(*tag, *vr, value.clone()));
        }
        object.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U8(pixels.into()),
        ));
        object
    }

    fn grey16(
        rows: u16,
        columns: u16,
        stored: u16,
        signed: bool,
        values: &[i16],
    ) -> InMemDicomObject {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        image(
            &[
                (tags::ROWS, VR::US, PrimitiveValue::from(rows)),
                (tags::COLUMNS, VR::US, PrimitiveValue::from(columns)),
                (tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
                (tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
                (tags::BITS_STORED, VR::US, PrimitiveValue::from(stored)),
                (
                    tags::PIXEL_REPRESENTATION,
                    VR::US,
                    PrimitiveValue::from(signed as u16),
                ),
                (
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from("MONOCHROME2"),
                ),
            ],
            bytes,
        )
    }

    #[test]
    fn the_window_maps_modality_values_as_ps3_3_says() {
        let linear = Window {
            center: 40.0,
            width: 400.0,
            function: VoiFunction::Linear,
        };
        assert_eq!(linear.apply(-500.0), 0);
        assert_eq!(linear.apply(1000.0), 255);
        assert_eq!(linear.apply(40.0), 128);
        let exact = Window {
            center: 0.0,
            width: 100.0,
            function: VoiFunction::LinearExact,
        };
        assert_eq!(exact.apply(-50.0), 0);
        assert_eq!(exact.apply(0.0), 128);
        let sigmoid = Window {
            center: 0.0,
            width: 100.0,
            function: VoiFunction::Sigmoid,
        };
        assert_eq!(sigmoid.apply(0.0), 128);
        assert!(sigmoid.apply(-200.0) < 5 && sigmoid.apply(200.0) > 250);
    }

    #[test]
    fn signed_twelve_bit_values_with_rescale_and_stored_window() {
        // 12 bits stored, signed: 0x0FFF is -1, 0x0800 is -2048; rescale 2x + 10.
        let mut object = grey16(1, 4, 12, true, &[0x0FFF, 0x0800, 0x07FF, 0]);
        object.put(DataElement::new(
            tags::RESCALE_SLOPE,
            VR::DS,
            PrimitiveValue::from("2"),
        ));
        object.put(DataElement::new(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            PrimitiveValue::from("10"),
        ));
        object.put(DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            PrimitiveValue::from("8"),
        ));
        object.put(DataElement::new(
            tags::WINDOW_WIDTH,
            VR::DS,
            PrimitiveValue::from("4"),
        ));
        object.put(DataElement::new(
            tags::VOILUT_FUNCTION,
            VR::CS,
            PrimitiveValue::from("LINEAR_EXACT"),
        ));
        let raster = Image::from_object(&object)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                ..Default::default()
            })
            .unwrap();
        // -1 -> 8 (centre: 128), -2048 -> -4086 (0), 2047 -> 4104 (255), 0 -> 10 (255).
        assert_eq!(raster.pixels, vec![128, 0, 255, 255]);
        // The client's window wins over the stored one.
        let window = Window {
            center: 10.0,
            width: 1.0,
            function: VoiFunction::LinearExact,
        };
        let raster = Image::from_object(&object)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                window: Some(window),
                viewport: None,
            })
            .unwrap();
        assert_eq!(raster.pixels, vec![0, 0, 255, 128]);
    }

    #[test]
    fn monochrome1_is_inverted_and_frames_are_chosen() {
        let mut object = grey16(1, 2, 16, false, &[0, 1000, 1000, 0]);
        object.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from("2"),
        ));
        object.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME1"),
        ));
        let image = Image::from_object(&object).unwrap();
        let render = |frame| {
            image.render(&Rendering {
                frame,
                ..Default::default()
            })
        };
        assert_eq!(render(1).unwrap().pixels, vec![255, 0]);
        assert_eq!(render(2).unwrap().pixels, vec![0, 255]);
        assert_eq!(render(3), Err(RenderError::NoSuchFrame(3)));
        assert_eq!(render(0), Err(RenderError::NoSuchFrame(0)));
    }

    #[test]
    fn colour_planar_and_ybr_become_rgb_and_viewports_fit() {
        let attrs = |photometric: &str, planar: u16| {
            vec![
                (tags::ROWS, VR::US, PrimitiveValue::from(2u16)),
                (tags::COLUMNS, VR::US, PrimitiveValue::from(2u16)),
                (tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)),
                (tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
                (tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
                (
                    tags::PLANAR_CONFIGURATION,
                    VR::US,
                    PrimitiveValue::from(planar),
                ),
                (
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from(photometric),
                ),
            ]
        };
        let planar = image(
            &attrs("RGB", 1),
            vec![10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30],
        );
        let raster = Image::from_object(&planar)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(&raster.pixels[..3], &[10, 20, 30]);
        let ybr = image(&attrs("YBR_FULL", 0), [128u8, 128, 128].repeat(4));
        let raster = Image::from_object(&ybr)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(&raster.pixels[..3], &[128, 128, 128]);
        let viewport = Viewport {
            width: 10,
            height: 4,
            region: None,
        };
        let raster = Image::from_object(&planar)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                window: None,
                viewport: Some(viewport),
            })
            .unwrap();
        assert_eq!(
            (raster.width, raster.height, raster.pixels.len()),
            (4, 4, 48)
        );
        let outside = Viewport {
            width: 10,
            height: 10,
            region: Some((1, 1, 2, 1)),
        };
        assert!(Image::from_object(&planar)
            .unwrap()
            .render(&Rendering {
                frame: 1,
                window: None,
                viewport: Some(outside)
            })
            .is_err());
        assert_eq!(
            Image::from_object(&image(&attrs("PALETTE COLOR", 0), vec![0; 12])).unwrap_err(),
            RenderError::Photometric("PALETTE COLOR".into())
        );
    }

    #[test]
    fn jpeg_and_png_carry_the_raster() {
        let raster = Raster {
            width: 3,
            height: 2,
            channels: 1,
            pixels: vec![0, 50, 100, 150, 200, 250],
        };
        let jpeg = encode_jpeg(&raster, 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let png = encode_png(&raster).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, raster.pixels);
    }
}
