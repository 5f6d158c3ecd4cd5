//! Where the resolution levels of a stored JPEG 2000 frame end: what a reduced view of the
//! frame needs to read (issue #19). Pure data; the codec computes it, the locator keeps it.

use serde::{Deserialize, Serialize};

/// One frame's codestream inside an instance's stored bytes, encoded resolution first (RPCL,
/// with TLM and PLT markers): the first `resolution_ends[r]` bytes of the codestream hold
/// resolutions `0..=r` (the lowest first), enough to decode at `1 / 2^(levels - r)` of the
/// full size once cut (`codec::j2k::prefix::resolution_prefix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameLevels {
    /// Frame number, from 1 (PS3.3 C.7.6.6).
    pub frame: u32,
    /// The full size, in pixels.
    pub columns: u32,
    pub rows: u32,
    /// The codestream's first byte (its SOC marker), from the instance's first byte.
    pub codestream_offset: u64,
    /// Bytes from the codestream's first byte to the end of each resolution, lowest first;
    /// the last is the whole codestream but its EOC marker.
    pub resolution_ends: Vec<u64>,
}

impl FrameLevels {
    /// Decomposition levels: resolutions but one.
    pub fn levels(&self) -> usize {
        self.resolution_ends.len().saturating_sub(1)
    }

    /// The size of resolution `r` (ISO 15444-1 B.5: each level halves the size, rounding up).
    pub fn size_at(&self, r: usize) -> (u32, u32) {
        let shift = self.levels().saturating_sub(r).min(31) as u32;
        let halve = |n: u32| ((u64::from(n) + (1u64 << shift) - 1) >> shift) as u32;
        (halve(self.columns), halve(self.rows))
    }

    /// The lowest resolution at least `width` x `height` pixels (the full one when none
    /// is smaller and still that large).
    pub fn resolution_for(&self, width: u32, height: u32) -> usize {
        (0..self.resolution_ends.len())
            .find(|&r| {
                let (w, h) = self.size_at(r);
                w >= width && h >= height
            })
            .unwrap_or(self.levels())
    }

    /// Bytes of the instance to read for resolution `r`: up to that resolution's end;
    /// `None` for a resolution the codestream does not have.
    pub fn bytes_for(&self, r: usize) -> Option<u64> {
        let end = self.resolution_ends.get(r)?;
        self.codestream_offset.checked_add(*end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_resolution_covering_a_viewport_is_chosen() {
        let ct = FrameLevels {
            frame: 1,
            columns: 512,
            rows: 500,
            codestream_offset: 1000,
            resolution_ends: vec![100, 300, 900, 3000, 12000, 40000],
        };
        assert_eq!(ct.levels(), 5);
        assert_eq!(ct.size_at(0), (16, 16));
        assert_eq!(ct.size_at(3), (128, 125));
        assert_eq!(ct.size_at(5), (512, 500));
        assert_eq!(ct.resolution_for(128, 120), 3);
        assert_eq!(ct.resolution_for(128, 128), 4);
        assert_eq!(ct.resolution_for(10, 10), 0);
        assert_eq!(ct.resolution_for(4000, 10), 5);
        assert_eq!(ct.bytes_for(3), Some(4000));
        assert_eq!(ct.bytes_for(5), Some(41000));
        assert_eq!(ct.bytes_for(6), None);
    }
}
