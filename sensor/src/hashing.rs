//! The hash maps of the live path, keyed by what the traffic chooses: addresses and ports.
//!
//! A gateway sensor is a target (issue 13), and spoofed sources let an attacker choose the keys
//! of the lifecycle's, the feature windows' and the incidents' maps. With an unseeded hash
//! (`rustc_hash`'s Fx, used here before) keys that all hash alike can be computed offline for
//! every deployment at once: a `u128` address is hashed as `(lo * K + hi) * K`, so any `hi`
//! has a `lo` that lands on the same value, and a 16-byte address whose first eight bytes equal
//! Fx's public `SEED1` compresses to one value whatever its last eight. A flood from such
//! sources puts every connection in one probe chain: each insert and lookup then walks all of
//! them, and the agent falls behind the ring (tests in this module, figures in
//! `cargo bench -p sensor --bench features`).
//!
//! These maps use foldhash with a random seed per map (`foldhash::fast::RandomState`): about
//! as fast as Fx for these keys, and no precomputed set of keys collides, since the seed is
//! not known outside the process (foldhash's "minimal DoS resistance": it does not claim to
//! resist an attacker who can watch hash values, which the sensor never shows).
//!
//! Replay's flow and fragment tables are seeded maps too (a capture of such a flood replays as
//! fast as any other); their order never reaches the rows, since the lifecycle's flush sorts
//! the entries and replay runs no table scan. Replay's rows held for their final counts stay in
//! an Fx map: they are drained in a sort whose ties keep the map's order, which must be the
//! same on every run.

/// A hash map keyed by traffic-chosen values, with a per-map random seed.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set of traffic-chosen values, with a per-set random seed.
pub type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        hash::{BuildHasher, Hash},
    };

    use sensor_common::flow::FlowKey;

    use super::*;

    /// Fx's multiplier and first seed (rustc-hash 2.1, `src/lib.rs`), public constants.
    const FX_K: u64 = 0xf1357aea2e62a9c5;
    const FX_SEED1: u64 = 0x243f6a8885a308d3;

    fn distinct<T: Hash>(keys: &[T], hasher: &impl BuildHasher) -> usize {
        keys.iter()
            .map(|k| hasher.hash_one(k))
            .collect::<HashSet<u64>>()
            .len()
    }

    /// 4,096 IPv6 sources whose first eight bytes are Fx's `SEED1`, to one server port: every
    /// flow key of such a flood hashes alike under Fx.
    fn crafted_flow_keys() -> Vec<FlowKey> {
        let prefix = FX_SEED1.to_le_bytes();
        (0..4096u64)
            .map(|i| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&prefix);
                bytes[8..].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9) + 1).to_be_bytes());
                let words = |b: &[u8]| -> [u32; 4] {
                    std::array::from_fn(|w| {
                        u32::from_ne_bytes(b[w * 4..w * 4 + 4].try_into().unwrap())
                    })
                };
                FlowKey {
                    addr_lo: words(&bytes),
                    addr_hi: [0xfd00_0000u32.to_be(), 0, 0, 1u32.to_be()],
                    port_lo: 40000,
                    port_hi: 443,
                    protocol: 6,
                    ip_version: 6,
                    _pad: [0; 2],
                }
            })
            .collect()
    }

    /// 4,096 `u128` addresses `(hi, lo)` with `lo * K + hi` constant: one hash under Fx.
    fn crafted_u128_keys() -> Vec<u128> {
        let k_inv = {
            // Newton's iteration for the inverse of an odd number modulo 2^64.
            let mut x = FX_K;
            for _ in 0..6 {
                x = x.wrapping_mul(2u64.wrapping_sub(FX_K.wrapping_mul(x)));
            }
            x
        };
        assert_eq!(FX_K.wrapping_mul(k_inv), 1);
        (0..4096u64)
            .map(|i| {
                let hi = 0x2001_0db8_0000_0000 | i;
                let lo = 0x1234_5678_9abc_def0u64
                    .wrapping_sub(hi)
                    .wrapping_mul(k_inv);
                (u128::from(hi) << 64) | u128::from(lo)
            })
            .collect()
    }

    #[test]
    fn keys_crafted_against_fx_collide_there_and_spread_here() {
        let flows = crafted_flow_keys();
        let hosts = crafted_u128_keys();
        // The threat is real: under Fx each set is one hash value (one probe chain).
        assert_eq!(distinct(&flows, &rustc_hash::FxBuildHasher), 1);
        assert_eq!(distinct(&hosts, &rustc_hash::FxBuildHasher), 1);
        // The maps' hasher spreads them as it spreads any keys.
        let m: Map<FlowKey, ()> = Map::default();
        assert!(distinct(&flows, m.hasher()) >= flows.len() - 1);
        let s: Set<u128> = Set::default();
        assert!(distinct(&hosts, s.hasher()) >= hosts.len() - 1);
    }

    #[test]
    fn every_map_has_its_own_seed() {
        // Two maps hash one key differently, so one map's layout says nothing about another's
        // (or another run's).
        let key = crafted_flow_keys()[0];
        let seeds: HashSet<u64> = (0..8)
            .map(|_| Map::<FlowKey, ()>::default().hasher().hash_one(key))
            .collect();
        assert!(seeds.len() >= 7, "{seeds:?}");
    }
}
