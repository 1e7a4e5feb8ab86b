//! The data path's address tables (IPv4 and IPv6): their layout (cuckoo hashing) and their
//! memory-mapped halves.
//!
//! The XDP program finds an address in one of two candidate buckets of two slots
//! ([`cluster_common::address_buckets`]), in the half of the table that
//! [`cluster_common::NodeConfig::address_half`] names: two array reads instead of a hash-map
//! lookup, which cost about 10 ns per ARP request. The controller lays out the whole address set,
//! writes it into the other half through a shared mapping and then flips the half, so the program
//! never reads a half-written entry and a new set replaces the old one at once.

use std::collections::BTreeMap;

use cluster_common::{
    ADDRESS_BUCKETS, ADDRESS_TABLE_CAPACITY, ADDRESS6_BUCKETS, ADDRESS6_TABLE_CAPACITY,
    Address6Bucket, Address6Slot, AddressBucket, AddressEntry, AddressKey, AddressKey6,
    AddressSlot, address_buckets, address6_buckets,
};

/// The address set does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{count} addresses exceed the address table's {capacity}")]
    TooMany { count: usize, capacity: usize },
    #[error("interface index 0 (address {address}) marks an empty slot and cannot be used")]
    NoInterface { address: String },
    #[error("no place found for address {address} after {kicks} moves")]
    NoPlace { address: String, kicks: usize },
}

/// One of the data path's address tables: IPv4 ([`Ipv4Table`]) or IPv6 ([`Ipv6Table`]). Both
/// are laid out alike; their keys, slots and sizes differ.
pub trait Table {
    type Key: Copy + Ord;
    type Slot: Copy;
    type Bucket: Copy;
    /// Buckets of one half.
    const BUCKETS: u32;
    /// Addresses one half takes: half its slots.
    const CAPACITY: usize;
    const EMPTY: Self::Bucket;
    /// The key's two candidate buckets, as the program computes them.
    fn candidates(key: &Self::Key) -> (u32, u32);
    fn ifindex(key: &Self::Key) -> u32;
    /// The key's address, for messages.
    fn address(key: &Self::Key) -> String;
    fn slots(bucket: &Self::Bucket) -> &[Self::Slot; 2];
    fn slots_mut(bucket: &mut Self::Bucket) -> &mut [Self::Slot; 2];
    fn slot(key: Self::Key, entry: AddressEntry) -> Self::Slot;
    fn parts(slot: &Self::Slot) -> (Self::Key, AddressEntry);
}

const EMPTY_ENTRY: AddressEntry = AddressEntry {
    lease: 0,
    hit_slot: 0,
    mac: [0; 6],
    kind: 0,
    flags: 0,
    eth_source: [0; 6],
    _pad2: [0; 2],
};

/// `FWC_ADDRESSES`, answered with ARP.
pub struct Ipv4Table;

impl Table for Ipv4Table {
    type Key = AddressKey;
    type Slot = AddressSlot;
    type Bucket = AddressBucket;
    const BUCKETS: u32 = ADDRESS_BUCKETS;
    const CAPACITY: usize = ADDRESS_TABLE_CAPACITY;
    const EMPTY: AddressBucket = AddressBucket {
        slots: [AddressSlot {
            key: AddressKey {
                ifindex: 0,
                addr: 0,
            },
            entry: EMPTY_ENTRY,
        }; 2],
    };
    fn candidates(key: &AddressKey) -> (u32, u32) {
        address_buckets(key.word())
    }
    fn ifindex(key: &AddressKey) -> u32 {
        key.ifindex
    }
    fn address(key: &AddressKey) -> String {
        std::net::Ipv4Addr::from(key.addr.to_ne_bytes()).to_string()
    }
    fn slots(bucket: &AddressBucket) -> &[AddressSlot; 2] {
        &bucket.slots
    }
    fn slots_mut(bucket: &mut AddressBucket) -> &mut [AddressSlot; 2] {
        &mut bucket.slots
    }
    fn slot(key: AddressKey, entry: AddressEntry) -> AddressSlot {
        AddressSlot { key, entry }
    }
    fn parts(slot: &AddressSlot) -> (AddressKey, AddressEntry) {
        (slot.key, slot.entry)
    }
}

