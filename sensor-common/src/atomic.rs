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
