//! A tiled image pyramid built from rows, with bounded memory: rows of the full image go in
//! one at a time; each level keeps only the strip of rows it is filling (one tile high) and
//! one row waiting for its pair; full strips come out, to be cut into tiles and encoded
//! elsewhere. Level k+1 is level k halved: width and height `ceil(n / 2)`, each pixel the
//! rounded mean of a 2x2 block, coordinates past the edge clamped to it. Levels go on until
//! one tile holds a whole level. I/O-free.

/// Bytes per pixel: RGB, 8 bits a sample.
pub const CHANNELS: usize = 3;

/// The sizes of every level of a `width` x `height` image in `tile`-pixel tiles, finest
/// first.
pub fn level_sizes(width: u32, height: u32, tile: u32) -> Vec<(u32, u32)> {
    let mut sizes = vec![(width, height)];
    let (mut w, mut h) = (width, height);
    while w > tile || h > tile {
        (w, h) = (w.div_ceil(2), h.div_ceil(2));
        sizes.push((w, h));
    }
    sizes
}

/// Tiles across and down a `width` x `height` level.
pub fn tiles(width: u32, height: u32, tile: u32) -> (u32, u32) {
    (width.div_ceil(tile), height.div_ceil(tile))
}

/// A strip of one level: `rows` rows (at most one tile) starting at row `first_row`.
#[derive(Debug)]
pub struct Strip {
    pub level: usize,
    /// The strip's number in its level, from 0 at the top.
    pub index: u32,
    pub width: u32,
    pub rows: u32,
    /// `rows` rows of `width` RGB pixels.
    pub pixels: Vec<u8>,
}

impl Strip {
    /// Tile `column` of this strip, `tile` x `tile` pixels, past the image white.
    pub fn tile(&self, column: u32, tile: u32) -> Vec<u8> {
        let t = tile as usize;
        let mut out = vec![255u8; t * t * CHANNELS];
        let x0 = (column * tile) as usize;
        let width = (self.width as usize).saturating_sub(x0).min(t);
        let row_bytes = self.width as usize * CHANNELS;
        for y in 0..self.rows as usize {
            let from = y * row_bytes + x0 * CHANNELS;
            out[y * t * CHANNELS..][..width * CHANNELS]
                .copy_from_slice(&self.pixels[from..from + width * CHANNELS]);
        }
        out
    }
}

#[derive(Debug)]
struct Level {
    width: u32,
    height: u32,
    /// Rows received so far.
    received: u32,
    strip: Vec<u8>,
    strips: u32,
    /// An even row waiting for the odd row below it (the next level's input).
    waiting: Option<Vec<u8>>,
}

/// The pyramid being built.
#[derive(Debug)]
pub struct Pyramid {
    tile: u32,
    levels: Vec<Level>,
}

