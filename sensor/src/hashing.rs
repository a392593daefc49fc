//! The hash maps of the live path, keyed by what the traffic chooses: addresses and ports.
//!
//! A gateway sensor is a target (issue 13), and spoofed sources let an attacker choose the keys
//! of the lifecycle's, the feature windows' and the incidents' maps. With an unseeded hash
//! (`rustc_hash`'s Fx, used here before) keys that all hash alike can be computed offline, once
//! for every deployment:
//!
//! - a byte string of 9 to 16 bytes whose first eight equal Fx's public `SEED1` compresses to
//!   one value whatever its last eight: every [`FlowKey`](sensor_common::FlowKey) (addresses
//!   as `[u32; 4]`, hashed as bytes) from IPv6 sources `SEED1:*` to one port hashes alike;
//! - a `u128` (the windows' host keys; an `IpAddr` hashes as its variant and a `u128`) is
//!   hashed as `(lo * K + hi) * K`, so for any `hi` some `lo` lands on the same value.
//!
//! A flood from such sources puts every connection in one probe chain: each insert and lookup
//! then walks all of them (`cargo bench -p sensor --bench hashing`: 118x the time of an
//! ordinary flood through the lifecycle with Fx, figures in `docs/performance.md`).
//!
//! These maps use foldhash (about as fast as Fx for these keys) behind [`Seeded`]: a secret
//! shared seed from the kernel's random generator, the one the XDP flow table's seed comes
//! from ([`crate::flow_table::hash_seed`]), and a different seed for each map. No set of keys
//! computed outside the process collides; foldhash does not claim to resist an attacker who
//! can watch hash values, which the sensor never shows.
//!
//! Replay's tables and rows use these maps too; no order of theirs reaches the rows (the
//! lifecycle's flush sorts the entries, replay runs no table scan, held rows are written in a
//! total order).

use std::{
    hash::BuildHasher,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use foldhash::{
    SharedSeed,
    fast::{FoldHasher, SeedableRandomState},
};

/// A hash map keyed by traffic-chosen values ([`Seeded`]).
pub type Map<K, V> = std::collections::HashMap<K, V, Seeded>;

/// A hash set of traffic-chosen values ([`Seeded`]).
pub type Set<T> = std::collections::HashSet<T, Seeded>;

/// foldhash with the process's secret seed and a seed of its own per map (per `default()`).
#[derive(Clone, Debug)]
pub struct Seeded(SeedableRandomState);

impl Default for Seeded {
    fn default() -> Seeded {
        static SHARED: OnceLock<Option<SharedSeed>> = OnceLock::new();
        static NEXT_MAP: AtomicU64 = AtomicU64::new(0);
        let shared = SHARED.get_or_init(|| {
            // 0 only when the kernel has no getrandom (logged there): then foldhash's own
            // global seed (addresses and the clock at start) is the best there is.
            let seed = crate::flow_table::hash_seed();
            (seed != 0).then(|| SharedSeed::from_u64(seed ^ 0x6d61_7073_2d75_7365))
        });
        let shared = shared.as_ref().unwrap_or_else(SharedSeed::global_random);
        Seeded(SeedableRandomState::with_seed(
            NEXT_MAP.fetch_add(1, Ordering::Relaxed),
            shared,
        ))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    #[inline(always)]
    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

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
                let words = |b: &[u8; 16]| -> [u32; 4] {
                    std::array::from_fn(|w| {
                        u32::from_ne_bytes([b[4 * w], b[4 * w + 1], b[4 * w + 2], b[4 * w + 3]])
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
        // The maps' hasher spreads them as it spreads any keys, down to the low bits that pick
        // a bucket: 4,096 random hashes fill about 2,589 of 4,096 buckets (1 - 1/e), with a
        // standard deviation of about 19.
        let m: Map<FlowKey, ()> = Map::default();
        let s: Set<u128> = Set::default();
        for (name, hashes) in [
            (
                "flow keys",
                flows
                    .iter()
                    .map(|k| m.hasher().hash_one(k))
                    .collect::<Vec<_>>(),
            ),
            (
                "u128 hosts",
                hosts.iter().map(|k| s.hasher().hash_one(k)).collect(),
            ),
        ] {
            let buckets: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
            assert!(buckets.len() >= 2_400, "{name}: {} buckets", buckets.len());
        }
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
