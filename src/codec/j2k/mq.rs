//! MQ arithmetic encoder (ISO/IEC 15444-1 Annex C): the 47-state probability table, the
//! context-state store and the byte-out / flush procedures with bit stuffing.
//!
//! Contexts are stored as `state * 2 + mps` in one byte so that a coding step is one table
//! lookup; the table is expanded to 94 entries at compile time for the same reason.

/// One row of Table C.2: (Qe, NMPS, NLPS, SWITCH).
const QE_TABLE: [(u32, u8, u8, u8); 47] = [
    (0x5601, 1, 1, 1),
    (0x3401, 2, 6, 0),
    (0x1801, 3, 9, 0),
    (0x0AC1, 4, 12, 0),
    (0x0521, 5, 29, 0),
    (0x0221, 38, 33, 0),
    (0x5601, 7, 6, 1),
    (0x5401, 8, 14, 0),
    (0x4801, 9, 14, 0),
    (0x3801, 10, 14, 0),
    (0x3001, 11, 17, 0),
    (0x2401, 12, 18, 0),
    (0x1C01, 13, 20, 0),
    (0x1601, 29, 21, 0),
    (0x5601, 15, 14, 1),
    (0x5401, 16, 14, 0),
    (0x5101, 17, 15, 0),
    (0x4801, 18, 16, 0),
    (0x3801, 19, 17, 0),
    (0x3401, 20, 18, 0),
    (0x3001, 21, 19, 0),
    (0x2801, 22, 19, 0),
    (0x2401, 23, 20, 0),
    (0x2201, 24, 21, 0),
    (0x1C01, 25, 22, 0),
    (0x1801, 26, 23, 0),
    (0x1601, 27, 24, 0),
    (0x1401, 28, 25, 0),
    (0x1201, 29, 26, 0),
    (0x1101, 30, 27, 0),
    (0x0AC1, 31, 28, 0),
    (0x09C1, 32, 29, 0),
    (0x08A1, 33, 30, 0),
    (0x0521, 34, 31, 0),
    (0x0441, 35, 32, 0),
    (0x02A1, 36, 33, 0),
    (0x0221, 37, 34, 0),
    (0x0141, 38, 35, 0),
    (0x0111, 39, 36, 0),
    (0x0085, 40, 37, 0),
    (0x0049, 41, 38, 0),
    (0x0025, 42, 39, 0),
    (0x0015, 43, 40, 0),
    (0x0009, 44, 41, 0),
    (0x0005, 45, 42, 0),
    (0x0001, 45, 43, 0),
    (0x5601, 46, 46, 0),
];

/// Expanded transition entry for a combined `state*2+mps` index.
#[derive(Clone, Copy)]
pub(crate) struct Trans {
    pub qe: u32,
    pub mps: u8,
    /// Next combined state after coding the MPS.
    pub next_mps: u8,
    /// Next combined state after coding the LPS (MPS flipped when SWITCH is set).
    pub next_lps: u8,
}

const fn expand() -> [Trans; 94] {
    let mut out = [Trans {
        qe: 0,
        mps: 0,
        next_mps: 0,
        next_lps: 0,
    }; 94];
    let mut i = 0;
    while i < 94 {
        let state = i / 2;
        let mps = (i % 2) as u8;
        let (qe, nmps, nlps, switch) = QE_TABLE[state];
        let lps_mps = if switch == 1 { 1 - mps } else { mps };
        out[i] = Trans {
            qe,
            mps,
            next_mps: nmps * 2 + mps,
            next_lps: nlps * 2 + lps_mps,
        };
        i += 1;
    }
    out
}

pub(crate) static TRANS: [Trans; 94] = expand();

/// Number of contexts used by EBCOT tier-1 (Table D.7 labels 0..=18).
pub const NUM_CTX: usize = 19;
/// Run-length (aggregation) context.
pub const CTX_RL: usize = 17;
/// Uniform context used for run-length positions.
pub const CTX_UNI: usize = 18;

/// MQ encoder writing into an owned byte vector.
pub struct MqEncoder {
    a: u32,
    c: u32,
    ct: u32,
    /// `buf[0]` is the dummy byte before the first output byte (BPST - 1); the last
    /// element is the byte register B, which may still receive a carry.
    buf: Vec<u8>,
    ctx: [u8; NUM_CTX],
    log: Vec<u8>,
    logging: bool,
}

