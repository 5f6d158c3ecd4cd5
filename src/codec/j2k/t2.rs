//! Tier-2 (ISO/IEC 15444-1 Annex B): the tile / component / resolution / band / code-block
//! tree of coded data, and packet formation for it — packet headers with inclusion and
//! zero-bit-plane tag trees, pass counts, Lblock-signalled segment lengths — in RPCL order
//! with one precinct per resolution (default maximal precincts): every packet of resolution
//! `r` comes before any of `r + 1`, so a prefix of the tile's data decodes at reduced size.

use super::t1::CodedBlock;
use super::tagtree::{BitWriter, TagTree};

/// One code-block's coded data and its truncation per quality layer.
#[derive(Clone, Debug, Default)]
pub struct Block {
    pub coded: CodedBlock,
    /// Missing most-significant bit-planes relative to the band's Mb (plus ROI shift).
    pub zbp: u32,
    /// Cumulative number of passes included after each layer (non-decreasing).
    pub cuts: Vec<usize>,
    /// Passes that every layer must include (ROI passes).
    pub min_passes: usize,
    /// Squared-error weight turning tier-1 distortion into image-domain squared error.
    pub weight: f64,
}

/// A subband with its code-block grid (raster order).
#[derive(Clone, Debug, Default)]
pub struct Band {
    pub ncbx: usize,
    pub ncby: usize,
    pub blocks: Vec<Block>,
}

/// A resolution level: LL only at r = 0, else HL, LH, HH.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    pub bands: Vec<Band>,
}

/// All resolutions of one component of one tile.
#[derive(Clone, Debug, Default)]
pub struct TileComp {
    pub resolutions: Vec<Resolution>,
}

/// One tile's coded components.
#[derive(Clone, Debug, Default)]
pub struct Tile {
    pub comps: Vec<TileComp>,
}

impl Tile {
    /// Visits every code-block.
    pub fn blocks_mut(&mut self) -> impl Iterator<Item = &mut Block> {
        self.comps
            .iter_mut()
            .flat_map(|c| c.resolutions.iter_mut())
            .flat_map(|r| r.bands.iter_mut())
            .flat_map(|b| b.blocks.iter_mut())
    }

    /// Visits every code-block.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.comps
            .iter()
            .flat_map(|c| c.resolutions.iter())
            .flat_map(|r| r.bands.iter())
            .flat_map(|b| b.blocks.iter())
    }
}

struct BlockState {
    included: bool,
    lblock: u32,
    sent: usize,
}

struct BandState {
    incl: TagTree,
    zbp: TagTree,
    blocks: Vec<BlockState>,
}

fn floor_log2(v: usize) -> u32 {
    usize::BITS - 1 - v.leading_zeros()
}

/// Bits needed to write `v` (at least 1).
fn bit_len(v: u32) -> u32 {
    (32 - v.leading_zeros()).max(1)
}

fn write_num_passes(bw: &mut BitWriter, n: usize) {
    match n {
        1 => bw.bit(0),
        2 => bw.bits(0b10, 2),
        3..=5 => {
            bw.bits(0b11, 2);
            bw.bits((n - 3) as u32, 2);
        }
        6..=36 => {
            bw.bits(0b1111, 4);
            bw.bits((n - 6) as u32, 5);
        }
        _ => {
            bw.bits(0b1_1111_1111, 9);
            bw.bits((n - 37) as u32, 7);
        }
    }
}

/// One tile's packets, as [`encode_tile`] forms them.
#[derive(Clone, Debug, Default)]
pub struct TileBody {
    /// The concatenated packets (the tile-part body).
    pub bytes: Vec<u8>,
    /// Each packet's length in codestream order (what a PLT marker lists).
    pub packet_lens: Vec<u32>,
    /// For each resolution `r`, the offset in `bytes` where the packets of resolutions
    /// `0..=r` end.
    pub resolution_ends: Vec<usize>,
}

/// Forms the packets of layers `0..nlayers` of one tile in RPCL order.
pub fn encode_tile(tile: &Tile, nlayers: usize) -> TileBody {
    let mut bytes = Vec::new();
    let mut packet_lens = Vec::new();
    let mut resolution_ends = Vec::new();
    let mut start = 0;
    form_packets(
        tile,
        nlayers,
        &mut Sink::Bytes(&mut bytes),
        |end, res_done| {
            packet_lens.push((end - start) as u32);
            start = end;
            if res_done {
                resolution_ends.push(end);
            }
        },
    );
    TileBody {
        bytes,
        packet_lens,
        resolution_ends,
    }
}

/// Length of what [`encode_tile`] would return, without copying packet bodies: rate
/// control calls this many times per layer.
pub fn tile_len(tile: &Tile, nlayers: usize) -> usize {
    let mut n = 0;
    form_packets(tile, nlayers, &mut Sink::Count(&mut n), |_, _| {});
    n
}

