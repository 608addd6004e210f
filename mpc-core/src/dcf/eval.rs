//! Evaluation: each party's share at public points, walking the tree once
//! for points that share a prefix.

use super::keys::*;
use super::tree::{cipher, follow, mmo_input, mmo_output};
use aes::cipher::{BlockEncrypt, generic_array::GenericArray};

/// Party `party`'s share of `β_k·[x < α_k]` at the public point `x` (low
/// `bits` bits used) for key `k` of `keys`, one word per payload word. The
/// readable reference of [`eval_batch`].
pub fn eval_words(party: usize, root: &Block, keys: &DcfKeys, k: usize, x: u64) -> Vec<u64> {
    eval_words_at(party, root, keys, k, x, keys.bits)
}

/// [`eval_words`] for a point that stops at `depth` (the full depth, or one
/// of the keys' stops): party `party`'s share of `β_k·[x' < α_k]`, `x'` =
/// `x` with its low `bits − depth` bits cleared.
pub fn eval_words_at(
    party: usize,
    root: &Block,
    keys: &DcfKeys,
    k: usize,
    x: u64,
    depth: u32,
) -> Vec<u64> {
    let key = keys.key(k);
    let (n, width) = (key.n, key.width);
    let slot = keys.stop_slots()[depth as usize];
    assert!(
        depth == keys.bits || slot.is_some(),
        "dcf: no stop at depth {depth}"
    );
    let mut s = u128::from_le_bytes(*root);
    let mut t = party as u8;
    let mut v = vec![0u64; width];
    let sg = if party == 0 { 1u64 } else { u64::MAX };
    for i in 0..depth as usize {
        let (children, vals) = expand(s, width);
        let side = ((x >> (n - 1 - i)) & 1) as usize;
        for (q, vq) in v.iter_mut().enumerate() {
            let word = value_word(width, side_values(width, &vals, side), side, q);
            let add = word.wrapping_add(if t == 1 { key.value(i, q) } else { 0 });
            *vq = vq.wrapping_add(sg.wrapping_mul(add));
        }
        (s, t) = follow(
            children[side],
            t,
            key.seed(i),
            (key.tbits(i) >> side) & 1,
            1,
        );
    }
    for (q, vq) in v.iter_mut().enumerate() {
        let add = match slot {
            Some(i) => stop_word(s, q).wrapping_add(if t == 1 { key.stop(i, q) } else { 0 }),
            None => leaf_word(s, q).wrapping_add(if t == 1 { key.last(q) } else { 0 }),
        };
        *vq = vq.wrapping_add(sg.wrapping_mul(add));
    }
    v
}

/// [`eval_words`] of a one-word key.
pub fn eval(party: usize, root: &Block, keys: &DcfKeys, k: usize, x: u64) -> u64 {
    eval_words(party, root, keys, k, x)[0]
}

/// Evaluate many points at once: point `p` uses key `key_of[p]` (its root
/// seed in `roots` and its correction words in `keys`) at input `xs[p]`;
/// writes party `party`'s output shares to `out` (`width` words per point,
/// point-major). Same result as calling [`eval_words`] per point, but:
///
/// - points of one key that share the top bits of their input share the
///   tree walk down to where they part (the walk visits each distinct
///   prefix once). Points of a key should be adjacent in `key_of`; within
///   such a run they are visited in sorted order, so a key evaluated at
///   many nearby points (the ~200 thresholds of a piecewise reciprocal, all
///   at `ĉ − t_j`) costs the nodes of their common subtree, not 200 paths;
/// - the walk goes level by level over a batch of nodes so that AES runs
///   over long buffers (pipelined AES-NI), and a node encrypts only the
///   blocks of the side it takes (its seed and value blocks: 2 for one or
///   two words, 3 for three or four), with branch-free corrections.
pub fn eval_batch(
    party: usize,
    roots: &[Block],
    keys: &DcfKeys,
    key_of: &[usize],
    xs: &[u64],
    out: &mut [u64],
) {
    eval_batch_stopping(party, roots, keys, key_of, xs, &[], out)
}

