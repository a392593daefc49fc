//! Which interfaces' ingress the XDP program watches, as the TC egress program asks of every
//! packet it sees: a packet forwarded from a watched interface was accounted where it entered,
//! and is only looked at where it leaves (`crate::nat`).
//!
//! Why an index beside the set: the set is a hash map (`WATCHED`, ifindex -> 1), and its lookup
//! (a helper call hashing the key) was about a third of what looking at a forwarded packet costs
//! (`cargo xtask bench`, `egress_hot`: TC egress 2.8-2.9x the trivial classifier with it,
//! 2.0x without). Every packet a gateway forwards asks. A direct-mapped array (`WATCHED_INDEX`,
//! slot [`slot`] of an ifindex) answers with one read the verifier inlines: the slot holds the
//! watched ifindex that maps there, 0 if none does, or [`SHARED`] where two do, and only then
//! does the question go on to the hash map.

/// Slots of `WATCHED_INDEX` (a power of two).
pub const INDEX_SLOTS: u32 = 1024;

/// A slot that two watched interfaces share: ask `WATCHED`. Never an ifindex (the kernel's are
/// positive `int`s).
pub const SHARED: u32 = u32::MAX;

/// The `WATCHED_INDEX` slot of `ifindex`.
#[inline(always)]
pub fn slot(ifindex: u32) -> u32 {
    ifindex & (INDEX_SLOTS - 1)
}

/// What a slot holding `held` holds once `ifindex`, which maps to it, is watched too.
pub fn with(held: u32, ifindex: u32) -> u32 {
    if held == 0 || held == ifindex {
        ifindex
    } else {
        SHARED
    }
}

/// Whether `ifindex` (nonzero) is watched, from what its slot holds; `None` when the slot is
/// shared and the set must say.
#[inline(always)]
pub fn answer(held: u32, ifindex: u32) -> Option<bool> {
    if held == SHARED {
        None
    } else {
        Some(held == ifindex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the index of `watched` as user space does, then asks it for every ifindex up to
    /// 5,000: each answer agrees with the set, or defers to it.
    fn check(watched: &[u32]) {
        let mut index = [0u32; INDEX_SLOTS as usize];
        for &i in watched {
            let s = slot(i) as usize;
            index[s] = with(index[s], i);
        }
        for i in 1..5_000 {
            match answer(index[slot(i) as usize], i) {
                Some(w) => assert_eq!(w, watched.contains(&i), "ifindex {i}"),
                None => {
                    // Deferred only where two watched interfaces share the slot.
                    let sharing = watched.iter().filter(|&&w| slot(w) == slot(i)).count();
                    assert!(sharing >= 2, "ifindex {i} deferred without cause");
                }
            }
        }
    }

    #[test]
    fn the_index_agrees_with_the_set_or_defers_to_it() {
        check(&[]);
        check(&[2, 3]);
        check(&[2, 3, 3]);
        // 5 and 1029 share a slot, and 4101 after them.
        check(&[5, 1029, 7]);
        check(&[5, 1029, 4101, 4000]);
        assert_eq!(with(with(0, 5), 1029), SHARED);
        assert_eq!(answer(with(with(0, 5), 1029), 5), None);
        assert_eq!(answer(with(0, 5), 1029), Some(false));
    }
}