enum Sink<'a> {
    Bytes(&'a mut Vec<u8>),
    Count(&'a mut usize),
}

impl Sink<'_> {
    fn put(&mut self, b: &[u8]) {
        match self {
            Sink::Bytes(v) => v.extend_from_slice(b),
            Sink::Count(n) => **n += b.len(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Sink::Bytes(v) => v.len(),
            Sink::Count(n) => **n,
        }
    }
}

/// Writes every packet to `out`, calling `packet_done(end, last_of_resolution)` after each
/// with `out`'s length.
fn form_packets(
    tile: &Tile,
    nlayers: usize,
    out: &mut Sink,
    mut packet_done: impl FnMut(usize, bool),
) {
    let mut states: Vec<Vec<Vec<BandState>>> = tile
        .comps
        .iter()
        .map(|c| {
            c.resolutions
                .iter()
                .map(|r| {
                    r.bands
                        .iter()
                        .map(|b| {
                            let first: Vec<u32> = b
                                .blocks
                                .iter()
                                .map(|blk| {
                                    blk.cuts
                                        .iter()
                                        .position(|&n| n > 0)
                                        .map_or(u32::MAX, |l| l as u32)
                                })
                                .collect();
                            let zbp: Vec<u32> = b.blocks.iter().map(|blk| blk.zbp).collect();
                            BandState {
                                incl: TagTree::new(b.ncbx, b.ncby, &first),
                                zbp: TagTree::new(b.ncbx, b.ncby, &zbp),
                                blocks: b
                                    .blocks
                                    .iter()
                                    .map(|_| BlockState {
                                        included: false,
                                        lblock: 3,
                                        sent: 0,
                                    })
                                    .collect(),
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let nres = tile
        .comps
        .iter()
        .map(|c| c.resolutions.len())
        .max()
        .unwrap_or(0);
    // RPCL with one precinct (position) per resolution: resolution, component, layer. A
    // packet's header depends only on earlier layers of its own component and resolution, so
    // this order gives the same packets as LRCP, rearranged.
    for r in 0..nres {
        let last = tile
            .comps
            .iter()
            .rposition(|c| c.resolutions.len() > r)
            .unwrap_or(0);
        for (c, (comp, state)) in tile.comps.iter().zip(states.iter_mut()).enumerate() {
            if let (Some(res), Some(st)) = (comp.resolutions.get(r), state.get_mut(r)) {
                for layer in 0..nlayers {
                    encode_packet(res, st, layer, out);
                    packet_done(out.len(), c == last && layer + 1 == nlayers);
                }
            }
        }
    }
}

fn encode_packet(res: &Resolution, states: &mut [BandState], layer: usize, out: &mut Sink) {
    let mut bw = BitWriter::default();
    let any = res.bands.iter().zip(states.iter()).any(|(b, s)| {
        b.blocks
            .iter()
            .zip(&s.blocks)
            .any(|(blk, st)| blk.cuts[layer] > st.sent)
    });
    if !any {
        bw.bit(0);
        out.put(&bw.finish());
        return;
    }
    bw.bit(1);
    let mut body: Vec<(&[u8], usize, usize)> = Vec::new();
    for (band, st) in res.bands.iter().zip(states.iter_mut()) {
        for (i, blk) in band.blocks.iter().enumerate() {
            let (x, y) = (i % band.ncbx, i / band.ncbx);
            let bs = &mut st.blocks[i];
            let new = blk.cuts[layer] - bs.sent;
            if !bs.included {
                st.incl.encode(&mut bw, x, y, layer as u32 + 1);
            } else {
                bw.bit((new > 0) as u32);
            }
            if new == 0 {
                continue;
            }
            if !bs.included {
                st.zbp.encode(&mut bw, x, y, blk.zbp + 1);
                bs.included = true;
            }
            write_num_passes(&mut bw, new);
            let start = if bs.sent == 0 {
                0
            } else {
                blk.coded.passes[bs.sent - 1].rate as usize
            };
            let end = blk.coded.passes[blk.cuts[layer] - 1].rate as usize;
            let len = (end - start) as u32;
            let extra = floor_log2(new);
            let need = bit_len(len);
            while bs.lblock + extra < need {
                bw.bit(1);
                bs.lblock += 1;
            }
            bw.bit(0);
            bw.bits(len, bs.lblock + extra);
            bs.sent = blk.cuts[layer];
            body.push((&blk.coded.data, start, end));
        }
    }
    out.put(&bw.finish());
    for (data, s, e) in body {
        out.put(&data[s..e]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::j2k::t1::PassInfo;

    #[test]
    fn empty_packets_are_one_zero_byte() {
        let tile = Tile {
            comps: vec![TileComp {
                resolutions: vec![Resolution {
                    bands: vec![Band {
                        ncbx: 1,
                        ncby: 1,
                        blocks: vec![Block {
                            cuts: vec![0, 0],
                            ..Default::default()
                        }],
                    }],
                }],
            }],
        };
        let body = encode_tile(&tile, 2);
        assert_eq!(body.bytes, vec![0, 0]);
        assert_eq!(body.packet_lens, vec![1, 1]);
        assert_eq!(body.resolution_ends, vec![2]);
        assert_eq!(tile_len(&tile, 2), 2);
    }

    #[test]
    fn single_block_packet_header_layout() {
        let coded = CodedBlock {
            data: vec![0x12; 10],
            passes: vec![
                PassInfo { rate: 4, dist: 1.0 },
                PassInfo {
                    rate: 10,
                    dist: 2.0,
                },
            ],
            numbps: 1,
        };
        let tile = Tile {
            comps: vec![TileComp {
                resolutions: vec![Resolution {
                    bands: vec![Band {
                        ncbx: 1,
                        ncby: 1,
                        blocks: vec![Block {
                            coded,
                            zbp: 2,
                            cuts: vec![2],
                            ..Default::default()
                        }],
                    }],
                }],
            }],
        };
        let body = encode_tile(&tile, 1);
        assert_eq!(body.packet_lens, vec![12]);
        let out = body.bytes;
        assert_eq!(tile_len(&tile, 1), out.len());
        // 1 (non-empty) | 1 (included, tag tree) | 001 (zbp=2) | 10 (2 passes) | 0 (no Lblock
        // increase) | 1010 (len 10 in 3+1 bits) -> 1100 1100 1010 + pad.
        assert_eq!(&out[..2], &[0b1100_1100, 0b1010_0000]);
        assert_eq!(&out[2..], &[0x12; 10]);
    }
}