/// [`eval_batch`] where point `p` stops at depth `depths[p]` (the full
/// depth or one of the keys' stops; an empty `depths`: every point at the
/// full depth), as [`eval_words_at`]: a point costs the distinct nodes of
/// its shortened path, plus `⌈width/2⌉` AES blocks for a stop's conversion.
pub fn eval_batch_stopping(
    party: usize,
    roots: &[Block],
    keys: &DcfKeys,
    key_of: &[usize],
    xs: &[u64],
    depths: &[u32],
    out: &mut [u64],
) {
    let width = keys.width;
    assert_eq!(
        key_of.len(),
        xs.len(),
        "dcf batch: keys and points differ in length"
    );
    assert!(
        depths.is_empty() || depths.len() == xs.len(),
        "dcf batch: depths and points differ in length"
    );
    assert_eq!(out.len(), xs.len() * width, "dcf batch: output length");
    let slots = keys.stop_slots();
    assert!(
        depths
            .iter()
            .all(|&d| d == keys.bits || slots.get(d as usize).is_some_and(|s| s.is_some())),
        "dcf batch: a depth without a stop"
    );
    let bits = keys.bits as usize;
    // Visit order: runs of equal key, each sorted by its low `bits` input bits.
    let low = |x: u64| {
        if bits >= 64 {
            x
        } else {
            x & ((1u64 << bits) - 1)
        }
    };
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut at = 0;
    while at < order.len() {
        let k = key_of[at];
        let end = (at..key_of.len())
            .find(|&p| key_of[p] != k)
            .unwrap_or(key_of.len());
        order[at..end].sort_unstable_by_key(|&p| low(xs[p]));
        at = end;
    }
    let full = vec![keys.bits; if depths.is_empty() { xs.len() } else { 0 }];
    let depths = if depths.is_empty() { &full[..] } else { depths };
    // chunks of points, each walked into its own outputs (in visiting
    // order), on several threads when there are enough points
    let parts = crate::parallel::parts(xs.len() * bits, xs.len().div_ceil(64));
    let size = Walk::POINTS.min(xs.len().div_ceil(parts)).max(1);
    let scatter = |out: &mut [u64], chunk: &[usize], words: &[u64]| {
        for (&p, w) in chunk.iter().zip(words.chunks_exact(width)) {
            out[p * width..(p + 1) * width].copy_from_slice(w);
        }
    };
    if parts == 1 {
        let mut walk = Walk::new(party, keys, slots);
        let mut words = vec![0u64; size * width];
        for chunk in order.chunks(size) {
            let words = &mut words[..chunk.len() * width];
            walk.run(roots, key_of, xs, depths, chunk, words);
            scatter(out, chunk, words);
        }
        return;
    }
    use rayon::prelude::*;
    let walked: Vec<Vec<u64>> = order
        .par_chunks(size)
        .map_init(
            || Walk::new(party, keys, slots.clone()),
            |walk, chunk| {
                let mut words = vec![0u64; chunk.len() * width];
                walk.run(roots, key_of, xs, depths, chunk, &mut words);
                words
            },
        )
        .collect();
    for (chunk, words) in order.chunks(size).zip(&walked) {
        scatter(out, chunk, words);
    }
}

/// The buffers of [`eval_batch`]'s tree walk over one chunk of points.
pub(super) struct Walk<'a> {
    keys: &'a DcfKeys,
    slots: Vec<Option<usize>>,
    party: usize,
    sg: u64,
    /// Per node of the current level: seed, control bit, output words so
    /// far, key. Per point of the chunk: its node.
    seed: Vec<u128>,
    t: Vec<u8>,
    v: Vec<u64>,
    key: Vec<usize>,
    node_of: Vec<usize>,
    /// The next level's nodes: parent and side.
    parent: Vec<usize>,
    side: Vec<usize>,
    buf: Vec<GenericArray<u8, aes::cipher::consts::U16>>,
}

