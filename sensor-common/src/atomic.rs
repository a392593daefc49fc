//! Relaxed atomic add on a counter inside a map value.
//!
//! `core`'s atomic types offer no read-modify-write operations on the BPF target, so the kernel
//! build calls the compiler intrinsic directly (it lowers to the BPF atomic add instruction); the
//! host build uses the ordinary atomic types. Both add exactly once per call, race-free.

/// Adds `n` to `*dst` atomically (relaxed ordering; the result is not read).
///
/// # Safety
/// `dst` must be valid for reads and writes and naturally aligned.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub unsafe fn atomic_add<T: Copy>(dst: *mut T, n: T) {
    // SAFETY: forwarded from the caller: `dst` is valid and aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<T, T, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, n)
    };
}

/// Adds `n` to `*dst` atomically (relaxed ordering; the result is not read).
///
/// # Safety
/// `dst` must be valid for reads and writes and naturally aligned.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub unsafe fn atomic_add<T: HostAtomic>(dst: *mut T, n: T) {
    // SAFETY: forwarded from the caller: `dst` is valid and aligned.
    unsafe { T::add(dst, n) }
}

/// Integer types with a host atomic counterpart.
#[cfg(not(target_arch = "bpf"))]
pub trait HostAtomic: Copy {
    /// # Safety
    /// As [`atomic_add`].
    unsafe fn add(dst: *mut Self, n: Self);
}

#[cfg(not(target_arch = "bpf"))]
impl HostAtomic for u64 {
    unsafe fn add(dst: *mut u64, n: u64) {
        // SAFETY: forwarded: valid and 8-aligned.
        unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
            .fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(not(target_arch = "bpf"))]
impl HostAtomic for u32 {
    unsafe fn add(dst: *mut u32, n: u32) {
        // SAFETY: forwarded: valid and 4-aligned.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(dst) }
            .fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Atomically adds `n` (wrapping; pass `u64::MAX` to subtract one) to `*dst` and returns the
/// previous value (sequentially consistent). User space only: the BPF target built for the
/// baseline CPU (bpf-linker `--cpu generic`) cannot use the result of an atomic add; the kernel
/// program uses [`compare_exchange_u64`] where it needs one.
///
/// # Safety
/// `dst` must be valid for reads and writes and 8-aligned.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub unsafe fn fetch_add_u64(dst: *mut u64, n: u64) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
        .fetch_add(n, core::sync::atomic::Ordering::SeqCst)
}

/// Atomically replaces `*dst` by `new` if it is `old`; whether it did (sequentially consistent).
///
/// 64-bit only: the BPF target built for the baseline CPU (bpf-linker `--cpu generic`, no ALU32)
/// has no 32-bit compare-and-swap or exchange (the kernel has the 64-bit ones since 5.12).
///
/// # Safety
/// `dst` must be valid for reads and writes and 8-aligned.
#[inline(always)]
pub unsafe fn compare_exchange_u64(dst: *mut u64, old: u64, new: u64) -> bool {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        use core::intrinsics::AtomicOrdering::SeqCst;
        core::intrinsics::atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(dst, old, new).1
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        use core::sync::atomic::Ordering::SeqCst;
        // SAFETY: forwarded from the caller.
        unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
            .compare_exchange(old, new, SeqCst, SeqCst)
            .is_ok()
    }
}

/// Atomically sets the bits of `mask` in `*dst` (relaxed ordering; the result is not read):
/// one instruction, where a compare-and-swap loop has to retry while other writers change the
/// word's other bits.
///
/// # Safety
/// `dst` must be valid for reads and writes and 8-aligned.
#[inline(always)]
pub unsafe fn atomic_or_u64(dst: *mut u64, mask: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, mask,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded from the caller.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
        .fetch_or(mask, core::sync::atomic::Ordering::Relaxed);
}

/// Atomically stores `v` at `dst`, after every earlier write (an exchange: BPF before ISA v4 has
/// no store-release).
///
/// # Safety
/// `dst` must be valid for reads and writes and 8-aligned.
#[inline(always)]
pub unsafe fn publish_u64(dst: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::intrinsics::atomic_xchg::<u64, { core::intrinsics::AtomicOrdering::SeqCst }>(dst, v);
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded from the caller.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(dst) }
        .store(v, core::sync::atomic::Ordering::SeqCst);
}

/// Reads `*src` once (never merged with other reads, so a spin on it sees other CPUs' writes).
///
/// # Safety
/// `src` must be valid for reads and 8-aligned.
#[inline(always)]
pub unsafe fn load_u64(src: *const u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::ptr::read_volatile(src)
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded from the caller.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(src.cast_mut()) }
        .load(core::sync::atomic::Ordering::Acquire)
}
