//! Tag trees (ISO/IEC 15444-1 B.10.2) and the bit-stuffing packet-header bit writer
//! (B.10.1). Tag trees code a 2D array of non-negative integers hierarchically so that values
//! shared by neighbouring code-blocks (inclusion layer, missing bit-planes) cost few bits.

/// Packet-header bit writer: MSB first; after an 0xFF byte the next byte carries only 7 bits
/// so that no marker code can appear inside a header.
#[derive(Default)]
pub struct BitWriter {
    pub out: Vec<u8>,
    cur: u32,
    nbits: u32,
    after_ff: bool,
}

impl BitWriter {
    /// Appends one bit.
    #[inline]
    pub fn bit(&mut self, b: u32) {
        self.cur = (self.cur << 1) | (b & 1);
        self.nbits += 1;
        let cap = if self.after_ff { 7 } else { 8 };
        if self.nbits == cap {
            let byte = self.cur as u8;
            self.out.push(byte);
            self.after_ff = byte == 0xFF;
            self.cur = 0;
            self.nbits = 0;
        }
    }

    /// Appends the `n` low bits of `v`, most significant first.
    pub fn bits(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1);
        }
    }

    /// Pads to a byte boundary with zeros; a trailing 0xFF gets a 0x00 after it so the packet
    /// body cannot be mistaken for the second half of a marker.
    pub fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            let cap = if self.after_ff { 7 } else { 8 };
            let byte = (self.cur << (cap - self.nbits)) as u8;
            self.out.push(byte);
            self.after_ff = byte == 0xFF;
        }
        if self.after_ff {
            self.out.push(0);
        }
        self.out
    }
}

/// A tag tree over a `w x h` grid of leaves with encoder state.
pub struct TagTree {
    /// (width, offset) of each level, leaves first, root last.
    levels: Vec<(usize, usize)>,
    value: Vec<u32>,
    low: Vec<u32>,
    known: Vec<bool>,
}

impl TagTree {
    /// A tree whose leaves hold `values` (row-major `w x h`); inner nodes take the minimum of
    /// their children.
    pub fn new(w: usize, h: usize, values: &[u32]) -> Self {
        let mut levels = Vec::new();
        let (mut lw, mut lh, mut off) = (w, h, 0);
        loop {
            levels.push((lw, off));
            off += lw * lh;
            if lw <= 1 && lh <= 1 {
                break;
            }
            lw = lw.div_ceil(2);
            lh = lh.div_ceil(2);
        }
        let mut value = vec![u32::MAX; off];
        value[..w * h].copy_from_slice(&values[..w * h]);
        let (mut pw, mut ph) = (w, h);
        for l in 1..levels.len() {
            let (cw, coff) = levels[l];
            let poff = levels[l - 1].1;
            for y in 0..ph {
                for x in 0..pw {
                    let v = value[poff + y * pw + x];
                    let p = coff + (y / 2) * cw + x / 2;
                    value[p] = value[p].min(v);
                }
            }
            pw = cw;
            ph = ph.div_ceil(2);
        }
        TagTree {
            levels,
            low: vec![0; off],
            known: vec![false; off],
            value,
        }
    }

    /// Codes enough bits for the decoder to learn whether leaf `(x, y)`'s value is below
    /// `threshold` (and the value itself if it is).
    pub fn encode(&mut self, bw: &mut BitWriter, x: usize, y: usize, threshold: u32) {
        let mut path = [0usize; 40];
        let n = self.levels.len();
        let (mut px, mut py) = (x, y);
        for (l, &(lw, off)) in self.levels.iter().enumerate() {
            path[l] = off + py * lw + px;
            px /= 2;
            py /= 2;
        }
        let mut low = 0;
        for &node in path[..n].iter().rev() {
            if low > self.low[node] {
                self.low[node] = low;
            } else {
                low = self.low[node];
            }
            while low < threshold {
                if low >= self.value[node] {
                    if !self.known[node] {
                        bw.bit(1);
                        self.known[node] = true;
                    }
                    break;
                }
                bw.bit(0);
                low += 1;
            }
            self.low[node] = low;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit reader undoing [`BitWriter`]'s stuffing.
    struct BitReader<'a> {
        data: &'a [u8],
        pos: usize,
        nbits: u32,
        cur: u32,
        after_ff: bool,
    }
    impl BitReader<'_> {
        fn bit(&mut self) -> u32 {
            if self.nbits == 0 {
                self.cur = self.data[self.pos] as u32;
                self.nbits = if self.after_ff { 7 } else { 8 };
                self.after_ff = self.cur == 0xFF;
                self.pos += 1;
            }
            self.nbits -= 1;
            (self.cur >> self.nbits) & 1
        }
    }

    /// Decoder mirror of the tag tree, straight from B.10.2.
    struct Dec {
        levels: Vec<(usize, usize)>,
        low: Vec<u32>,
        value: Vec<u32>,
    }
    impl Dec {
        fn decode(&mut self, br: &mut BitReader, x: usize, y: usize, threshold: u32) -> bool {
            let mut path = vec![];
            let (mut px, mut py) = (x, y);
            for &(lw, off) in &self.levels {
                path.push(off + py * lw + px);
                px /= 2;
                py /= 2;
            }
            let mut low = 0;
            for &node in path.iter().rev() {
                low = low.max(self.low[node]);
                while low < threshold && low < self.value[node] {
                    if br.bit() == 1 {
                        self.value[node] = low;
                    } else {
                        low += 1;
                    }
                }
                self.low[node] = low;
            }
            self.value[path[0]] < threshold
        }
    }

    #[test]
    fn inclusion_and_values_decode_back() {
        let (w, h) = (5, 3);
        let values: Vec<u32> = vec![0, 2, 1, 3, 0, 4, 4, 1, 2, 2, 0, 1, 3, 5, 2];
        let mut tree = TagTree::new(w, h, &values);
        let mut bw = BitWriter::default();
        // Layer-style thresholds first, then full values, like inclusion + bit-plane trees.
        for layer in 0..6u32 {
            for y in 0..h {
                for x in 0..w {
                    tree.encode(&mut bw, x, y, layer + 1);
                }
            }
        }
        let bytes = bw.finish();
        let mut dec = Dec {
            levels: tree.levels.clone(),
            low: vec![0; tree.value.len()],
            value: vec![u32::MAX; tree.value.len()],
        };
        let mut br = BitReader {
            data: &bytes,
            pos: 0,
            nbits: 0,
            cur: 0,
            after_ff: false,
        };
        for layer in 0..6u32 {
            for y in 0..h {
                for x in 0..w {
                    let inc = dec.decode(&mut br, x, y, layer + 1);
                    assert_eq!(
                        inc,
                        values[y * w + x] <= layer,
                        "leaf {x},{y} layer {layer}"
                    );
                }
            }
        }
    }

    #[test]
    fn writer_stuffs_after_ff() {
        let mut bw = BitWriter::default();
        bw.bits(0xFF, 8);
        bw.bits(0x7F, 7);
        bw.bit(1);
        let out = bw.finish();
        assert_eq!(out[0], 0xFF);
        assert_eq!(out[1], 0x7F, "only 7 bits after 0xFF");
        assert_eq!(out[2], 0x80);
    }
}