impl<'a> Walk<'a> {
    /// Points per chunk.
    const POINTS: usize = 1024;

    fn new(party: usize, keys: &'a DcfKeys, slots: Vec<Option<usize>>) -> Self {
        let per = 1 + side_blocks(keys.width);
        Walk {
            keys,
            slots,
            party,
            sg: if party == 0 { 1 } else { u64::MAX },
            seed: Vec::with_capacity(Self::POINTS),
            t: Vec::with_capacity(Self::POINTS),
            v: Vec::with_capacity(Self::POINTS * keys.width),
            key: Vec::with_capacity(Self::POINTS),
            node_of: Vec::with_capacity(Self::POINTS),
            parent: Vec::with_capacity(Self::POINTS),
            side: Vec::with_capacity(Self::POINTS),
            buf: vec![GenericArray::from([0u8; 16]); per * Self::POINTS],
        }
    }

    /// Evaluate the points `chunk` (indices into `key_of`, `xs`, `depths`;
    /// a key's points adjacent and sorted by input) into `out`, `width`
    /// words per point in the chunk's order.
    fn run(
        &mut self,
        roots: &[Block],
        key_of: &[usize],
        xs: &[u64],
        depths: &[u32],
        chunk: &[usize],
        out: &mut [u64],
    ) {
        let (width, bits, sg) = (self.keys.width, self.keys.bits as usize, self.sg);
        let key_len = self.keys.key_len();
        let sb = side_blocks(width);
        let per = 1 + sb;
        // level 0: one root node per run of equal key
        self.seed.clear();
        self.t.clear();
        self.v.clear();
        self.key.clear();
        self.node_of.clear();
        for (i, &p) in chunk.iter().enumerate() {
            if i == 0 || key_of[p] != key_of[chunk[i - 1]] {
                self.seed.push(u128::from_le_bytes(roots[key_of[p]]));
                self.t.push(self.party as u8);
                self.v.extend(std::iter::repeat_n(0, width));
                self.key.push(key_of[p]);
            }
            self.node_of.push(self.seed.len() - 1);
        }
        // each point's input and depth, in visiting order
        let px: Vec<u64> = chunk.iter().map(|&p| xs[p]).collect();
        let pd: Vec<u32> = chunk.iter().map(|&p| depths[p]).collect();
        // the points still walking (positions in `chunk`), in order
        let mut active: Vec<usize> = (0..chunk.len()).collect();
        let mut walking: Vec<usize> = Vec::with_capacity(chunk.len());
        let mut finished: Vec<usize> = Vec::new();
        let mut seed = Vec::with_capacity(chunk.len());
        let mut t = Vec::with_capacity(chunk.len());
        let mut v = Vec::with_capacity(chunk.len() * width);
        let mut key = Vec::with_capacity(chunk.len());
        for lvl in 0..bits {
            if active.is_empty() {
                break;
            }
            let shift = bits - 1 - lvl;
            // points that stop at this depth leave through their stop's
            // correction (from their node at this depth); the others make
            // the next level's nodes: a new one where the parent or the side changes
            self.parent.clear();
            self.side.clear();
            finished.clear();
            walking.clear();
            let mut last = (usize::MAX, usize::MAX);
            for &i in &active {
                if pd[i] as usize == lvl {
                    finished.push(i);
                    continue;
                }
                walking.push(i);
                let node = self.node_of[i];
                let side = ((px[i] >> shift) & 1) as usize;
                if (node, side) != last {
                    self.parent.push(node);
                    self.side.push(side);
                    last = (node, side);
                }
                self.node_of[i] = self.parent.len() - 1;
            }
            if !finished.is_empty() {
                let slot = self.slots[lvl].expect("depths are checked against the stops");
                self.finish(&finished, out, Conversion::Stop(slot));
            }
            std::mem::swap(&mut active, &mut walking);
            if active.is_empty() {
                break;
            }
            let m = self.parent.len();
            for ((blocks, &pn), &side) in self
                .buf
                .chunks_exact_mut(per)
                .zip(&self.parent)
                .zip(&self.side)
            {
                let sq = self.seed[pn];
                blocks[0] = mmo_input(sq, side as u128);
                for i in 0..sb {
                    blocks[1 + i] = mmo_input(sq, value_tweak(width, side, i) as u128);
                }
            }
            cipher().encrypt_blocks(&mut self.buf[..per * m]);
            seed.clear();
            t.clear();
            v.clear();
            key.clear();
            for (c, blocks) in self.buf.chunks_exact(per).take(m).enumerate() {
                let (pn, side) = (self.parent[c], self.side[c]);
                let (sq, tq, k) = (self.seed[pn], self.t[pn], self.key[pn]);
                let kr = self.keys.key_at(k, key_len);
                // Apply the level's correction when t = 1, without a branch.
                let (s, tb) = follow(
                    mmo_output(&blocks[0], sq, side as u128),
                    tq,
                    kr.seed(lvl),
                    (kr.tbits(lvl) >> side) & 1,
                    1,
                );
                let mask = 0u64.wrapping_sub(tq as u64);
                for q in 0..width {
                    let (b, half) = if width == 1 {
                        (0, side)
                    } else {
                        (q / 2, q % 2)
                    };
                    let tw = value_tweak(width, side, b) as u128;
                    let val = (mmo_output(&blocks[1 + b], sq, tw) >> (64 * half)) as u64;
                    let val = val.wrapping_add(kr.value(lvl, q) & mask);
                    v.push(self.v[pn * width + q].wrapping_add(sg.wrapping_mul(val)));
                }
                seed.push(s);
                t.push(tb);
                key.push(k);
            }
            std::mem::swap(&mut self.seed, &mut seed);
            std::mem::swap(&mut self.t, &mut t);
            std::mem::swap(&mut self.v, &mut v);
            std::mem::swap(&mut self.key, &mut key);
        }
        self.finish(&active, out, Conversion::Leaf);
    }

