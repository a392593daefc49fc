//! How the parser reads a frame: [`PacketData`] and its header views, over the kernel's packet
//! pointers (in `sensor-ebpf`) or a byte slice (here).

/// Random access to a frame's bytes, one bounds check per header.
///
/// [`PacketData::header`] checks once that `N` bytes exist at `off`; the returned view then reads
/// fields at constant offsets below `N` without further checks. In the kernel that is exactly the
/// shape the verifier proves safe (one comparison against `data_end`, then loads at fixed offsets
/// from the checked pointer), and each field is one load instead of a byte-by-byte copy.
pub trait PacketData {
    /// A view of the `N` bytes at `off`.
    type Header<const N: usize>: HeaderView;
    /// The `N` bytes at `off`, or `None` if the frame ends before `off + N`.
    fn header<const N: usize>(&self, off: usize) -> Option<Self::Header<N>>;
    /// The frame's length in bytes: the captured bytes in user space, the whole packet in the
    /// kernel (which may extend past the part the TC program can read). Used where an IPv4
    /// header's total length is 0.
    fn frame_len(&self) -> usize;
    /// `off`, unchanged, but no longer known to the kernel's verifier as the constant or narrow
    /// range it tracked: paths that reach one header at different offsets then share one
    /// verifier state instead of each walking the rest of the parser again. The identity in
    /// user space.
    #[inline(always)]
    fn forget(&self, off: usize) -> usize {
        off
    }
}

/// Field reads inside a bounds-checked header. Offsets are constants below the header's size.
pub trait HeaderView {
    /// The byte at `i`.
    fn u8(&self, i: usize) -> u8;
    /// The big-endian 16-bit field at `i`.
    fn be16(&self, i: usize) -> u16;
    /// The 32-bit word at `i`, kept in network byte order (addresses: compared, not read).
    fn ne32(&self, i: usize) -> u32;
}

/// A header copied out of a byte slice (user space).
#[derive(Clone, Copy)]
pub struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> HeaderView for Bytes<N> {
    #[inline(always)]
    fn u8(&self, i: usize) -> u8 {
        self.0[i]
    }
    #[inline(always)]
    fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[i], self.0[i + 1]])
    }
    #[inline(always)]
    fn ne32(&self, i: usize) -> u32 {
        u32::from_ne_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]])
    }
}

impl PacketData for [u8] {
    type Header<const N: usize> = Bytes<N>;
    #[inline(always)]
    fn header<const N: usize>(&self, off: usize) -> Option<Bytes<N>> {
        let end = off.checked_add(N)?;
        let s = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(Bytes(out))
    }
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len()
    }
}