impl Default for MqEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MqEncoder {
    /// A fresh encoder with the tier-1 initial context states (Table D.7).
    pub fn new() -> Self {
        let mut e = MqEncoder {
            a: 0x8000,
            c: 0,
            ct: 12,
            buf: Vec::with_capacity(4096),
            ctx: [0; NUM_CTX],
            log: Vec::new(),
            logging: false,
        };
        e.buf.push(0);
        e.reset_contexts();
        e
    }

    /// Reuses the allocation for another code-block.
    pub fn reset(&mut self) {
        self.a = 0x8000;
        self.c = 0;
        self.ct = 12;
        self.buf.clear();
        self.buf.push(0);
        self.reset_contexts();
        self.logging = false;
        self.log.clear();
    }

    fn reset_contexts(&mut self) {
        self.ctx = [0; NUM_CTX];
        self.ctx[0] = 4 * 2;
        self.ctx[CTX_RL] = 3 * 2;
        self.ctx[CTX_UNI] = 46 * 2;
    }

    /// Codes one binary decision `d` (0 or 1) in context `cx`.
    #[inline(always)]
    pub fn encode(&mut self, d: u32, cx: usize) {
        if self.logging {
            self.log.push(((cx as u8) << 1) | d as u8);
        }
        let st = self.ctx[cx];
        let t = TRANS[st as usize];
        self.a -= t.qe;
        if d == t.mps as u32 {
            if self.a & 0x8000 == 0 {
                if self.a < t.qe {
                    self.a = t.qe;
                } else {
                    self.c += t.qe;
                }
                self.ctx[cx] = t.next_mps;
                self.renorm();
            } else {
                self.c += t.qe;
            }
        } else {
            if self.a < t.qe {
                self.c += t.qe;
            } else {
                self.a = t.qe;
            }
            self.ctx[cx] = t.next_lps;
            self.renorm();
        }
    }

    /// RENORME: shifts until A >= 0x8000, emitting a byte whenever CT runs out. Shifts in
    /// runs (up to the next byte boundary) rather than bit by bit.
    #[inline(always)]
    fn renorm(&mut self) {
        let mut n = self.a.leading_zeros() - 16;
        while n >= self.ct {
            let k = self.ct;
            self.a <<= k;
            self.c <<= k;
            n -= k;
            self.ct = 0;
            self.byte_out();
        }
        self.a <<= n;
        self.c <<= n;
        self.ct -= n;
    }

    fn byte_out(&mut self) {
        let last = self.buf.len() - 1;
        if self.buf[last] == 0xFF {
            self.buf.push((self.c >> 20) as u8);
            self.c &= 0xFFFFF;
            self.ct = 7;
        } else if self.c < 0x8000000 {
            self.buf.push((self.c >> 19) as u8);
            self.c &= 0x7FFFF;
            self.ct = 8;
        } else {
            self.buf[last] = self.buf[last].wrapping_add(1);
            if self.buf[last] == 0xFF {
                self.c &= 0x7FFFFFF;
                self.buf.push((self.c >> 20) as u8);
                self.c &= 0xFFFFF;
                self.ct = 7;
            } else {
                self.buf.push((self.c >> 19) as u8);
                self.c &= 0x7FFFF;
                self.ct = 8;
            }
        }
    }

    /// Bytes committed so far, counting the byte register B (which can still take a carry).
    #[inline]
    pub fn committed(&self) -> usize {
        self.buf.len() - 1
    }

    /// Terminates the codeword (C.2.9 FLUSH) and returns the segment bytes.
    pub fn flush(&mut self) -> &[u8] {
        let tempc = self.c + self.a;
        self.c |= 0xFFFF;
        if self.c >= tempc {
            self.c -= 0x8000;
        }
        self.c <<= self.ct;
        self.byte_out();
        self.c <<= self.ct;
        self.byte_out();
        // B is part of the segment unless it is 0xFF: a segment must not end with 0xFF and
        // the decoder pads with ones anyway.
        let end = if *self.buf.last().unwrap_or(&0) == 0xFF {
            self.buf.len() - 1
        } else {
            self.buf.len()
        };
        &self.buf[1..end]
    }
}

impl MqEncoder {
    /// Starts recording every (context, symbol) pair coded from now on.
    pub fn start_log(&mut self) {
        self.log.clear();
        self.logging = true;
    }

    /// Stops recording; returns the symbols logged so far as `cx << 1 | d`.
    pub fn take_log(&mut self) -> Vec<u8> {
        self.logging = false;
        std::mem::take(&mut self.log)
    }

    /// Symbols logged so far.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
}

