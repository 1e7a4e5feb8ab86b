//! The flow hash of flow load share (R-XDP-2).
//!
//! Every node runs this same function with the same seed, so all nodes agree on which bucket a
//! packet falls into; the controller uses it too (to predict and to test the split). It is
//! MurmurHash3's 32-bit block mix and finalizer over a fixed number of words: no loops, no tables,
//! cheap in eBPF. The symmetric modes order the two endpoints first, so a flow and its reply hash
//! alike.
//!
//! Inputs are the raw network-byte-order words of the packet; only their equality and order
//! matter, never their numeric value, so no byte swapping is needed.

#[inline(always)]
const fn mix(hash: u32, word: u32) -> u32 {
    let k = word
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (hash ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut hash: u32, len: u32) -> u32 {
    hash ^= len;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

/// Hash of the source address only.
#[inline(always)]
pub const fn hash_src(seed: u32, src: u32) -> u32 {
    finish(mix(seed, src), 4)
}

/// Symmetric hash of both addresses.
#[inline(always)]
pub const fn hash_src_dst(seed: u32, src: u32, dst: u32) -> u32 {
    let (low, high) = if src <= dst { (src, dst) } else { (dst, src) };
    finish(mix(mix(seed, low), high), 8)
}

/// Symmetric hash of protocol, addresses and ports.
#[inline(always)]
pub const fn hash_five_tuple(
    seed: u32,
    protocol: u8,
    src: u32,
    src_port: u16,
    dst: u32,
    dst_port: u16,
) -> u32 {
    let src_first = src < dst || (src == dst && src_port <= dst_port);
    let (low, low_port, high, high_port) = if src_first {
        (src, src_port, dst, dst_port)
    } else {
        (dst, dst_port, src, src_port)
    };
    let ports = ((low_port as u32) << 16) | high_port as u32;
    finish(
        mix(mix(mix(mix(seed, low), high), ports), protocol as u32),
        16,
    )
}

/// Maps a hash onto `0..buckets` (multiply-shift: uniform, no division).
#[inline(always)]
pub const fn bucket_of(hash: u32, buckets: u32) -> u32 {
    ((hash as u64 * buckets as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_modes_hash_both_directions_alike() {
        let (a, b) = (0x0a00_0001u32, 0xc0a8_0102u32);
        assert_eq!(hash_src_dst(7, a, b), hash_src_dst(7, b, a));
        assert_eq!(
            hash_five_tuple(7, 6, a, 1234, b, 80),
            hash_five_tuple(7, 6, b, 80, a, 1234)
        );
        assert_ne!(
            hash_five_tuple(7, 6, a, 1234, b, 80),
            hash_five_tuple(7, 6, a, 1235, b, 80)
        );
    }

    #[test]
    fn seed_changes_the_hash() {
        assert_ne!(hash_src(1, 0x0102_0304), hash_src(2, 0x0102_0304));
    }

    #[test]
    fn buckets_are_in_range_and_even() {
        let buckets = 1024u32;
        let mut counts = [0u32; 1024];
        for src in 0..200_000u32 {
            let b = bucket_of(hash_src(0x5eed, src.to_be()), buckets);
            assert!(b < buckets);
            counts[b as usize] += 1;
        }
        let mean = 200_000.0 / 1024.0;
        let max = *counts.iter().max().unwrap() as f64;
        let min = *counts.iter().min().unwrap() as f64;
        assert!(max < mean * 1.5 && min > mean * 0.5, "min {min} max {max}");
    }
}