    /// Write the outputs of the points at positions `done` of `chunk` from
    /// their nodes: `V + sg·(convert(s) + t·correction)`, once per node.
    fn finish(&self, done: &[usize], out: &mut [u64], how: Conversion) {
        let width = self.keys.width;
        let key_len = self.keys.key_len();
        let mut word = vec![0u64; width];
        let mut conv = vec![0u64; width.next_multiple_of(2)];
        let mut node_done = usize::MAX;
        for &i in done {
            let node = self.node_of[i];
            if node != node_done {
                let s = self.seed[node];
                let kr = self.keys.key_at(self.key[node], key_len);
                match how {
                    Conversion::Leaf => {
                        for (q, c) in conv.iter_mut().take(width).enumerate() {
                            *c = leaf_word(s, q);
                        }
                    }
                    Conversion::Stop(_) => {
                        for (pair, c) in conv.chunks_exact_mut(2).enumerate() {
                            c.copy_from_slice(&stop_word_pair(s, pair));
                        }
                    }
                }
                for (q, wq) in word.iter_mut().enumerate() {
                    let c = match how {
                        Conversion::Leaf => kr.last(q),
                        Conversion::Stop(slot) => kr.stop(slot, q),
                    };
                    let add = conv[q].wrapping_add(if self.t[node] == 1 { c } else { 0 });
                    *wq = self.v[node * width + q].wrapping_add(self.sg.wrapping_mul(add));
                }
                node_done = node;
            }
            out[i * width..(i + 1) * width].copy_from_slice(&word);
        }
    }
}

/// How a point's node turns into its output: the leaf at the full depth,
/// or a stop's conversion.
#[derive(Clone, Copy)]
pub(super) enum Conversion {
    Leaf,
    Stop(usize),
}
