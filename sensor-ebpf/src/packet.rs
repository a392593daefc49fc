//! Bounds-checked packet access for the shared parser (`sensor_common::parse::PacketData`).

use aya_ebpf::programs::{TcContext, XdpContext};
use sensor_common::parse::{HeaderView, PacketData};

use crate::FORGET;

/// Bounds-checked access to the packet between `data` and `data_end`.
pub(crate) struct KernelPacket<'a, C> {
    /// Asked for the frame's length, which is rarely needed (`PacketData::frame_len`): one
    /// value fewer kept live through the parse.
    pub(crate) ctx: &'a C,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A frame's whole length, as `PacketData::frame_len` gives it.
pub(crate) trait FrameLen {
    fn frame_len(&self) -> usize;
}

impl FrameLen for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }
}

impl FrameLen for TcContext {
    /// The skb's length: the whole packet, also the part the program cannot read directly.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }
}

/// `N` packet bytes at `p`, checked against `data_end` by [`KernelPacket::header`].
#[derive(Clone, Copy)]
pub(crate) struct KernelHeader<const N: usize> {
    p: usize,
}

impl<C: FrameLen> PacketData for KernelPacket<'_, C> {
    type Header<const N: usize> = KernelHeader<N>;

    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<KernelHeader<N>> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(KernelHeader { p })
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.ctx.frame_len()
    }

    /// A round trip through a map value: the verifier does not track what map memory holds,
    /// so the value read back is an unknown scalar (which `parse` then bounds). The lookup of
    /// index 0 of an array cannot fail (the verifier knows it too, so the `None` arm is dead).
    #[inline(always)]
    fn forget(&self, value: usize) -> usize {
        match FORGET.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot of a per-CPU array, valid and 8-aligned for the
            // program run.
            Some(slot) => unsafe {
                core::ptr::write_volatile(slot, value as u64);
                core::ptr::read_volatile(slot) as usize
            },
            None => value,
        }
    }
}

// The loads below are single BPF loads of the field's width. Packet data has no alignment
// guarantee, and the BPF ISA and the x86-64/arm64 JITs allow unaligned loads from packet memory
// (the verifier only rejects them under strict alignment, which these architectures do not
// use), so the natural-width load is what we want; `read_unaligned` would be split into byte
// loads by the BPF backend.
impl<const N: usize> HeaderView for KernelHeader<N> {
    #[inline(always)]
    fn u8(&self, i: usize) -> u8 {
        // SAFETY: `i < N` at every call site (constant offsets), and `[p, p + N)` was checked
        // against `data_end`.
        unsafe { *((self.p + i) as *const u8) }
    }
    #[inline(always)]
    fn be16(&self, i: usize) -> u16 {
        // SAFETY: as above, `i + 2 <= N`; unaligned packet loads are allowed (see above).
        u16::from_be(unsafe { *((self.p + i) as *const u16) })
    }
    #[inline(always)]
    fn ne32(&self, i: usize) -> u32 {
        // SAFETY: as above, `i + 4 <= N`; unaligned packet loads are allowed (see above).
        unsafe { *((self.p + i) as *const u32) }
    }
}
