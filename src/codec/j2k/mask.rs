//! Region-of-interest masks in image coordinates: explicit rectangles and ellipses, and an
//! automatic foreground mask (Otsu threshold, morphological clean-up, small-component
//! removal) for images where the anatomy stands out from a dark background.

use super::{Image, J2kError};

/// A `width x height` bitmap; `true` marks ROI pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    bits: Vec<bool>,
}

/// Result of [`Mask::auto`].
#[derive(Clone, Debug)]
pub struct AutoMask {
    /// The cleaned foreground mask.
    pub mask: Mask,
    /// Fraction of the image's pixels inside the mask (0..=1), for the caller to log.
    pub fraction: f64,
    /// The Otsu threshold on the (luma) sample values.
    pub threshold: f64,
}

impl Mask {
    /// An all-background mask.
    pub fn new(width: u32, height: u32) -> Self {
        Mask {
            width,
            height,
            bits: vec![false; width as usize * height as usize],
        }
    }

    /// A mask from a row-major bitmap of `width * height` entries.
    pub fn from_bits(width: u32, height: u32, bits: Vec<bool>) -> Result<Self, J2kError> {
        if bits.len() != width as usize * height as usize {
            return Err(J2kError::MaskBitmapLength {
                expected: width as usize * height as usize,
                actual: bits.len(),
            });
        }
        Ok(Mask {
            width,
            height,
            bits,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel (x, y) is ROI; outside the image is background.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width
            && y < self.height
            && self.bits[y as usize * self.width as usize + x as usize]
    }

    /// Row-major bitmap.
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// Number of ROI pixels.
    pub fn count(&self) -> usize {
        self.bits.iter().filter(|&&b| b).count()
    }

    /// Adds the rectangle `[x, x+w) x [y, y+h)`, clipped to the image.
    pub fn add_rect(&mut self, x: u32, y: u32, w: u32, h: u32) -> &mut Self {
        let x1 = x.saturating_add(w).min(self.width);
        let y1 = y.saturating_add(h).min(self.height);
        for yy in y.min(y1)..y1 {
            let row = yy as usize * self.width as usize;
            self.bits[row + x.min(x1) as usize..row + x1 as usize].fill(true);
        }
        self
    }

    /// Adds the filled ellipse centred at (cx, cy) with radii (rx, ry), clipped to the image.
    pub fn add_ellipse(&mut self, cx: f64, cy: f64, rx: f64, ry: f64) -> &mut Self {
        if rx <= 0.0 || ry <= 0.0 {
            return self;
        }
        for y in 0..self.height {
            let dy = (y as f64 - cy) / ry;
            if dy.abs() > 1.0 {
                continue;
            }
            let half = rx * (1.0 - dy * dy).sqrt();
            let x0 = (cx - half).ceil().max(0.0) as u32;
            let x1 = ((cx + half).floor() + 1.0).clamp(0.0, self.width as f64) as u32;
            if x0 < x1 {
                let row = y as usize * self.width as usize;
                self.bits[row + x0 as usize..row + x1 as usize].fill(true);
            }
        }
        self
    }

    /// Foreground mask: Otsu threshold of the grey (or luma) histogram, opening then closing
    /// with a 3x3 square, then removal of connected components smaller than 0.1 % of the
    /// image. [`AutoMask::fraction`] says how much of the image was chosen.
    pub fn auto(image: &Image<'_>) -> Result<AutoMask, J2kError> {
        Self::auto_with(image, 0.001)
    }

    /// [`Mask::auto`] with the smallest kept component given as a fraction of the image.
    pub fn auto_with(image: &Image<'_>, min_component_fraction: f64) -> Result<AutoMask, J2kError> {
        image.validate()?;
        let (w, h) = (image.width as usize, image.height as usize);
        let nc = image.components as usize;
        let luma: Vec<f64> = (0..w * h)
            .map(|i| {
                if nc == 3 {
                    let s = |c| image.samples.get(i * 3 + c) as f64;
                    0.299 * s(0) + 0.587 * s(1) + 0.114 * s(2)
                } else {
                    image.samples.get(i) as f64
                }
            })
            .collect();
        let threshold = otsu(&luma);
        let mut bits: Vec<bool> = luma.iter().map(|&v| v > threshold).collect();
        bits = dilate(&erode(&bits, w, h), w, h);
        bits = erode(&dilate(&bits, w, h), w, h);
        let min_size = ((w * h) as f64 * min_component_fraction).ceil() as usize;
        drop_small_components(&mut bits, w, h, min_size);
        let count = bits.iter().filter(|&&b| b).count();
        Ok(AutoMask {
            mask: Mask {
                width: image.width,
                height: image.height,
                bits,
            },
            fraction: count as f64 / (w * h) as f64,
            threshold,
        })
    }
}

/// Otsu's threshold: the value maximising between-class variance over a 1024-bin histogram.
fn otsu(values: &[f64]) -> f64 {
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if max <= min {
        return max;
    }
    const BINS: usize = 1024;
    let scale = (BINS - 1) as f64 / (max - min);
    let mut hist = [0u64; BINS];
    for &v in values {
        hist[((v - min) * scale) as usize] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0f64, 0f64, -1f64, 0usize);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    // Upper edge of the chosen bin: samples above it are foreground.
    min + (best_t as f64 + 1.0) / scale
}

/// 3x3 erosion (separable; outside the image counts as background).
fn erode(b: &[bool], w: usize, h: usize) -> Vec<bool> {
    morph(b, w, h, true)
}

/// 3x3 dilation (separable).
fn dilate(b: &[bool], w: usize, h: usize) -> Vec<bool> {
    morph(b, w, h, false)
}

fn morph(b: &[bool], w: usize, h: usize, erode: bool) -> Vec<bool> {
    let pick = |a: bool, c: bool| if erode { a && c } else { a || c };
    let mut tmp = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let l = if x > 0 { b[y * w + x - 1] } else { false };
            let r = if x + 1 < w { b[y * w + x + 1] } else { false };
            tmp[y * w + x] = pick(pick(l, b[y * w + x]), r);
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let u = if y > 0 { tmp[(y - 1) * w + x] } else { false };
            let d = if y + 1 < h {
                tmp[(y + 1) * w + x]
            } else {
                false
            };
            out[y * w + x] = pick(pick(u, tmp[y * w + x]), d);
        }
    }
    out
}

