//! The shared-memory pool: one sealed memfd created by the proxy (which
//! registers it once with the verbs device), mapped MAP_SHARED by both the
//! proxy and the SMB server, and cut into fixed-size slots that the server
//! allocates ([`SlotAllocator`]). Payloads travel only through the pool; the
//! sockets carry `(pool_offset, len)`.
//!
//! The memfd is sealed F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL before it is
//! shared, so neither process can truncate it under the other's mapping
//! (which would SIGBUS the other); the mapping side checks the seals.
//!
//! Ownership of bytes across processes is by protocol: a slot belongs to the
//! server while allocated; the proxy touches a slot's bytes only between an
//! `Rdma` request naming it and the matching `RdmaDone`, and the server does
//! not borrow the slot during that time (it waits for `RdmaDone` first).

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool: {0}")]
    Io(#[from] std::io::Error),
    #[error("pool size {0} is not usable (zero or beyond the address space)")]
    BadSize(u64),
    #[error("pool memfd is {actual} bytes, {expected} announced")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("pool memfd is not sealed against shrinking and growing (seals {0:?})")]
    NotSealed(SealFlags),
    #[error("range {offset}+{len} is outside the pool of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("slot size {slot_size} does not fit the pool of {size} bytes")]
    BadSlotSize { slot_size: u64, size: u64 },
    #[error("request of {len} bytes exceeds the slot size {slot_size}")]
    TooBig { len: usize, slot_size: usize },
    #[error("no free slot")]
    Exhausted,
}

fn io(e: rustix::io::Errno) -> PoolError {
    PoolError::Io(e.into())
}

/// One MAP_SHARED read/write mapping of the pool memfd.
pub struct PoolMap {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value until Drop;
// all access through `PoolMap` goes through bounds-checked copies
// (`read_at`/`write_at`) or through `Slot`, which hands out one exclusive
// borrow per allocated slot. Moving or sharing the pointer between threads is
// therefore no different from sharing a `Vec<u8>` behind those methods.
unsafe impl Send for PoolMap {}
// SAFETY: see `Send` above; `&PoolMap` only allows copies in and out of
// checked ranges, which other threads' slots never overlap by construction.
unsafe impl Sync for PoolMap {}

impl std::fmt::Debug for PoolMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMap").field("len", &self.len).finish()
    }
}

impl PoolMap {
    /// Proxy side: creates a `size`-byte memfd, seals it and maps it.
    pub fn create(size: u64) -> Result<PoolMap, PoolError> {
        let len = usable_len(size)?;
        let fd = rustix::fs::memfd_create("smbdirect-pool", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).map_err(io)?;
        rustix::fs::ftruncate(&fd, size).map_err(io)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).map_err(io)?;
        Self::map_fd(fd, len)
    }

    /// Server side: maps the memfd received in `Hello`, after checking that
    /// it is sealed and exactly `size` bytes long.
    pub fn map(fd: OwnedFd, size: u64) -> Result<PoolMap, PoolError> {
        let len = usable_len(size)?;
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(io)?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(PoolError::NotSealed(seals));
        }
        let actual = rustix::fs::fstat(&fd).map_err(io)?.st_size as u64;
        if actual != size {
            return Err(PoolError::SizeMismatch { expected: size, actual });
        }
        Self::map_fd(fd, len)
    }

    fn map_fd(fd: OwnedFd, len: usize) -> Result<PoolMap, PoolError> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) cannot
        // alias any Rust object; `len` is non-zero and no larger than the
        // file, which is sealed against shrinking, so every mapped page stays
        // backed for the mapping's life.
        let p = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)
        }
        .map_err(io)?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(PoolError::BadSize(len as u64))?;
        Ok(PoolMap { ptr, len, fd })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd (to send in `Hello`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Base address, for ibv_reg_mr in the proxy. The caller may not create
    /// references from it to bytes a slot owner may be using.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Checks that `offset..offset+len` lies inside the pool.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, PoolError> {
        let size = self.len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(PoolError::OutOfRange { offset, len, size }),
        }
    }

    /// Copies pool bytes at `offset` into `out`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), PoolError> {
        let r = self.check_range(offset, out.len() as u64)?;
        // SAFETY: `r` is inside the mapping (checked above); `out` is a
        // distinct Rust buffer, so the regions do not overlap; the copy goes
        // through raw pointers, creating no reference to the shared bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(r.start), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into the pool at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        let r = self.check_range(offset, data.len() as u64)?;
        // SAFETY: as in `read_at`, with the roles of the buffers swapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(r.start), data.len()) };
        Ok(())
    }
}