/// Whether `prefix` (what a decoder receives, padded with ones past its end) decodes to
/// exactly the `cx << 1 | d` symbols in `log`.
pub fn prefix_decodes(prefix: &[u8], log: &[u8]) -> bool {
    let mut dec = MqDecoder::new(prefix);
    log.iter()
        .all(|&s| dec.decode((s >> 1) as usize) == (s & 1) as u32)
}

/// MQ decoder (C.3). The encoder uses it to prove that a truncated ROI codeword still
/// decodes every ROI symbol; the tests use it to check the encoder.
pub struct MqDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    a: u32,
    c: u32,
    ct: u32,
    ctx: [u8; NUM_CTX],
}

impl<'a> MqDecoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut d = MqDecoder {
            data,
            pos: 0,
            a: 0,
            c: 0,
            ct: 0,
            ctx: [0; NUM_CTX],
        };
        d.ctx[0] = 8;
        d.ctx[CTX_RL] = 6;
        d.ctx[CTX_UNI] = 92;
        d.c = (d.byte(0) as u32) << 16;
        d.byte_in();
        d.c <<= 7;
        d.ct -= 7;
        d.a = 0x8000;
        d
    }
    fn byte(&self, i: usize) -> u8 {
        // Past the end the decoder sees 0xFF 0xFF, i.e. a marker, i.e. ones.
        *self.data.get(i).unwrap_or(&0xFF)
    }
    fn byte_in(&mut self) {
        if self.byte(self.pos) == 0xFF {
            if self.byte(self.pos + 1) > 0x8F {
                self.c += 0xFF00;
                self.ct = 8;
            } else {
                self.pos += 1;
                self.c += (self.byte(self.pos) as u32) << 9;
                self.ct = 7;
            }
        } else {
            self.pos += 1;
            self.c += (self.byte(self.pos) as u32) << 8;
            self.ct = 8;
        }
    }
    fn renorm(&mut self) {
        loop {
            if self.ct == 0 {
                self.byte_in();
            }
            self.a <<= 1;
            self.c <<= 1;
            self.ct -= 1;
            if self.a & 0x8000 != 0 {
                break;
            }
        }
    }
    pub fn decode(&mut self, cx: usize) -> u32 {
        let t = TRANS[self.ctx[cx] as usize];
        self.a -= t.qe;
        let d;
        if (self.c >> 16) < t.qe {
            // LPS exchange or MPS exchange in the lower sub-interval.
            if self.a < t.qe {
                d = t.mps as u32;
                self.ctx[cx] = t.next_mps;
            } else {
                d = 1 - t.mps as u32;
                self.ctx[cx] = t.next_lps;
            }
            self.a = t.qe;
            self.renorm();
        } else {
            self.c -= t.qe << 16;
            if self.a & 0x8000 == 0 {
                if self.a < t.qe {
                    d = 1 - t.mps as u32;
                    self.ctx[cx] = t.next_lps;
                } else {
                    d = t.mps as u32;
                    self.ctx[cx] = t.next_mps;
                }
                self.renorm();
            } else {
                d = t.mps as u32;
            }
        }
        d
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }

    #[test]
    fn round_trip_random_symbols_in_many_contexts() {
        for seed in 0..20u64 {
            let mut rng = Lcg(seed);
            let n = 1 + (rng.next() % 20000) as usize;
            // Skewed sources so that both MPS and LPS paths and state switches are exercised.
            let syms: Vec<(u32, usize)> = (0..n)
                .map(|i| {
                    let cx = (rng.next() as usize) % NUM_CTX;
                    let p = (cx as u32 * 13 + (i as u32 / 1000)) % 100;
                    ((rng.next() % 100 < p) as u32, cx)
                })
                .collect();
            let mut enc = MqEncoder::new();
            for &(d, cx) in &syms {
                enc.encode(d, cx);
            }
            let bytes = enc.flush().to_vec();
            assert!(bytes.last() != Some(&0xFF));
            let mut dec = MqDecoder::new(&bytes);
            for (i, &(d, cx)) in syms.iter().enumerate() {
                assert_eq!(dec.decode(cx), d, "seed {seed} symbol {i} of {n}");
            }
        }
    }

    #[test]
    fn all_zero_symbols_compress_well() {
        let mut enc = MqEncoder::new();
        for _ in 0..100_000 {
            enc.encode(0, 3);
        }
        let len = enc.flush().len();
        assert!(len < 64, "100k MPS symbols took {len} bytes");
    }
}