/// Clears 8-connected components with fewer than `min_size` pixels.
fn drop_small_components(b: &mut [bool], w: usize, h: usize, min_size: usize) {
    let mut label = vec![0u32; w * h];
    let mut next = 0u32;
    let mut stack = Vec::new();
    let mut members = Vec::new();
    for start in 0..w * h {
        if !b[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        members.clear();
        stack.push(start);
        label[start] = next;
        while let Some(i) = stack.pop() {
            members.push(i);
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if b[j] && label[j] == 0 {
                        label[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
        if members.len() < min_size {
            for &i in &members {
                b[i] = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Samples;
    use super::*;

    #[test]
    fn rect_and_ellipse_cover_expected_pixels() {
        let mut m = Mask::new(20, 10);
        m.add_rect(2, 3, 4, 2);
        assert_eq!(m.count(), 8);
        assert!(m.get(2, 3) && m.get(5, 4) && !m.get(6, 4) && !m.get(2, 5));
        m.add_rect(18, 8, 10, 10); // clipped
        assert_eq!(m.count(), 8 + 4);
        let mut e = Mask::new(101, 101);
        e.add_ellipse(50.0, 50.0, 20.0, 10.0);
        let area = e.count() as f64;
        let expect = std::f64::consts::PI * 20.0 * 10.0;
        assert!(
            (area - expect).abs() / expect < 0.05,
            "ellipse area {area} vs {expect}"
        );
        assert!(e.get(50, 50) && e.get(70, 50) && !e.get(71, 50) && !e.get(50, 61));
    }

    #[test]
    fn auto_mask_finds_bright_disk_on_dark_noise() {
        let (w, h) = (128u32, 96u32);
        let mut s = 12345u64;
        let mut px = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let noise = ((s >> 33) % 200) as i32;
                let dx = x as f64 - 70.0;
                let dy = y as f64 - 40.0;
                let inside = dx * dx + dy * dy <= 25.0 * 25.0;
                // A few isolated bright specks must be dropped as small components.
                let speck = (x == 5 && y == 5) || (x == 120 && y == 90);
                px.push(if inside {
                    3000 + noise
                } else if speck {
                    3500
                } else {
                    100 + noise
                } as u16);
            }
        }
        let img = Image {
            width: w,
            height: h,
            components: 1,
            bits_stored: 12,
            signed: false,
            samples: Samples::U16(&px),
        };
        let auto = Mask::auto(&img).unwrap();
        let disk_area = std::f64::consts::PI * 625.0;
        let frac_expect = disk_area / (w * h) as f64;
        assert!(
            (auto.fraction - frac_expect).abs() < 0.01,
            "fraction {} vs {}",
            auto.fraction,
            frac_expect
        );
        assert!(auto.mask.get(70, 40) && auto.mask.get(50, 40) && auto.mask.get(70, 62));
        assert!(
            !auto.mask.get(5, 5) && !auto.mask.get(120, 90),
            "specks removed"
        );
        assert!(!auto.mask.get(10, 80));
        assert!(
            auto.threshold >= 299.0 && auto.threshold < 3000.0,
            "threshold {}",
            auto.threshold
        );
    }

    #[test]
    fn auto_mask_of_flat_image_is_empty() {
        let px = vec![7u8; 64];
        let img = Image {
            width: 8,
            height: 8,
            components: 1,
            bits_stored: 8,
            signed: false,
            samples: Samples::U8(&px),
        };
        let auto = Mask::auto(&img).unwrap();
        assert_eq!(auto.fraction, 0.0);
    }
}
