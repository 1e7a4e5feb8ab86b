//! The flow hash of flow load share (R-XDP-2).
//!
//! Every node runs this same function with the same seed, so all nodes agree on which bucket a
//! packet falls into; the controller uses it too (to predict and to test the split). The flow is
//! packed into two 64-bit words, and the hash is two multiplies with an add between them: no
//! loops, no tables, few registers (the MurmurHash3 block mixes used first chained ten
//! multiplies and cost 3–4 ns more per frame). The symmetric modes combine the two endpoints by
//! xor and sum, so a flow and its reply hash alike without a branch on which endpoint is lower.
//!
//! Inputs are the raw network-byte-order words of the packet, as every node reads them alike; no
//! byte swapping is needed.

/// Version of this hash function, raised with every change to it. Nodes fold it into the
/// configuration digest they compare (cluster-ctl's `Config::digest`): nodes midway through an
/// upgrade that changes the hash would split flows differently (some passed by two nodes, some
/// by none), and they see a configuration mismatch and warn instead of doing so silently.
/// 1: MurmurHash3 mixes; 2: two multiplies and a fold; 3: endpoints combined by xor and sum;
/// 4: ports xored into their addresses, no fold; 5: IPv6 flows hashed too (their addresses
/// folded by [`fold_ipv6`]; before, nodes passed every IPv6 frame to a shared MAC).
pub const FLOW_HASH_VERSION: u32 = 5;

const SEED_SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL_A: u64 = 0xbf58_476d_1ce4_e5b9;
const MUL_B: u64 = 0x94d0_49bb_1331_11eb;

/// Hashes two 64-bit words into 32 bits: the first, with the seed, is multiplied, the second
/// added, and the sum multiplied again; the high half of that, which every input bit reaches, is
/// the hash. [`bucket_of`] takes its top bits.
#[inline(always)]
const fn mix(seed: u32, x: u64, y: u64) -> u32 {
    ((x ^ (seed as u64).wrapping_mul(SEED_SPREAD))
        .wrapping_mul(MUL_A)
        .wrapping_add(y)
        .wrapping_mul(MUL_B)
        >> 32) as u32
}

/// Hash of the source address only.
#[inline(always)]
pub const fn hash_src(seed: u32, src: u32) -> u32 {
    mix(seed, src as u64, 0)
}

/// Symmetric hash of both addresses.
#[inline(always)]
pub const fn hash_src_dst(seed: u32, src: u32, dst: u32) -> u32 {
    let (x, y) = symmetric_pair(src, dst);
    mix(seed, x, y)
}

/// Symmetric hash of protocol, addresses and ports: each endpoint is its address xored with its
/// port, and the two endpoints are combined as in [`hash_src_dst`]. A port meets the half of
/// the address that holds its first two octets (the words are in network byte order), which
/// flows within one /16 share, so it does not cancel what varies between them.
#[inline(always)]
pub const fn hash_five_tuple(
    seed: u32,
    protocol: u8,
    src: u32,
    src_port: u16,
    dst: u32,
    dst_port: u16,
) -> u32 {
    let (x, y) = symmetric_pair(src ^ src_port as u32, dst ^ dst_port as u32);
    mix(seed, x | (protocol as u64) << 32, y)
}

/// Two endpoints as two words that are the same in both directions: their xor and their sum.
/// Unlike ordering the two first, this takes no branch. Distinct pairs may give the same words
/// (a bit set in one endpoint only may sit in either); such flows merely share a bucket.
#[inline(always)]
const fn symmetric_pair(a: u32, b: u32) -> (u64, u64) {
    ((a ^ b) as u64, a as u64 + b as u64)
}

/// An IPv6 address as one word for the hashes above: the xor of its four raw wire-order words
/// (`u32::from_ne_bytes` of each four octets). Hosts of one /64 differ in the last two words,
/// which the xor keeps apart; the symmetric modes stay symmetric, each address folded alone.
#[inline(always)]
pub const fn fold_ipv6(words: [u32; 4]) -> u32 {
    words[0] ^ words[1] ^ words[2] ^ words[3]
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

    /// Every mode spreads realistic address sets (consecutive hosts, one subnet, ports counting
    /// up) evenly over the buckets.
    #[test]
    fn every_mode_spreads_consecutive_flows_evenly() {
        let buckets = 256u32;
        let check = |name: &str, hashes: &mut dyn Iterator<Item = u32>| {
            let mut counts = [0u32; 256];
            let mut n = 0;
            for h in hashes {
                counts[bucket_of(h, buckets) as usize] += 1;
                n += 1;
            }
            let mean = n as f64 / buckets as f64;
            let max = *counts.iter().max().unwrap() as f64;
            let min = *counts.iter().min().unwrap() as f64;
            assert!(
                max < mean * 1.25 && min > mean * 0.75,
                "{name}: min {min} max {max} mean {mean}"
            );
        };
        let host = |i: u32| (0x0a00_0000u32 + i).to_be();
        let server = 0xc633_6450u32.to_be();
        check("src", &mut (0..100_000).map(|i| hash_src(9, host(i))));
        check(
            "src+dst",
            &mut (0..100_000).map(|i| hash_src_dst(9, host(i), server)),
        );
        check(
            "5-tuple, ports",
            &mut (0..60_000u32).map(|i| {
                hash_five_tuple(
                    9,
                    6,
                    host(1),
                    ((1024 + i) as u16).to_be(),
                    server,
                    443u16.to_be(),
                )
            }),
        );
        check(
            "5-tuple, hosts",
            &mut (0..100_000u32)
                .map(|i| hash_five_tuple(9, 17, host(i), 4000u16.to_be(), server, 53u16.to_be())),
        );
        // The varying endpoint as the higher of the two (it lands in the high word).
        let low_server = 0x0100_0001u32.to_be();
        check(
            "src+dst, the varying host higher",
            &mut (0..100_000).map(|i| hash_src_dst(9, (0xc000_0000u32 + i).to_be(), low_server)),
        );
        check(
            "5-tuple, server ports",
            &mut (0..60_000u32).map(|i| {
                hash_five_tuple(
                    9,
                    6,
                    host(1),
                    40000u16.to_be(),
                    server,
                    ((1024 + i) as u16).to_be(),
                )
            }),
        );
        check(
            "5-tuple, hosts and ports",
            &mut (0..100_000u32).map(|i| {
                hash_five_tuple(
                    9,
                    6,
                    host(i % 1000),
                    ((30000 + i / 1000) as u16).to_be(),
                    server,
                    443u16.to_be(),
                )
            }),
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
