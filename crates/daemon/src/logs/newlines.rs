//! Where the newlines of a buffer are, in order.
//!
//! A flood's lines are short (100 bytes in the benchmark), and `memchr`
//! is built for long haystacks: each call sets up, aligns and checks
//! again before its vector loop pays off, which made the newline search
//! almost a third of the runtime thread's time in a flood. On x86_64 the
//! buffer is scanned instead 64 bytes at a time into a bit mask of its
//! newlines (SSE2, part of every x86_64 CPU), and the lines are read off
//! the mask: 3.4 ns per 100-byte line instead of 7.0 on the AMD test
//! machine (on an Intel one, in an earlier session, it was no faster
//! than `memchr`). Past two blocks without a newline the rest of a long
//! line is left to `memchr`, which is faster over long stretches. Other
//! targets keep `memchr`, whose NEON path is good there.

/// The positions of the newlines in `bytes`, in order.
#[inline]
pub fn newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    #[cfg(target_arch = "x86_64")]
    {
        Newlines {
            bytes,
            base: 0,
            mask: 0,
            next: 0,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        memchr::memchr_iter(b'\n', bytes)
    }
}

/// Blocks without a newline in a row after which the rest of the line
/// is left to `memchr`: two, so that 100-byte lines never get there.
#[cfg(target_arch = "x86_64")]
const LONG_LINE_BLOCKS: usize = 2;

#[cfg(target_arch = "x86_64")]
struct Newlines<'a> {
    bytes: &'a [u8],
    /// Where the block that `mask` describes starts.
    base: usize,
    /// That block's newlines not handed out yet, a bit per byte.
    mask: u64,
    /// Where the next block starts.
    next: usize,
}

#[cfg(target_arch = "x86_64")]
impl Newlines<'_> {
    /// In a long line: `memchr`'s wide loop crosses it faster (16 KiB
    /// lines 17 µs a MiB instead of 41). The next block starts at the
    /// newline it finds. Out of line, so the short lines' loop stays
    /// tight.
    #[cold]
    #[inline(never)]
    fn skip_long_line(&mut self) {
        match memchr::memchr(b'\n', &self.bytes[self.next..]) {
            Some(at) => self.next += at,
            None => self.next = self.bytes.len(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let mut empty = 0;
        while self.mask == 0 {
            let rest = self.bytes.get(self.next..).filter(|r| !r.is_empty())?;
            if empty == LONG_LINE_BLOCKS {
                self.skip_long_line();
                empty = 0;
                continue;
            }
            empty += 1;
            self.base = self.next;
            self.mask = match rest.first_chunk::<64>() {
                Some(block) => block_mask(block),
                None => {
                    // The last, shorter block, padded with bytes that are
                    // not newlines.
                    let mut block = [0u8; 64];
                    block[..rest.len()].copy_from_slice(rest);
                    block_mask(&block)
                }
            };
            self.next += 64;
        }
        let bit = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + bit)
    }
}

/// A bit for each byte of `block` that is a newline (bit `i` for byte `i`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_mask(block: &[u8; 64]) -> u64 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let newline = set_splat_i8_m128i(b'\n' as i8);
    let mut mask = 0u64;
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let lane: &[u8; 16] = lane.try_into().expect("16 bytes");
        let eq = cmp_eq_mask_i8_m128i(load_unaligned_m128i(lane), newline);
        // The mask's 16 low bits, one per byte.
        mask |= u64::from(move_mask_i8_m128i(eq) as u16) << (16 * k);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect()
    }

    #[test]
    fn finds_every_newline_at_block_edges_and_in_the_tail() {
        for len in [0usize, 1, 15, 16, 63, 64, 65, 127, 128, 129, 200] {
            for at in [
                vec![],
                vec![0],
                vec![len.saturating_sub(1)],
                (0..len).collect(),
                (0..len).step_by(63).collect::<Vec<_>>(),
            ] {
                let mut bytes = vec![b'x'; len];
                for &i in &at {
                    if i < len {
                        bytes[i] = b'\n';
                    }
                }
                assert_eq!(
                    newlines(&bytes).collect::<Vec<_>>(),
                    naive(&bytes),
                    "{len} {at:?}"
                );
            }
        }
    }

    #[test]
    fn long_lines_and_runs_without_any_newline() {
        for line in [127usize, 128, 129, 200, 1000, 16 * 1024] {
            let mut bytes = Vec::new();
            for _ in 0..5 {
                bytes.extend(std::iter::repeat_n(b'y', line));
                bytes.push(b'\n');
            }
            // And a tail that never ends.
            bytes.extend(std::iter::repeat_n(b'z', line));
            for skip in [0, 1, 63, 64, 65] {
                let bytes = &bytes[skip..];
                assert_eq!(
                    newlines(bytes).collect::<Vec<_>>(),
                    naive(bytes),
                    "{line} {skip}"
                );
            }
        }
    }

    #[test]
    fn bytes_with_the_high_bit_or_next_to_a_newline_are_not_newlines() {
        // 0x8a has '\n' in its low bits; 0x0b and 0x09 are one off.
        let bytes: Vec<u8> = (0..300u32)
            .map(|i| [0x8a, 0x0b, b'\n', 0x09, 0xff][i as usize % 5])
            .collect();
        assert_eq!(newlines(&bytes).collect::<Vec<_>>(), naive(&bytes));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_byte_by_byte_search_over_long_lines(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![99 => proptest::strategy::Just(b'a'), 1 => proptest::strategy::Just(b'\n')],
                0..2000,
            ),
            skip in 0usize..130,
        ) {
            let bytes = &bytes[skip.min(bytes.len())..];
            proptest::prop_assert_eq!(newlines(bytes).collect::<Vec<_>>(), naive(bytes));
        }

        #[test]
        fn agrees_with_a_byte_by_byte_search(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'\n', b'a', 0x8a, 0]), 0..600),
            skip in 0usize..70,
        ) {
            // Slices that start anywhere, as the decoder's runs do.
            let bytes = &bytes[skip.min(bytes.len())..];
            proptest::prop_assert_eq!(newlines(bytes).collect::<Vec<_>>(), naive(bytes));
        }
    }
}
