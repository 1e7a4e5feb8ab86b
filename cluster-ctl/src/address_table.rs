//! The data path's address table: its layout (cuckoo hashing) and its memory-mapped halves.
//!
//! The XDP program finds an address in one of two candidate buckets of two slots
//! ([`cluster_common::address_buckets`]), in the half of the table that
//! [`cluster_common::NodeConfig::address_half`] names: two array reads instead of a hash-map
//! lookup, which cost about 10 ns per ARP request. The controller lays out the whole address set,
//! writes it into the other half through a shared mapping and then flips the half, so the program
//! never reads a half-written entry and a new set replaces the old one at once.

use std::collections::BTreeMap;

use cluster_common::{
    ADDRESS_BUCKETS, ADDRESS_TABLE_CAPACITY, AddressBucket, AddressEntry, AddressKey, AddressSlot,
    address_buckets,
};

/// The address set does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{count} addresses exceed the address table's {ADDRESS_TABLE_CAPACITY}")]
    TooMany { count: usize },
    #[error("interface index 0 (address {addr:#010x}) marks an empty slot and cannot be used")]
    NoInterface { addr: u32 },
    #[error("no place found for address {addr:#010x} after {kicks} moves")]
    NoPlace { addr: u32, kicks: usize },
}

const EMPTY: AddressSlot = AddressSlot {
    key: AddressKey {
        ifindex: 0,
        addr: 0,
    },
    entry: AddressEntry {
        lease: 0,
        hit_slot: 0,
        mac: [0; 6],
        kind: 0,
        _pad: 0,
        eth_source: [0; 6],
        _pad2: [0; 2],
    },
};

/// Moves tried before an insertion gives up; at half load a random walk needs a handful.
const MAX_KICKS: usize = 2048;

/// Lays `entries` out over `buckets` (one half, [`ADDRESS_BUCKETS`] long, overwritten), each in
/// one of its two candidate buckets (random-walk cuckoo insertion, deterministic for a given
/// set). Works in place, so that the controller fills the spare half of the mapped table without
/// a 4 MiB buffer of its own; on an error the half holds a partial layout, which is harmless as
/// long as it is not the half in use.
pub fn layout_into(
    entries: &BTreeMap<AddressKey, AddressEntry>,
    buckets: &mut [AddressBucket],
) -> Result<(), LayoutError> {
    assert_eq!(buckets.len(), ADDRESS_BUCKETS as usize, "one half");
    if entries.len() > ADDRESS_TABLE_CAPACITY {
        return Err(LayoutError::TooMany {
            count: entries.len(),
        });
    }
    if let Some(key) = entries.keys().find(|k| k.ifindex == 0) {
        return Err(LayoutError::NoInterface { addr: key.addr });
    }
    buckets.fill(AddressBucket { slots: [EMPTY; 2] });
    // xorshift64: the victim choice only has to avoid cycles, not be unpredictable.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (key, entry) in entries {
        let mut moving = AddressSlot {
            key: *key,
            entry: *entry,
        };
        let mut kicks = 0;
        loop {
            let (first, second) = address_buckets(moving.key.word());
            let free = [first, second].into_iter().find_map(|b| {
                buckets[b as usize]
                    .slots
                    .iter()
                    .position(|s| s.key.ifindex == 0)
                    .map(|i| (b, i))
            });
            if let Some((b, i)) = free {
                buckets[b as usize].slots[i] = moving;
                break;
            }
            if kicks == MAX_KICKS {
                return Err(LayoutError::NoPlace {
                    addr: key.addr,
                    kicks,
                });
            }
            kicks += 1;
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bucket = if state & 1 == 0 { first } else { second };
            let slot = ((state >> 1) & 1) as usize;
            std::mem::swap(&mut buckets[bucket as usize].slots[slot], &mut moving);
        }
    }
    Ok(())
}

/// The entries stored in one half.
pub fn entries(half: &[AddressBucket]) -> BTreeMap<AddressKey, AddressEntry> {
    half.iter()
        .flat_map(|b| b.slots.iter())
        .filter(|s| s.key.ifindex != 0)
        .map(|s| (s.key, s.entry))
        .collect()
}

/// Index of the first bucket of a half (0 or 1) in the table.
pub fn half_start(half: u32) -> usize {
    (half & 1) as usize * ADDRESS_BUCKETS as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(
        entries: &BTreeMap<AddressKey, AddressEntry>,
    ) -> Result<Vec<AddressBucket>, LayoutError> {
        let mut buckets = vec![AddressBucket { slots: [EMPTY; 2] }; ADDRESS_BUCKETS as usize];
        layout_into(entries, &mut buckets)?;
        Ok(buckets)
    }

    fn entry(i: u32) -> AddressEntry {
        AddressEntry {
            lease: i % 7,
            hit_slot: i,
            mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
            kind: 1,
            _pad: 0,
            eth_source: [2, 0, 0, 0, 0, 1],
            _pad2: [0; 2],
        }
    }

    fn find(buckets: &[AddressBucket], key: &AddressKey) -> Option<AddressEntry> {
        let (first, second) = address_buckets(key.word());
        [first, second].into_iter().find_map(|b| {
            buckets[b as usize]
                .slots
                .iter()
                .find(|s| s.key == *key)
                .map(|s| s.entry)
        })
    }

    #[test]
    fn a_full_table_of_consecutive_addresses_is_laid_out_and_found() {
        let entries: BTreeMap<_, _> = (0..ADDRESS_TABLE_CAPACITY as u32)
            .map(|i| {
                let key = AddressKey {
                    ifindex: 2 + i % 3,
                    addr: (0x0a00_0000 + i).to_be(),
                };
                (key, entry(i))
            })
            .collect();
        let buckets = layout(&entries).unwrap();
        for (key, value) in &entries {
            assert_eq!(find(&buckets, key), Some(*value), "{key:?}");
        }
        assert_eq!(super::entries(&buckets), entries);
        let absent = AddressKey {
            ifindex: 2,
            addr: 0xc000_0201u32.to_be(),
        };
        assert_eq!(find(&buckets, &absent), None);
    }

    #[test]
    fn too_many_addresses_or_interface_zero_are_refused() {
        let too_many: BTreeMap<_, _> = (0..=ADDRESS_TABLE_CAPACITY as u32)
            .map(|i| {
                (
                    AddressKey {
                        ifindex: 1,
                        addr: i,
                    },
                    entry(i),
                )
            })
            .collect();
        assert_eq!(
            layout(&too_many),
            Err(LayoutError::TooMany {
                count: ADDRESS_TABLE_CAPACITY + 1
            })
        );
        let zero = BTreeMap::from([(
            AddressKey {
                ifindex: 0,
                addr: 5,
            },
            entry(1),
        )]);
        assert_eq!(layout(&zero), Err(LayoutError::NoInterface { addr: 5 }));
    }
}