impl Drop for PoolMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map_fd`, and no
        // `Slot` outlives its `Arc<PoolMap>`, so nothing borrows it any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

fn usable_len(size: u64) -> Result<usize, PoolError> {
    match usize::try_from(size) {
        Ok(n) if n > 0 && n <= isize::MAX as usize => Ok(n),
        _ => Err(PoolError::BadSize(size)),
    }
}

/// Fixed-size slots of a pool, allocated by the server process.
#[derive(Debug)]
pub struct SlotAllocator {
    pool: Arc<PoolMap>,
    slot_size: usize,
    count: usize,
    free: Mutex<Vec<u32>>,
    cv: Condvar,
}

impl SlotAllocator {
    pub fn new(pool: Arc<PoolMap>, slot_size: u32) -> Result<Arc<SlotAllocator>, PoolError> {
        let ss = slot_size as usize;
        if ss == 0 || ss > pool.len() {
            return Err(PoolError::BadSlotSize { slot_size: slot_size.into(), size: pool.len() as u64 });
        }
        let count = (pool.len() / ss).min(u32::MAX as usize);
        Self::with_range(pool, slot_size, 0, count as u32)
    }

    /// An allocator of slots `base..base + count` only (one worker's share
    /// of a pool that several processes allocate from).
    pub fn with_range(pool: Arc<PoolMap>, slot_size: u32, base: u32, count: u32) -> Result<Arc<SlotAllocator>, PoolError> {
        let ss = slot_size as usize;
        let end = u64::from(base) + u64::from(count);
        if ss == 0 || end * ss as u64 > pool.len() as u64 {
            return Err(PoolError::BadSlotSize { slot_size: slot_size.into(), size: pool.len() as u64 });
        }
        let free = (base..base + count).rev().collect();
        Ok(Arc::new(SlotAllocator { pool, slot_size: ss, count: count as usize, free: Mutex::new(free), cv: Condvar::new() }))
    }

    pub fn pool(&self) -> &Arc<PoolMap> {
        &self.pool
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub fn slot_count(&self) -> usize {
        self.count
    }

    /// Slots currently allocated.
    pub fn in_use(&self) -> usize {
        self.count - self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u32>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `len` bytes, or `Exhausted` at once.
    pub fn try_alloc(self: &Arc<Self>, len: usize) -> Result<Slot, PoolError> {
        self.alloc_timeout(len, Duration::ZERO)
    }

    /// A slot for `len` bytes, waiting up to `timeout` for one to be freed.
    pub fn alloc_timeout(self: &Arc<Self>, len: usize, timeout: Duration) -> Result<Slot, PoolError> {
        if len > self.slot_size {
            return Err(PoolError::TooBig { len, slot_size: self.slot_size });
        }
        let deadline = Instant::now() + timeout;
        let mut free = self.lock();
        loop {
            if let Some(index) = free.pop() {
                return Ok(Slot { alloc: Arc::clone(self), index, len });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Exhausted);
            }
            free = self.cv.wait_timeout(free, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// An allocated slot: `len` bytes at `offset()` in the pool, exclusively the
/// holder's until dropped.
#[derive(Debug)]
pub struct Slot {
    alloc: Arc<SlotAllocator>,
    index: u32,
    len: usize,
}

impl Slot {
    pub fn offset(&self) -> u64 {
        self.index as u64 * self.alloc.slot_size as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shrinks the slot's length (e.g. to what a file read returned).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the slot's range lies inside the mapping (index < count,
        // len <= slot_size) and this `Slot` is its only owner in this process;
        // the proxy writes it only while an Rdma request is outstanding, when
        // the server holds no borrow (module doc). Lifetime tied to `&self`.
        unsafe { std::slice::from_raw_parts(self.alloc.pool.as_ptr().add(self.offset() as usize), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.alloc.pool.as_ptr().add(self.offset() as usize), self.len) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.alloc.lock().push(self.index);
        self.alloc.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_by_one_mapping_read_through_another() {
        let a = PoolMap::create(1 << 20).unwrap();
        // The server maps its own copy of the fd (as received by SCM_RIGHTS).
        let fd2 = a.fd().try_clone_to_owned().unwrap();
        let b = Arc::new(PoolMap::map(fd2, 1 << 20).unwrap());
        a.write_at(4096, b"hello pool").unwrap();
        let mut got = [0u8; 10];
        b.read_at(4096, &mut got).unwrap();
        assert_eq!(&got, b"hello pool");
        // And back through a slot of the second mapping.
        let alloc = SlotAllocator::new(Arc::clone(&b), 64 * 1024).unwrap();
        let mut s = alloc.try_alloc(5).unwrap();
        s.as_mut_slice().copy_from_slice(b"12345");
        let mut got = [0u8; 5];
        a.read_at(s.offset(), &mut got).unwrap();
        assert_eq!(&got, b"12345");
    }

    #[test]
    fn sealed_against_resizing_and_unsealed_refused() {
        let a = PoolMap::create(8192).unwrap();
        assert!(rustix::fs::ftruncate(a.fd(), 4096).is_err());
        assert!(rustix::fs::ftruncate(a.fd(), 1 << 20).is_err());
        let raw = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&raw, 8192).unwrap();
        assert!(matches!(PoolMap::map(raw, 8192), Err(PoolError::NotSealed(_))));
        let fd2 = a.fd().try_clone_to_owned().unwrap();
        assert!(matches!(PoolMap::map(fd2, 16384), Err(PoolError::SizeMismatch { .. })));
        assert!(matches!(PoolMap::create(0), Err(PoolError::BadSize(0))));
    }

    #[test]
    fn ranges_are_checked() {
        let a = PoolMap::create(8192).unwrap();
        assert!(a.check_range(8192, 0).is_ok());
        assert!(a.check_range(8000, 193).is_err());
        assert!(a.check_range(u64::MAX, 2).is_err());
        assert!(a.write_at(8190, &[1, 2, 3]).is_err());
    }

    #[test]
    fn slots_are_exclusive_and_return() {
        let pool = Arc::new(PoolMap::create(4 * 4096).unwrap());
        let alloc = SlotAllocator::new(pool, 4096).unwrap();
        assert_eq!(alloc.slot_count(), 4);
        let slots: Vec<Slot> = (0..4).map(|_| alloc.try_alloc(4096).unwrap()).collect();
        let mut offs: Vec<u64> = slots.iter().map(Slot::offset).collect();
        offs.sort_unstable();
        assert_eq!(offs, vec![0, 4096, 8192, 12288]);
        assert!(matches!(alloc.try_alloc(1), Err(PoolError::Exhausted)));
        assert!(matches!(alloc.try_alloc(4097), Err(PoolError::TooBig { .. })));
        assert_eq!(alloc.in_use(), 4);
        let alloc2 = Arc::clone(&alloc);
        let waiter = std::thread::spawn(move || alloc2.alloc_timeout(10, Duration::from_secs(10)).map(|s| s.offset()));
        std::thread::sleep(Duration::from_millis(20));
        drop(slots);
        assert!(waiter.join().unwrap().is_ok());
        assert_eq!(alloc.in_use(), 0);
    }

    #[test]
    fn a_range_allocates_only_its_slots() {
        let pool = Arc::new(PoolMap::create(8 * 4096).unwrap());
        let alloc = SlotAllocator::with_range(Arc::clone(&pool), 4096, 5, 2).unwrap();
        assert_eq!(alloc.slot_count(), 2);
        let a = alloc.try_alloc(1).unwrap();
        let b = alloc.try_alloc(1).unwrap();
        let mut offs = [a.offset(), b.offset()];
        offs.sort_unstable();
        assert_eq!(offs, [5 * 4096, 6 * 4096]);
        assert!(matches!(alloc.try_alloc(1), Err(PoolError::Exhausted)));
        assert!(SlotAllocator::with_range(Arc::clone(&pool), 4096, 7, 2).is_err(), "past the pool");
        assert!(SlotAllocator::with_range(pool, 4096, 8, 0).is_ok(), "an empty range at the end");
    }
}