/// `FWC_ADDR6`, answered with Neighbor Advertisements.
pub struct Ipv6Table;

impl Table for Ipv6Table {
    type Key = AddressKey6;
    type Slot = Address6Slot;
    type Bucket = Address6Bucket;
    const BUCKETS: u32 = ADDRESS6_BUCKETS;
    const CAPACITY: usize = ADDRESS6_TABLE_CAPACITY;
    const EMPTY: Address6Bucket = Address6Bucket {
        slots: [Address6Slot {
            key: AddressKey6 {
                ifindex: 0,
                _pad: 0,
                addr: [0; 4],
            },
            entry: EMPTY_ENTRY,
        }; 2],
    };
    fn candidates(key: &AddressKey6) -> (u32, u32) {
        address6_buckets(key.fold())
    }
    fn ifindex(key: &AddressKey6) -> u32 {
        key.ifindex
    }
    fn address(key: &AddressKey6) -> String {
        std::net::Ipv6Addr::from(key.octets()).to_string()
    }
    fn slots(bucket: &Address6Bucket) -> &[Address6Slot; 2] {
        &bucket.slots
    }
    fn slots_mut(bucket: &mut Address6Bucket) -> &mut [Address6Slot; 2] {
        &mut bucket.slots
    }
    fn slot(key: AddressKey6, entry: AddressEntry) -> Address6Slot {
        Address6Slot { key, entry }
    }
    fn parts(slot: &Address6Slot) -> (AddressKey6, AddressEntry) {
        (slot.key, slot.entry)
    }
}

/// Moves tried before an insertion gives up; at half load a random walk needs a handful.
const MAX_KICKS: usize = 2048;

/// Lays `entries` out over `buckets` (one half, [`Table::BUCKETS`] long, overwritten), each in
/// one of its two candidate buckets (random-walk cuckoo insertion, deterministic for a given
/// set). Works in place, so that the controller fills the spare half of the mapped table without
/// a buffer of its own; on an error the half holds a partial layout, which is harmless as long
/// as it is not the half in use.
pub fn layout_into<T: Table>(
    entries: &BTreeMap<T::Key, AddressEntry>,
    buckets: &mut [T::Bucket],
) -> Result<(), LayoutError> {
    assert_eq!(buckets.len(), T::BUCKETS as usize, "one half");
    if entries.len() > T::CAPACITY {
        return Err(LayoutError::TooMany {
            count: entries.len(),
            capacity: T::CAPACITY,
        });
    }
    if let Some(key) = entries.keys().find(|k| T::ifindex(k) == 0) {
        return Err(LayoutError::NoInterface {
            address: T::address(key),
        });
    }
    buckets.fill(T::EMPTY);
    // xorshift64: the victim choice only has to avoid cycles, not be unpredictable.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (key, entry) in entries {
        let mut moving = T::slot(*key, *entry);
        let mut kicks = 0;
        loop {
            let (first, second) = T::candidates(&T::parts(&moving).0);
            let free = [first, second].into_iter().find_map(|b| {
                T::slots(&buckets[b as usize])
                    .iter()
                    .position(|s| T::ifindex(&T::parts(s).0) == 0)
                    .map(|i| (b, i))
            });
            if let Some((b, i)) = free {
                T::slots_mut(&mut buckets[b as usize])[i] = moving;
                break;
            }
            if kicks == MAX_KICKS {
                return Err(LayoutError::NoPlace {
                    address: T::address(key),
                    kicks,
                });
            }
            kicks += 1;
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bucket = if state & 1 == 0 { first } else { second };
            let slot = ((state >> 1) & 1) as usize;
            std::mem::swap(
                &mut T::slots_mut(&mut buckets[bucket as usize])[slot],
                &mut moving,
            );
        }
    }
    Ok(())
}