impl Pyramid {
    pub fn new(width: u32, height: u32, tile: u32) -> Pyramid {
        let levels = level_sizes(width, height, tile)
            .into_iter()
            .map(|(width, height)| Level {
                width,
                height,
                received: 0,
                strip: Vec::new(),
                strips: 0,
                waiting: None,
            })
            .collect();
        Pyramid { tile, levels }
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// The next row of the full image (`width` RGB pixels): the strips it completes, of any
    /// level, in the order they completed.
    pub fn push_row(&mut self, row: &[u8]) -> Vec<Strip> {
        let mut done = Vec::new();
        self.push(0, row.to_vec(), &mut done);
        done
    }

    /// Whether every row of the full image went in.
    pub fn complete(&self) -> bool {
        self.levels.iter().all(|l| l.received == l.height)
    }

    fn push(&mut self, at: usize, row: Vec<u8>, done: &mut Vec<Strip>) {
        let tile = self.tile;
        let coarsest = at + 1 == self.levels.len();
        let level = &mut self.levels[at];
        debug_assert_eq!(row.len(), level.width as usize * CHANNELS);
        if level.received >= level.height {
            return;
        }
        level.received += 1;
        level.strip.extend_from_slice(&row);
        let last = level.received == level.height;
        let rows = level.strip.len() / (level.width as usize * CHANNELS);
        if rows as u32 == tile || last {
            done.push(Strip {
                level: at,
                index: level.strips,
                width: level.width,
                rows: rows as u32,
                pixels: std::mem::take(&mut level.strip),
            });
            level.strips += 1;
        }
        if coarsest {
            return;
        }
        // Pairs of rows make the next level's row; an odd last row pairs with itself.
        let below = match level.waiting.take() {
            None if !last => {
                level.waiting = Some(row);
                return;
            }
            None => halve(&row, &row, level.width),
            Some(above) => halve(&above, &row, level.width),
        };
        self.push(at + 1, below, done);
    }
}

/// One row of the next level from two rows of `width` pixels: each pixel the rounded mean
/// of a 2x2 block, the last column paired with itself when `width` is odd.
pub fn halve(top: &[u8], bottom: &[u8], width: u32) -> Vec<u8> {
    let w = width as usize;
    let half = w.div_ceil(2);
    let mut out = vec![0u8; half * CHANNELS];
    for x in 0..half {
        let (a, b) = (2 * x, (2 * x + 1).min(w - 1));
        for c in 0..CHANNELS {
            let sum = top[a * CHANNELS + c] as u32
                + top[b * CHANNELS + c] as u32
                + bottom[a * CHANNELS + c] as u32
                + bottom[b * CHANNELS + c] as u32;
            out[x * CHANNELS + c] = ((sum + 2) / 4) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_halve_until_one_tile_holds_the_level() {
        assert_eq!(
            level_sizes(1000, 700, 256),
            [(1000, 700), (500, 350), (250, 175)]
        );
        assert_eq!(level_sizes(256, 256, 256), [(256, 256)]);
        assert_eq!(level_sizes(20_000, 20_000, 256).len(), 8);
        assert_eq!(
            *level_sizes(20_000, 20_000, 256).last().unwrap(),
            (157, 157)
        );
        assert_eq!(tiles(1000, 700, 256), (4, 3));
    }

    #[test]
    fn every_level_comes_out_in_strips_with_its_pixels_halved() {
        let (w, h, tile) = (7u32, 5u32, 2u32);
        let pixel = |x: u32, y: u32, c: usize| (x * 30 + y * 7 + c as u32 * 3) as u8;
        let mut pyramid = Pyramid::new(w, h, tile);
        assert_eq!(pyramid.levels(), 3); // 7x5, 4x3, 2x2
        let mut strips = Vec::new();
        for y in 0..h {
            let row: Vec<u8> = (0..w)
                .flat_map(|x| (0..CHANNELS).map(move |c| pixel(x, y, c)))
                .collect();
            strips.extend(pyramid.push_row(&row));
        }
        assert!(pyramid.complete());
        // Each level's strips in order, covering its height.
        for (level, (lw, lh)) in level_sizes(w, h, tile).into_iter().enumerate() {
            let mine: Vec<&Strip> = strips.iter().filter(|s| s.level == level).collect();
            assert_eq!(mine.len() as u32, lh.div_ceil(tile), "level {level}");
            assert!(mine.iter().enumerate().all(|(i, s)| s.index == i as u32));
            assert_eq!(mine.iter().map(|s| s.rows).sum::<u32>(), lh);
            assert!(mine.iter().all(|s| s.width == lw));
        }
        // Level 1, pixel (3, 2): the block (6..=6, 4..=4) clamped at both edges.
        let level1: Vec<u8> = strips
            .iter()
            .filter(|s| s.level == 1)
            .flat_map(|s| s.pixels.clone())
            .collect();
        let at = |x: usize, y: usize, c: usize| level1[(y * 4 + x) * CHANNELS + c];
        assert_eq!(at(3, 2, 0), pixel(6, 4, 0));
        let mean = (pixel(0, 0, 1) as u32
            + pixel(1, 0, 1) as u32
            + pixel(0, 1, 1) as u32
            + pixel(1, 1, 1) as u32
            + 2)
            / 4;
        assert_eq!(at(0, 0, 1) as u32, mean);
        // An edge tile is padded with white.
        let last = strips
            .iter()
            .find(|s| s.level == 0 && s.index == 2)
            .unwrap();
        assert_eq!(last.rows, 1);
        let t = last.tile(3, tile);
        assert_eq!(&t[..3], &[pixel(6, 4, 0), pixel(6, 4, 1), pixel(6, 4, 2)]);
        assert!(t[3..].iter().all(|&v| v == 255), "{t:?}");
    }
}
