//! Synthetic test images for the JPEG 2000 encoder, shared by tests/j2k.rs and
//! examples/j2k_bench.rs (included with `#[path]`): deterministic, generated in code so no
//! image data is committed.
#![allow(dead_code)]

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly Gaussian noise (sum of uniforms) with the given standard deviation.
    fn noise(&mut self, sd: f64) -> f64 {
        let s: f64 = (0..4)
            .map(|_| (self.next() % 10_000) as f64 / 10_000.0)
            .sum();
        (s - 2.0) * sd * 1.732
    }
}

/// CT-like 12-bit phantom: air, an elliptical body, a bone ring, a bright disk lesion.
pub fn ct_phantom(w: u32, h: u32) -> Vec<u16> {
    let mut rng = Rng(0x5EED_1234);
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let body = (dx / (0.42 * w as f64)).powi(2) + (dy / (0.33 * h as f64)).powi(2);
            let mut v = if body <= 1.0 {
                let ring = (dx / (0.2 * w as f64)).powi(2) + (dy / (0.17 * h as f64)).powi(2);
                let base = if (0.85..=1.0).contains(&ring) {
                    2600.0
                } else {
                    1040.0 + 30.0 * (x as f64 / 37.0).sin()
                };
                base + rng.noise(12.0)
            } else {
                24.0 + rng.noise(6.0)
            };
            let (lx, ly) = (
                x as f64 - cx - 0.12 * w as f64,
                y as f64 - cy + 0.05 * h as f64,
            );
            if lx * lx + ly * ly <= (0.05 * w as f64).powi(2) {
                v = 1750.0 + rng.noise(12.0);
            }
            out.push(v.round().clamp(0.0, 4095.0) as u16);
        }
    }
    out
}

/// MR-like 16-bit image: smooth anatomy-like blobs with noise using the full range.
pub fn mr_like(w: u32, h: u32) -> Vec<u16> {
    let mut rng = Rng(0xABCD_EF01);
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f64 / w as f64 - 0.5, y as f64 / h as f64 - 0.5);
            let r2 = u * u + v * v;
            let val = if r2 < 0.16 {
                30000.0 + 20000.0 * (8.0 * u).cos() * (6.0 * v).sin() + rng.noise(400.0)
            } else {
                800.0 + rng.noise(300.0)
            };
            out.push(val.round().clamp(0.0, 65535.0) as u16);
        }
    }
    out
}

pub fn rgb_image(w: u32, h: u32) -> Vec<u8> {
    let mut rng = Rng(77);
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w.max(1)) as f64;
            let g = (y * 255 / h.max(1)) as f64;
            let b = if (x / 16 + y / 16) % 2 == 0 {
                200.0
            } else {
                40.0
            };
            for c in [r, g, b] {
                out.push((c + rng.noise(3.0)).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

pub fn signed_image(w: u32, h: u32) -> Vec<i16> {
    let mut rng = Rng(4242);
    let mut out: Vec<i16> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            let v =
                -1024.0 + 1500.0 * ((x / 20.0).sin() + (y / 13.0).cos()).abs() + rng.noise(20.0);
            v.round() as i16
        })
        .collect();
    out[0] = i16::MIN;
    out[1] = i16::MAX;
    out
}