/// The entries stored in one half.
pub fn entries<T: Table>(half: &[T::Bucket]) -> BTreeMap<T::Key, AddressEntry> {
    half.iter()
        .flat_map(|b| T::slots(b).iter())
        .map(T::parts)
        .filter(|(key, _)| T::ifindex(key) != 0)
        .collect()
}

/// Index of the first bucket of a half (0 or 1) of a table.
pub fn half_start<T: Table>(half: u32) -> usize {
    (half & 1) as usize * T::BUCKETS as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout<T: Table>(
        entries: &BTreeMap<T::Key, AddressEntry>,
    ) -> Result<Vec<T::Bucket>, LayoutError> {
        let mut buckets = vec![T::EMPTY; T::BUCKETS as usize];
        layout_into::<T>(entries, &mut buckets)?;
        Ok(buckets)
    }

    fn entry(i: u32) -> AddressEntry {
        AddressEntry {
            lease: i % 7,
            hit_slot: i,
            mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
            kind: 1,
            flags: 0,
            eth_source: [2, 0, 0, 0, 0, 1],
            _pad2: [0; 2],
        }
    }

    fn find<T: Table>(buckets: &[T::Bucket], key: &T::Key) -> Option<AddressEntry> {
        let (first, second) = T::candidates(key);
        [first, second].into_iter().find_map(|b| {
            T::slots(&buckets[b as usize])
                .iter()
                .map(T::parts)
                .find(|(k, _)| k == key)
                .map(|(_, entry)| entry)
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
        let buckets = layout::<Ipv4Table>(&entries).unwrap();
        for (key, value) in &entries {
            assert_eq!(find::<Ipv4Table>(&buckets, key), Some(*value), "{key:?}");
        }
        assert_eq!(super::entries::<Ipv4Table>(&buckets), entries);
        let absent = AddressKey {
            ifindex: 2,
            addr: 0xc000_0201u32.to_be(),
        };
        assert_eq!(find::<Ipv4Table>(&buckets, &absent), None);
    }

    #[test]
    fn a_full_ipv6_table_is_laid_out_and_found() {
        let entries: BTreeMap<_, _> = (0..ADDRESS6_TABLE_CAPACITY as u32)
            .map(|i| {
                let mut octets = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                octets[12..].copy_from_slice(&i.to_be_bytes());
                (AddressKey6::new(2 + i % 3, octets), entry(i))
            })
            .collect();
        let buckets = layout::<Ipv6Table>(&entries).unwrap();
        for (key, value) in &entries {
            assert_eq!(find::<Ipv6Table>(&buckets, key), Some(*value), "{key:?}");
        }
        assert_eq!(super::entries::<Ipv6Table>(&buckets), entries);
        let absent = AddressKey6::new(2, [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(find::<Ipv6Table>(&buckets, &absent), None);
        let zero = BTreeMap::from([(AddressKey6::new(0, absent.octets()), entry(1))]);
        assert_eq!(
            layout::<Ipv6Table>(&zero),
            Err(LayoutError::NoInterface {
                address: "fe80::1".into()
            })
        );
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
            layout::<Ipv4Table>(&too_many),
            Err(LayoutError::TooMany {
                count: ADDRESS_TABLE_CAPACITY + 1,
                capacity: ADDRESS_TABLE_CAPACITY
            })
        );
        let zero = BTreeMap::from([(
            AddressKey {
                ifindex: 0,
                addr: 5,
            },
            entry(1),
        )]);
        assert_eq!(
            layout::<Ipv4Table>(&zero),
            Err(LayoutError::NoInterface {
                address: "5.0.0.0".into()
            })
        );
    }
}
