//! A small safe layer over libibverbs and librdmacm (through `rdma-sys`): just what an
//! SMB Direct endpoint needs, driven by an event loop through non-blocking file
//! descriptors.
//!
//! - [`EventChannel`]: the rdma_cm event channel (non-blocking fd) and its events.
//! - [`CmId`]: one rdma_cm identifier: listen, accept/reject, connect (client role),
//!   disconnect; it owns its RC queue pair once [`CmId::create_qp`] made it, and posts
//!   receives, sends (with or without invalidate) and RDMA READ/WRITE on it.
//! - [`Pd`] (protection domain, with the device's attributes), [`CompChannel`] +
//!   [`Cq`] (completion queue with a non-blocking notification fd, re-armed with
//!   [`Cq::req_notify`], events acknowledged in batches), [`Mr`] (a registration of
//!   memory the caller owns) and [`RegisteredBuffer`] (memory this layer owns and
//!   registers, for send and receive buffers).
//!
//! # Ownership and lifetimes
//! Every object keeps what it was created from alive by reference counting: a `CmId`
//! holds its event channel, and once it has a queue pair, the PD and CQ of that queue
//! pair; an `Mr` holds its PD; a `Cq` holds its completion channel. Dropping in any
//! order is therefore safe; destruction follows the library's rules (the queue pair
//! before its identifier, CQ events acknowledged before the CQ is destroyed).
//!
//! Memory named by a work request must stay valid until the work request's completion
//! (or flush) is polled. For a [`RegisteredBuffer`] this layer guarantees it as long as
//! the buffer outlives the queue pair; for an external [`Mr`] ([`Mr::register`], e.g. a
//! shared-memory pool) the caller promises it (see its `# Safety`). The device checks
//! every scatter/gather entry against the registrations (lkey, range), so posting a
//! work request is safe: a wrong entry completes with a protection error, it never
//! touches unregistered memory.
//!
//! Nothing here blocks: the event channel and completion channel fds are non-blocking;
//! wait for them with poll/epoll and then call [`EventChannel::get_event`] or
//! [`CompChannel::get_event`] until they return `None`.

use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_sys as sys;

use crate::smbd::CompletionError;

/// The SMB Direct client role over these verbs (the project's SMB client and smbd-fault).
pub mod client;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

/// librdmacm and libibverbs return -1 and set errno, or (some verbs) return the errno.
fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        -1 => Err(last_err()),
        e if e > 0 => Err(io::Error::from_raw_os_error(e)),
        _ => Err(io::Error::other(format!("verbs call returned {ret}"))),
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the library owns and keeps open while we hold the
    // object; F_GETFL/F_SETFL only change its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(last_err());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(last_err());
    }
    Ok(())
}

fn sockaddr_to_std(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` points into an rdma_cm_id's route (a sockaddr_storage-sized union),
    // valid while the id lives; the family says which variant it holds.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// A socket address in C layout, big enough for IPv4 and IPv6.
fn std_to_sockaddr(addr: &SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
        }
    }
    ss
}

// ---------------------------------------------------------------------------------
// Devices

/// What a device allows (from ibv_query_device), as this layer uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAttr {
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cqe: u32,
    pub max_mr_size: u64,
    /// RDMA READs this device answers at once per QP (our responder resources).
    pub max_qp_rd_atom: u32,
    /// RDMA READs this device issues at once per QP (our initiator depth).
    pub max_qp_init_rd_atom: u32,
}

/// A device context (owned by librdmacm, open for the life of the process once an
/// rdma_cm identifier was bound to it). Only a handle: copying it is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Context(NonNull<sys::ibv_context>);

// SAFETY: an ibv_context is thread-safe per libibverbs' documentation; this handle is
// only an address.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl Context {
    /// The device's name (e.g. `rxe0`).
    pub fn name(&self) -> String {
        // SAFETY: the context and its device stay valid while librdmacm keeps the device
        // open (the life of the process); ibv_get_device_name returns a NUL-terminated
        // string owned by the device.
        unsafe {
            let dev = (*self.0.as_ptr()).device;
            let name = sys::ibv_get_device_name(dev);
            if name.is_null() {
                return String::from("?");
            }
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }

    /// True for iWARP devices (they listen on port 5445 for SMB Direct).
    pub fn is_iwarp(&self) -> bool {
        // SAFETY: as in `name`.
        unsafe { (*(*self.0.as_ptr()).device).transport_type == sys::ibv_transport_type::IBV_TRANSPORT_IWARP }
    }

    pub fn query(&self) -> io::Result<DeviceAttr> {
        // SAFETY: ibv_device_attr is plain old data; the call fills it.
        let mut attr: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context, valid out-pointer.
        check(unsafe { sys::ibv_query_device(self.0.as_ptr(), &mut attr) })?;
        let u = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
        Ok(DeviceAttr {
            max_qp_wr: u(attr.max_qp_wr),
            max_sge: u(attr.max_sge),
            max_cqe: u(attr.max_cqe),
            max_mr_size: attr.max_mr_size,
            max_qp_rd_atom: u(attr.max_qp_rd_atom),
            max_qp_init_rd_atom: u(attr.max_qp_init_rd_atom),
        })
    }
}

/// The devices librdmacm knows (every RDMA-capable device of the machine).
pub fn devices() -> io::Result<Vec<Context>> {
    let mut n: libc::c_int = 0;
    // SAFETY: valid out-pointer; the returned array is freed below with
    // rdma_free_devices, the contexts in it stay open.
    let list = unsafe { sys::rdma_get_devices(&mut n) };
    if list.is_null() {
        return Err(last_err());
    }
    let mut out = Vec::new();
    for i in 0..usize::try_from(n).unwrap_or(0) {
        // SAFETY: the array holds `n` entries.
        if let Some(c) = NonNull::new(unsafe { *list.add(i) }) {
            out.push(Context(c));
        }
    }
    // SAFETY: the list came from rdma_get_devices and is freed once.
    unsafe { sys::rdma_free_devices(list) };
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Protection domain

#[derive(Debug)]
struct PdInner {
    pd: NonNull<sys::ibv_pd>,
    ctx: Context,
}

// SAFETY: verbs objects are thread-safe; the pointer is owned by this struct.
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: allocated by ibv_alloc_pd, freed once; every MR and QP of this PD holds
        // an Arc to it, so none is left.
        let r = unsafe { sys::ibv_dealloc_pd(self.pd.as_ptr()) };
        if r != 0 {
            tracing::warn!(r, "ibv_dealloc_pd failed");
        }
    }
}

/// A protection domain on one device. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Pd(Arc<PdInner>);

impl Pd {
    pub fn new(ctx: Context) -> io::Result<Pd> {
        // SAFETY: valid context.
        let pd = unsafe { sys::ibv_alloc_pd(ctx.0.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(last_err)?;
        Ok(Pd(Arc::new(PdInner { pd, ctx })))
    }
    pub fn context(&self) -> Context {
        self.0.ctx
    }
}

// ---------------------------------------------------------------------------------
// Memory registration

/// Access rights of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub local_write: bool,
    pub remote_read: bool,
    pub remote_write: bool,
}

impl Access {
    /// The local device may write (receive buffers, RDMA READ targets). The server side
    /// of SMB Direct never exposes memory to the peer.
    pub const LOCAL_WRITE: Access = Access { local_write: true, remote_read: false, remote_write: false };
    fn bits(self) -> libc::c_int {
        let mut b = 0u32;
        if self.local_write {
            b |= sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        }
        if self.remote_read {
            b |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
        }
        if self.remote_write {
            b |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        b as libc::c_int
    }
}

#[derive(Debug)]
struct MrInner {
    mr: NonNull<sys::ibv_mr>,
    addr: u64,
    len: usize,
    _pd: Pd,
}

// SAFETY: verbs objects are thread-safe; the pointer is owned by this struct.
unsafe impl Send for MrInner {}
// SAFETY: as above.
unsafe impl Sync for MrInner {}

impl Drop for MrInner {
    fn drop(&mut self) {
        // SAFETY: registered by ibv_reg_mr, deregistered once.
        let r = unsafe { sys::ibv_dereg_mr(self.mr.as_ptr()) };
        if r != 0 {
            tracing::warn!(r, "ibv_dereg_mr failed");
        }
    }
}

/// A memory registration. Cheap to clone (shared); deregistered when the last clone
/// goes.
#[derive(Debug, Clone)]
pub struct Mr(Arc<MrInner>);

impl Mr {
    /// Registers `len` bytes at `addr` (memory the caller owns, such as a shared
    /// memory pool).
    ///
    /// # Safety
    /// The memory must stay mapped, and must not be used as Rust-owned data (no
    /// references to it held across device access), until this `Mr` and every clone of
    /// it are dropped AND every work request that names it has completed or been
    /// flushed (in practice: keep the mapping alive longer than the queue pairs that use
    /// it). The device reads and writes it at any time a work request allows.
    pub unsafe fn register(pd: &Pd, addr: *mut u8, len: usize, access: Access) -> io::Result<Mr> {
        // SAFETY: the caller's promise, passed on.
        unsafe { Mr::register_bits(pd, addr, len, access.bits()) }
    }

    /// As [`Mr::register`], with raw access bits.
    ///
    /// # Safety
    /// As [`Mr::register`].
    unsafe fn register_bits(pd: &Pd, addr: *mut u8, len: usize, bits: libc::c_int) -> io::Result<Mr> {
        // SAFETY: the caller guarantees the range is mapped for the registration's life;
        // ibv_reg_mr pins it.
        let mr = unsafe { sys::ibv_reg_mr(pd.0.pd.as_ptr(), addr.cast(), len, bits) };
        let mr = NonNull::new(mr).ok_or_else(last_err)?;
        Ok(Mr(Arc::new(MrInner { mr, addr: addr as u64, len, _pd: pd.clone() })))
    }
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is valid while self lives; lkey is immutable.
        unsafe { (*self.0.mr.as_ptr()).lkey }
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.0.mr.as_ptr()).rkey }
    }
    /// Address of the first registered byte.
    pub fn addr(&self) -> u64 {
        self.0.addr
    }
    pub fn len(&self) -> usize {
        self.0.len
    }
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
    /// The scatter/gather entry for `len` bytes at `offset` of this registration, or None
    /// when the range is outside it.
    pub fn sge(&self, offset: usize, len: u32) -> Option<Sge> {
        let end = offset.checked_add(len as usize)?;
        if end > self.0.len {
            return None;
        }
        Some(Sge { addr: self.0.addr + offset as u64, len, lkey: self.lkey() })
    }
}

/// Anonymous memory owned and registered by this layer (send and receive buffers).
/// Rust never holds a reference into it: bytes go in and out by copy, so the device may
/// access other parts of it at the same time.
#[derive(Debug)]
pub struct RegisteredBuffer {
    ptr: NonNull<u8>,
    len: usize,
    mr: Option<Mr>,
}

// SAFETY: the mapping is owned by this struct; access goes through &self/&mut self copies.
unsafe impl Send for RegisteredBuffer {}

impl RegisteredBuffer {
    /// Maps `len` bytes (zeroed) and registers them with `access`.
    pub fn new(pd: &Pd, len: usize, access: Access) -> io::Result<RegisteredBuffer> {
        let len = len.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let mut b = RegisteredBuffer { ptr, len, mr: None };
        // SAFETY: the mapping lives until `b` is dropped, and Drop deregisters first
        // (this struct's Mr is the only clone handed out only as lkeys and addresses).
        // Rust never creates references into it (copies go through raw pointers).
        b.mr = Some(unsafe { Mr::register(pd, ptr.as_ptr(), len, access)? });
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn lkey(&self) -> u32 {
        self.mr.as_ref().map(Mr::lkey).unwrap_or(0)
    }
    /// The remote key: what a client puts in a buffer descriptor (its registration must
    /// allow remote access for the peer to use it).
    pub fn rkey(&self) -> u32 {
        self.mr.as_ref().map(Mr::rkey).unwrap_or(0)
    }
    /// The address of the first byte, as the device sees it (a buffer descriptor's base).
    pub fn addr(&self) -> u64 {
        self.mr.as_ref().map(Mr::addr).unwrap_or(0)
    }
    /// The entry for `len` bytes at `offset`, or None outside the buffer.
    pub fn sge(&self, offset: usize, len: u32) -> Option<Sge> {
        self.mr.as_ref()?.sge(offset, len)
    }

    /// Copies `src` to `offset` (the caller keeps that range out of posted work
    /// requests). False when the range is outside the buffer.
    pub fn write(&mut self, offset: usize, src: &[u8]) -> bool {
        match offset.checked_add(src.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: the range is inside the mapping (checked); `src` is a distinct
                // Rust buffer, so the ranges do not overlap.
                unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) };
                true
            }
            _ => false,
        }
    }

    /// Copies `dst.len()` bytes from `offset` (a range whose receive has completed).
    /// False when the range is outside the buffer.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: the range is inside the mapping (checked); `dst` is a distinct
                // Rust buffer.
                unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
                true
            }
            _ => false,
        }
    }
}

impl Drop for RegisteredBuffer {
    fn drop(&mut self) {
        // Deregister before unmapping.
        self.mr = None;
        // SAFETY: the mapping came from mmap with this length and is unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A caller's heap buffer registered in place (no copy) for as long as this value lives:
/// what a client registers for the peer to RDMA-read or RDMA-write (SMB2 WRITE or READ
/// with Channel RDMA_V1). While registered the buffer belongs to this layer and Rust
/// holds no reference into it (only its raw parts), so the device may write it at any
/// time; [`BufferMr::into_inner`] deregisters first and only then gives the bytes back.
#[derive(Debug)]
pub struct BufferMr {
    ptr: NonNull<u8>,
    len: usize,
    mr: Option<Mr>,
}

// SAFETY: the allocation is owned by this struct and only touched by the device and by
// `into_inner`/`Drop` (after deregistration), which take the struct by value or &mut.
unsafe impl Send for BufferMr {}
// SAFETY: &self methods read only the key, address and length (immutable).
unsafe impl Sync for BufferMr {}

impl BufferMr {
    /// Registers `buf` (not empty) with `access`; on error the buffer is returned.
    pub fn new(pd: &Pd, buf: Vec<u8>, access: Access) -> Result<BufferMr, (io::Error, Vec<u8>)> {
        Self::with_bits(pd, buf, access.bits())
    }

    /// As [`BufferMr::new`], and memory windows may be bound to the registration
    /// ([`CmId::post_bind_mw`]): the peer then gets the window's key, which it can
    /// invalidate remotely (Send-With-Invalidate), never the region's own.
    pub fn new_bindable(pd: &Pd, buf: Vec<u8>, access: Access) -> Result<BufferMr, (io::Error, Vec<u8>)> {
        Self::with_bits(pd, buf, access.bits() | sys::ibv_access_flags::IBV_ACCESS_MW_BIND.0 as libc::c_int)
    }

    fn with_bits(pd: &Pd, buf: Vec<u8>, bits: libc::c_int) -> Result<BufferMr, (io::Error, Vec<u8>)> {
        if buf.is_empty() {
            return Err((io::Error::new(io::ErrorKind::InvalidInput, "empty buffer"), buf));
        }
        let raw: *mut [u8] = Box::into_raw(buf.into_boxed_slice());
        let len = raw.len();
        // Not null: it came from a Box of a non-empty slice.
        let Some(ptr) = NonNull::new(raw.cast::<u8>()) else {
            return Err((io::Error::other("null allocation"), Vec::new()));
        };
        let mut b = BufferMr { ptr, len, mr: None };
        // SAFETY: the allocation stays alive until `b` gives it back (into_inner/Drop),
        // which deregisters first; no Rust reference into it exists meanwhile (the Box
        // was turned into raw parts). The Mr is never cloned out of this struct.
        match unsafe { Mr::register_bits(pd, ptr.as_ptr(), len, bits) } {
            Ok(mr) => {
                b.mr = Some(mr);
                Ok(b)
            }
            Err(e) => Err((e, b.into_inner())),
        }
    }

    fn take(&mut self) -> Vec<u8> {
        // Deregister before Rust may look at the bytes again.
        self.mr = None;
        let len = std::mem::take(&mut self.len);
        let p = std::mem::replace(&mut self.ptr, NonNull::dangling());
        if len == 0 {
            return Vec::new();
        }
        // SAFETY: ptr/len are the raw parts of the Box<[u8]> made in `new`, taken once
        // (len is now 0, so Drop and a second take do nothing).
        let b = unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p.as_ptr(), len)) };
        b.into_vec()
    }

    /// Deregisters and returns the buffer with whatever the peer wrote into it.
    pub fn into_inner(mut self) -> Vec<u8> {
        self.take()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The remote key (a buffer descriptor's Token).
    pub fn rkey(&self) -> u32 {
        self.mr.as_ref().map(Mr::rkey).unwrap_or(0)
    }
    pub fn lkey(&self) -> u32 {
        self.mr.as_ref().map(Mr::lkey).unwrap_or(0)
    }
    /// The address of the first byte as the device sees it (a buffer descriptor's Offset).
    pub fn addr(&self) -> u64 {
        self.mr.as_ref().map(Mr::addr).unwrap_or(0)
    }
}

impl Drop for BufferMr {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// A type 2 memory window: remote access to part of a region, granted by a bind posted
/// on one queue pair ([`CmId::post_bind_mw`]) and revoked by the peer's
/// Send-With-Invalidate of its key or by dropping the window. Drop every window bound to
/// a region before the region (a device refuses to deregister a region with bound
/// windows).
#[derive(Debug)]
pub struct Mw {
    mw: NonNull<sys::ibv_mw>,
    /// The key of the current binding (the device changes only its low 8 bits).
    rkey: u32,
    _pd: Pd,
}

// SAFETY: verbs objects are thread-safe; the pointer is owned by this struct.
unsafe impl Send for Mw {}
// SAFETY: &self reads only the cached key.
unsafe impl Sync for Mw {}

impl Mw {
    /// Allocates a type 2 window in `pd` (EOPNOTSUPP where the device has none).
    pub fn new(pd: &Pd) -> io::Result<Mw> {
        // SAFETY: valid PD; the provider returns an owned window or null/None.
        let mw = unsafe { sys::ibv_alloc_mw(pd.0.pd.as_ptr(), sys::ibv_mw_type::IBV_MW_TYPE_2) };
        let mw = mw.and_then(NonNull::new).ok_or_else(last_err)?;
        // SAFETY: valid window; rkey is plain data.
        let rkey = unsafe { (*mw.as_ptr()).rkey };
        Ok(Mw { mw, rkey, _pd: pd.clone() })
    }
    /// The key a peer uses (valid once the bind posted last has executed).
    pub fn rkey(&self) -> u32 {
        self.rkey
    }
}

impl Drop for Mw {
    fn drop(&mut self) {
        // SAFETY: allocated by ibv_alloc_mw, deallocated once; a bound window is
        // invalidated by its deallocation.
        let r = unsafe { sys::ibv_dealloc_mw(self.mw.as_ptr()) };
        if r != 0 {
            tracing::warn!(r, "ibv_dealloc_mw failed");
        }
    }
}

/// One scatter/gather entry: registered memory named by its local key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

impl Sge {
    fn raw(self) -> sys::ibv_sge {
        sys::ibv_sge { addr: self.addr, length: self.len, lkey: self.lkey }
    }
}

// ---------------------------------------------------------------------------------
// Completion channel and completion queue

#[derive(Debug)]
struct CompChannelInner {
    ch: NonNull<sys::ibv_comp_channel>,
}

// SAFETY: verbs objects are thread-safe; owned pointer.
unsafe impl Send for CompChannelInner {}
// SAFETY: as above.
unsafe impl Sync for CompChannelInner {}

impl Drop for CompChannelInner {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_comp_channel; every CQ on it holds an Arc to it,
        // so none is left.
        unsafe { sys::ibv_destroy_comp_channel(self.ch.as_ptr()) };
    }
}

/// A completion channel: a non-blocking fd readable when an armed CQ on it has a new
/// completion.
#[derive(Debug, Clone)]
pub struct CompChannel(Arc<CompChannelInner>);

impl CompChannel {
    pub fn new(ctx: Context) -> io::Result<CompChannel> {
        // SAFETY: valid context.
        let ch = unsafe { sys::ibv_create_comp_channel(ctx.0.as_ptr()) };
        let ch = NonNull::new(ch).ok_or_else(last_err)?;
        let c = CompChannel(Arc::new(CompChannelInner { ch }));
        set_nonblocking(c.raw_fd())?;
        Ok(c)
    }
    fn raw_fd(&self) -> RawFd {
        // SAFETY: the channel is valid while self lives; fd is immutable.
        unsafe { (*self.0.ch.as_ptr()).fd }
    }
    /// The fd to wait on (readable = call [`CompChannel::get_event`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open as long as the channel (self) lives.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// Takes one notification: which CQ (of `cqs` created on this channel) fired. The
    /// event is counted on that CQ and acknowledged in batches. None when no event is
    /// pending (EAGAIN).
    pub fn get_event(&self) -> io::Result<Option<CqHandle>> {
        let mut cq: *mut sys::ibv_cq = ptr::null_mut();
        let mut ctx: *mut libc::c_void = ptr::null_mut();
        // SAFETY: valid channel (non-blocking fd), valid out-pointers.
        let r = unsafe { sys::ibv_get_cq_event(self.0.ch.as_ptr(), &mut cq, &mut ctx) };
        if r != 0 {
            let e = last_err();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        Ok(NonNull::new(cq).map(CqHandle))
    }
}

/// Names the CQ a completion-channel event was for (compare with [`Cq::handle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CqHandle(NonNull<sys::ibv_cq>);

#[derive(Debug)]
struct CqInner {
    cq: NonNull<sys::ibv_cq>,
    _channel: CompChannel,
}

// SAFETY: verbs objects are thread-safe; owned pointer.
unsafe impl Send for CqInner {}
// SAFETY: as above.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_cq; every QP using it holds an Arc to it, so
        // none is left; pending events were acknowledged by Cq's Drop.
        let r = unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
        if r != 0 {
            tracing::warn!(r, "ibv_destroy_cq failed");
        }
    }
}

/// A completion queue bound to a completion channel.
#[derive(Debug)]
pub struct Cq {
    inner: Arc<CqInner>,
    unacked: u32,
}

/// Acknowledge CQ events once this many have accumulated (ibv_ack_cq_events takes a
/// mutex; per-event acks are wasted work).
const ACK_BATCH: u32 = 32;

impl Cq {
    pub fn new(ctx: Context, channel: &CompChannel, entries: u32) -> io::Result<Cq> {
        let n = libc::c_int::try_from(entries).unwrap_or(libc::c_int::MAX);
        // SAFETY: valid context and channel; cq_context unused (null).
        let cq = unsafe { sys::ibv_create_cq(ctx.0.as_ptr(), n, ptr::null_mut(), channel.0.ch.as_ptr(), 0) };
        let cq = NonNull::new(cq).ok_or_else(last_err)?;
        Ok(Cq { inner: Arc::new(CqInner { cq, _channel: channel.clone() }), unacked: 0 })
    }

    pub fn handle(&self) -> CqHandle {
        CqHandle(self.inner.cq)
    }

    /// Counts one event taken from the channel for this CQ; acknowledges in batches.
    pub fn event_received(&mut self) {
        self.unacked += 1;
        if self.unacked >= ACK_BATCH {
            self.ack_events();
        }
    }

    pub fn ack_events(&mut self) {
        if self.unacked > 0 {
            // SAFETY: valid CQ; acknowledges exactly the events taken for it.
            unsafe { sys::ibv_ack_cq_events(self.inner.cq.as_ptr(), self.unacked) };
            self.unacked = 0;
        }
    }

    /// Arms the CQ: the channel fires on the next completion. Poll once more after
    /// arming, or a completion that arrived in between waits for the next one.
    pub fn req_notify(&self) -> io::Result<()> {
        // SAFETY: valid CQ.
        check(unsafe { sys::ibv_req_notify_cq(self.inner.cq.as_ptr(), 0) })
    }

    /// Appends up to `max` completions to `out`; returns how many.
    pub fn poll(&self, out: &mut Vec<Wc>, max: usize) -> io::Result<usize> {
        const CHUNK: usize = 32;
        let mut total = 0;
        while total < max {
            // SAFETY: ibv_wc is plain old data (zero is valid); the call fills up to CHUNK.
            let mut wcs: [sys::ibv_wc; CHUNK] = unsafe { std::mem::zeroed() };
            let want = CHUNK.min(max - total) as i32;
            // SAFETY: valid CQ, `wcs` has room for `want` entries.
            let n = unsafe { sys::ibv_poll_cq(self.inner.cq.as_ptr(), want, wcs.as_mut_ptr()) };
            if n < 0 {
                return Err(io::Error::other(format!("ibv_poll_cq returned {n}")));
            }
            let n = n as usize;
            for wc in wcs.iter().take(n) {
                out.push(Wc::from_raw(wc));
            }
            total += n;
            if n < want as usize {
                break;
            }
        }
        Ok(total)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        self.ack_events();
    }
}

/// What a completion was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcOpcode {
    Send,
    RdmaWrite,
    RdmaRead,
    Recv,
    Other(u32),
}

/// One work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wc {
    pub wr_id: u64,
    /// Ok, or what failed (flushes after a disconnect are [`CompletionError::Flushed`]).
    pub status: Result<(), CompletionError>,
    /// The raw ibv_wc_status (for logs).
    pub raw_status: u32,
    /// Valid only when the status is Ok (on error completions the opcode is undefined).
    pub opcode: WcOpcode,
    pub byte_len: u32,
    /// A receive of a Send-With-Invalidate: the key the peer invalidated (a memory
    /// window of ours, see [`CmId::post_bind_mw`]). May be set for other receives on
    /// rxe (see `from_raw`): trust it only when it matches a key handed out.
    pub invalidated_rkey: Option<u32>,
}

impl Wc {
    fn from_raw(wc: &sys::ibv_wc) -> Wc {
        use sys::ibv_wc_opcode as op;
        use sys::ibv_wc_status as st;
        let status = match wc.status {
            st::IBV_WC_SUCCESS => Ok(()),
            st::IBV_WC_WR_FLUSH_ERR => Err(CompletionError::Flushed),
            st::IBV_WC_LOC_LEN_ERR => Err(CompletionError::LocalLength),
            st::IBV_WC_LOC_PROT_ERR | st::IBV_WC_LOC_ACCESS_ERR => Err(CompletionError::LocalProtection),
            st::IBV_WC_REM_ACCESS_ERR | st::IBV_WC_REM_INV_REQ_ERR | st::IBV_WC_REM_OP_ERR => {
                Err(CompletionError::RemoteAccess)
            }
            st::IBV_WC_RNR_RETRY_EXC_ERR => Err(CompletionError::RnrRetryExceeded),
            _ => Err(CompletionError::RetryExceeded),
        };
        let opcode = match wc.opcode {
            op::IBV_WC_SEND => WcOpcode::Send,
            op::IBV_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            op::IBV_WC_RDMA_READ => WcOpcode::RdmaRead,
            op::IBV_WC_RECV => WcOpcode::Recv,
            o => WcOpcode::Other(o),
        };
        // rxe (Linux 6.1) copies the kernel's IB_WC_WITH_INVALIDATE (1 << 2) into the user
        // completion, where libibverbs calls that bit IBV_WC_IP_CSUM_OK (meaningless on an
        // RC receive); IBV_WC_WITH_INV (1 << 3) is what other devices set. Either bit
        // yields the key, which the consumer must match against keys it handed out.
        let inv = sys::ibv_wc_flags::IBV_WC_WITH_INV.0 | sys::ibv_wc_flags::IBV_WC_IP_CSUM_OK.0;
        let invalidated_rkey = (status.is_ok() && wc.opcode == op::IBV_WC_RECV && wc.wc_flags & inv != 0)
            // SAFETY: the union is a plain u32 (the invalidated key with those flags).
            .then_some(unsafe { wc.imm_data_invalidated_rkey_union.invalidated_rkey });
        Wc { wr_id: wc.wr_id, status, raw_status: wc.status, opcode, byte_len: wc.byte_len, invalidated_rkey }
    }
}

// ---------------------------------------------------------------------------------
// rdma_cm event channel and identifiers

#[derive(Debug)]
struct ChannelInner {
    ch: NonNull<sys::rdma_event_channel>,
}

// SAFETY: librdmacm objects are thread-safe; owned pointer.
unsafe impl Send for ChannelInner {}
// SAFETY: as above.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: created by rdma_create_event_channel; every id on it holds an Arc to
        // it, so none is left.
        unsafe { sys::rdma_destroy_event_channel(self.ch.as_ptr()) };
    }
}

/// The rdma_cm event channel: a non-blocking fd readable when connection events wait.
#[derive(Debug, Clone)]
pub struct EventChannel(Arc<ChannelInner>);

/// Names the rdma_cm identifier an event concerns (compare with [`CmId::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CmKey(usize);

/// Connection parameters of a request or of an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnParam {
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

/// What happened.
#[derive(Debug)]
pub enum CmEventKind {
    /// A peer asks to connect to a listening id; the new id is handed over.
    ConnectRequest { id: CmId, param: ConnParam },
    AddrResolved,
    RouteResolved,
    Established { param: ConnParam },
    Disconnected,
    /// The peer refused (or nobody listens: port unreachable).
    Rejected,
    /// Address, route or connection error, unreachable peer.
    Error,
    /// The device went away: every id on it must be destroyed.
    DeviceRemoval,
    TimewaitExit,
    Other(u32),
}

#[derive(Debug)]
pub struct CmEvent {
    /// The id the event concerns (for a connect request: the listening id).
    pub key: CmKey,
    pub kind: CmEventKind,
    pub status: i32,
}

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: no arguments; returns an owned channel or null.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch).ok_or_else(last_err)?;
        let c = EventChannel(Arc::new(ChannelInner { ch }));
        set_nonblocking(c.raw_fd())?;
        Ok(c)
    }
    fn raw_fd(&self) -> RawFd {
        // SAFETY: valid channel; fd immutable.
        unsafe { (*self.0.ch.as_ptr()).fd }
    }
    /// The fd to wait on (readable = call [`EventChannel::get_event`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open as long as the channel lives.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// A new identifier on this channel (RDMA_PS_TCP, reliable connected).
    pub fn create_id(&self) -> io::Result<CmId> {
        let mut id: *mut sys::rdma_cm_id = ptr::null_mut();
        // SAFETY: valid channel, valid out-pointer.
        check(unsafe {
            sys::rdma_create_id(self.0.ch.as_ptr(), &mut id, ptr::null_mut(), sys::rdma_port_space::RDMA_PS_TCP)
        })?;
        let id = NonNull::new(id).ok_or_else(|| io::Error::other("rdma_create_id returned null"))?;
        Ok(CmId::wrap(id, self.clone()))
    }

    /// Binds a new id to `addr` and listens. The unspecified address listens on every
    /// RDMA device.
    pub fn listen(&self, addr: SocketAddr, backlog: i32) -> io::Result<CmId> {
        let id = self.create_id()?;
        let mut ss = std_to_sockaddr(&addr);
        // SAFETY: valid id; the sockaddr lives across the call.
        check(unsafe { sys::rdma_bind_addr(id.raw(), (&mut ss as *mut libc::sockaddr_storage).cast()) })?;
        // SAFETY: valid bound id.
        check(unsafe { sys::rdma_listen(id.raw(), backlog) })?;
        Ok(id)
    }

    /// Takes one event (copied out and acknowledged at once), or None when none waits.
    pub fn get_event(&self) -> io::Result<Option<CmEvent>> {
        let mut ev: *mut sys::rdma_cm_event = ptr::null_mut();
        // SAFETY: valid channel (non-blocking), valid out-pointer.
        if unsafe { sys::rdma_get_cm_event(self.0.ch.as_ptr(), &mut ev) } != 0 {
            let e = last_err();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        // SAFETY: on success `ev` points to an event owned by librdmacm until acked.
        let (kind, id, listen_id, status, param) = unsafe {
            let e = &*ev;
            let conn = e.param.conn;
            (
                e.event,
                e.id,
                e.listen_id,
                e.status,
                ConnParam { responder_resources: conn.responder_resources, initiator_depth: conn.initiator_depth },
            )
        };
        // Everything needed is copied; the connect request's new id stays valid after
        // the ack (it is ours to destroy).
        // SAFETY: acked exactly once.
        unsafe { sys::rdma_ack_cm_event(ev) };
        use sys::rdma_cm_event_type as t;
        let key = CmKey(if kind == t::RDMA_CM_EVENT_CONNECT_REQUEST { listen_id } else { id } as usize);
        let kind = match kind {
            t::RDMA_CM_EVENT_CONNECT_REQUEST => match NonNull::new(id) {
                Some(nid) => CmEventKind::ConnectRequest { id: CmId::wrap(nid, self.clone()), param },
                None => CmEventKind::Error,
            },
            t::RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            t::RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            t::RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established { param },
            t::RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            t::RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            t::RDMA_CM_EVENT_ADDR_ERROR
            | t::RDMA_CM_EVENT_ROUTE_ERROR
            | t::RDMA_CM_EVENT_CONNECT_ERROR
            | t::RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Error,
            t::RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            t::RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            o => CmEventKind::Other(o),
        };
        Ok(Some(CmEvent { key, kind, status }))
    }
}

/// Sizes of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
}

#[derive(Debug)]
struct Qp {
    _pd: Pd,
    _cq: Arc<CqInner>,
}

/// One rdma_cm identifier: a listener, or a connection with its RC queue pair.
#[derive(Debug)]
pub struct CmId {
    id: NonNull<sys::rdma_cm_id>,
    qp: Option<Qp>,
    _channel: EventChannel,
}

// SAFETY: librdmacm ids are usable from any thread; owned pointer.
unsafe impl Send for CmId {}

/// RDMA READ or WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaOp {
    /// Pull remote memory into the local entries.
    Read,
    /// Push the local entries into remote memory.
    Write,
}

impl CmId {
    fn wrap(id: NonNull<sys::rdma_cm_id>, channel: EventChannel) -> CmId {
        CmId { id, qp: None, _channel: channel }
    }
    fn raw(&self) -> *mut sys::rdma_cm_id {
        self.id.as_ptr()
    }
    pub fn key(&self) -> CmKey {
        CmKey(self.id.as_ptr() as usize)
    }

    /// The device this id is bound to (None for a wildcard listener).
    pub fn context(&self) -> Option<Context> {
        // SAFETY: valid id; `verbs` is set by the library once bound to a device.
        NonNull::new(unsafe { (*self.raw()).verbs }).map(Context)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: valid id; the route's address union lives inside it.
        sockaddr_to_std(unsafe { ptr::addr_of!((*self.raw()).route.addr.src_addr_union.src_addr) })
    }
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as above.
        sockaddr_to_std(unsafe { ptr::addr_of!((*self.raw()).route.addr.dst_addr_union.dst_addr) })
    }

    /// Creates this id's RC queue pair on `pd`, with `cq` for both sends and receives.
    /// Completions are signalled per work request (each post says whether).
    pub fn create_qp(&mut self, pd: &Pd, cq: &Cq, caps: QpCaps) -> io::Result<()> {
        if self.qp.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "queue pair exists"));
        }
        // SAFETY: plain old data; zero is valid for every field.
        let mut attr: sys::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.inner.cq.as_ptr();
        attr.recv_cq = cq.inner.cq.as_ptr();
        attr.qp_type = sys::ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0;
        attr.cap.max_send_wr = caps.max_send_wr;
        attr.cap.max_recv_wr = caps.max_recv_wr;
        attr.cap.max_send_sge = caps.max_send_sge;
        attr.cap.max_recv_sge = caps.max_recv_sge;
        // SAFETY: valid id, PD and CQ of the id's device; attr lives across the call.
        check(unsafe { sys::rdma_create_qp(self.raw(), pd.0.pd.as_ptr(), &mut attr) })?;
        self.qp = Some(Qp { _pd: pd.clone(), _cq: cq.inner.clone() });
        Ok(())
    }

    fn qp(&self) -> io::Result<*mut sys::ibv_qp> {
        if self.qp.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no queue pair"));
        }
        // SAFETY: valid id; `qp` was set by rdma_create_qp.
        let qp = unsafe { (*self.raw()).qp };
        if qp.is_null() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no queue pair"));
        }
        Ok(qp)
    }

    /// Accepts a connect request (post receives first). `param` should be the
    /// request's values bounded by the device's (see [`bounded_param`]).
    pub fn accept(&self, param: ConnParam, rnr_retry: u8) -> io::Result<()> {
        // SAFETY: plain old data; zero is valid.
        let mut p: sys::rdma_conn_param = unsafe { std::mem::zeroed() };
        p.responder_resources = param.responder_resources;
        p.initiator_depth = param.initiator_depth;
        p.flow_control = 1;
        p.retry_count = 7;
        p.rnr_retry_count = rnr_retry.min(7);
        // SAFETY: valid id with a queue pair; p lives across the call.
        check(unsafe { sys::rdma_accept(self.raw(), &mut p) })
    }

    pub fn reject(&self) -> io::Result<()> {
        // SAFETY: valid id; no private data.
        check(unsafe { sys::rdma_reject(self.raw(), ptr::null(), 0) })
    }

    /// Starts tearing the connection down (a Disconnected event follows; posted work
    /// requests are flushed).
    pub fn disconnect(&self) -> io::Result<()> {
        // SAFETY: valid id.
        check(unsafe { sys::rdma_disconnect(self.raw()) })
    }

    /// Client role, step 1: resolve `dst` (an AddrResolved event follows).
    pub fn resolve_addr(&self, dst: SocketAddr, timeout_ms: i32) -> io::Result<()> {
        let mut ss = std_to_sockaddr(&dst);
        // SAFETY: valid id; the sockaddr lives across the call; no source address.
        check(unsafe {
            sys::rdma_resolve_addr(self.raw(), ptr::null_mut(), (&mut ss as *mut libc::sockaddr_storage).cast(), timeout_ms)
        })
    }
    /// Client role, step 2 (a RouteResolved event follows).
    pub fn resolve_route(&self, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: valid id with a resolved address.
        check(unsafe { sys::rdma_resolve_route(self.raw(), timeout_ms) })
    }
    /// Client role, step 3, after creating the queue pair and posting receives (an
    /// Established event follows).
    pub fn connect(&self, param: ConnParam, rnr_retry: u8) -> io::Result<()> {
        // SAFETY: plain old data; zero is valid.
        let mut p: sys::rdma_conn_param = unsafe { std::mem::zeroed() };
        p.responder_resources = param.responder_resources;
        p.initiator_depth = param.initiator_depth;
        p.flow_control = 1;
        p.retry_count = 7;
        p.rnr_retry_count = rnr_retry.min(7);
        // SAFETY: valid id with a queue pair; p lives across the call.
        check(unsafe { sys::rdma_connect(self.raw(), &mut p) })
    }

    /// Posts one receive into `sge`.
    pub fn post_recv(&self, wr_id: u64, sge: Sge) -> io::Result<()> {
        let qp = self.qp()?;
        let mut s = sge.raw();
        let mut wr = sys::ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: &mut s, num_sge: 1 };
        let mut bad: *mut sys::ibv_recv_wr = ptr::null_mut();
        // SAFETY: valid QP; `wr` and `s` live across the call (the library copies them);
        // the memory is registered (the device checks the lkey and range).
        check(unsafe { sys::ibv_post_recv(qp, &mut wr, &mut bad) })
    }

    /// Posts a signalled SEND of `sge`, as SEND_WITH_INV of `invalidate` when given.
    pub fn post_send(&self, wr_id: u64, sge: Sge, invalidate: Option<u32>) -> io::Result<()> {
        let qp = self.qp()?;
        let mut s = sge.raw();
        // SAFETY: plain old data (pointers null, unions zero): valid.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut s;
        wr.num_sge = 1;
        wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        match invalidate {
            Some(rkey) => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND_WITH_INV;
                wr.imm_data_invalidated_rkey_union.invalidated_rkey = rkey;
            }
            None => wr.opcode = sys::ibv_wr_opcode::IBV_WR_SEND,
        }
        let mut bad: *mut sys::ibv_send_wr = ptr::null_mut();
        // SAFETY: valid QP; `wr` and `s` live across the call.
        check(unsafe { sys::ibv_post_send(qp, &mut wr, &mut bad) })
    }

    /// Posts an unsignalled bind of the type 2 window `mw` to all of `mr` (registered with
    /// [`BufferMr::new_bindable`], in this QP's PD) with the remote rights of `remote`,
    /// under a new key, which is returned (and kept in `mw`). Work requests posted later
    /// on this QP (the request naming the key) execute after the bind. Errors surface as a
    /// failed completion with `wr_id`. The window must be free (never bound, or
    /// invalidated, or freshly allocated).
    pub fn post_bind_mw(&self, wr_id: u64, mw: &mut Mw, mr: &BufferMr, remote: Access) -> io::Result<u32> {
        let qp = self.qp()?;
        let region = mr.mr.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region not registered"))?;
        // SAFETY: pure arithmetic on the key.
        let rkey = unsafe { sys::ibv_inc_rkey(mw.rkey) };
        let mut bits = 0u32;
        if remote.remote_read {
            bits |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
        }
        if remote.remote_write {
            bits |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        // SAFETY: plain old data (pointers null, unions zero): valid.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.opcode = sys::ibv_wr_opcode::IBV_WR_BIND_MW;
        wr.send_flags = 0;
        wr.bind_mw_tso_union.bind_mw = sys::bind_mw_t {
            mw: mw.mw.as_ptr(),
            rkey,
            bind_info: sys::ibv_mw_bind_info {
                mr: region.0.mr.as_ptr(),
                addr: region.addr(),
                length: region.len() as u64,
                mw_access_flags: bits,
            },
        };
        let mut bad: *mut sys::ibv_send_wr = ptr::null_mut();
        // SAFETY: valid QP, window and region (both kept alive by the caller until the
        // window is dropped, before the region); `wr` lives across the call.
        check(unsafe { sys::ibv_post_send(qp, &mut wr, &mut bad) })?;
        mw.rkey = rkey;
        // The library does not update the window's own key for a type 2 bind posted as a
        // work request, and rxe checks the next bind's "current key" (taken from that
        // struct) against the device's: without this, rebinding a window (after the peer
        // invalidated it) fails with a bind error that breaks the queue pair.
        // SAFETY: valid window owned by `mw`; rkey is plain data the provider reads when
        // the next bind is posted.
        unsafe { (*mw.mw.as_ptr()).rkey = rkey };
        Ok(rkey)
    }

    /// Posts a signalled RDMA READ or WRITE between `local` (at most the QP's send SGE
    /// count) and the peer's memory at `remote_addr` under `rkey`.
    pub fn post_rdma(&self, wr_id: u64, op: RdmaOp, local: &[Sge], remote_addr: u64, rkey: u32) -> io::Result<()> {
        let qp = self.qp()?;
        if local.is_empty() || local.len() > 16 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "1 to 16 scatter/gather entries"));
        }
        let mut sges = [sys::ibv_sge { addr: 0, length: 0, lkey: 0 }; 16];
        for (d, s) in sges.iter_mut().zip(local) {
            *d = s.raw();
        }
        // SAFETY: plain old data: valid.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = sges.as_mut_ptr();
        wr.num_sge = local.len() as i32;
        wr.send_flags = sys::ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.opcode = match op {
            RdmaOp::Read => sys::ibv_wr_opcode::IBV_WR_RDMA_READ,
            RdmaOp::Write => sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
        };
        wr.wr.rdma = sys::rdma_t { remote_addr, rkey };
        let mut bad: *mut sys::ibv_send_wr = ptr::null_mut();
        // SAFETY: valid QP; `wr` and `sges` live across the call.
        check(unsafe { sys::ibv_post_send(qp, &mut wr, &mut bad) })
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        if self.qp.take().is_some() {
            // SAFETY: the QP was created by rdma_create_qp on this id; destroyed once,
            // before the id. Its PD and CQ are still alive (dropped after this call,
            // as the Arcs in the taken Qp go at the end of this block).
            unsafe { sys::rdma_destroy_qp(self.raw()) };
        }
        // SAFETY: created by rdma_create_id (or handed over by a connect request) and
        // destroyed once; all its events were acknowledged when taken.
        let r = unsafe { sys::rdma_destroy_id(self.raw()) };
        if r != 0 {
            tracing::warn!(r, "rdma_destroy_id failed");
        }
    }
}

/// The accept parameters: the connect request's values bounded by the device. The
/// CM reports a request's values already from our side (its responder resources are
/// the peer's initiator depth: RDMA READs the peer may have outstanding against us;
/// its initiator depth is the peer's responder resources: READs we may issue), so
/// each is capped by the matching device attribute, and our initiator depth also by
/// `max_initiator_depth` (ksmbd uses 8).
pub fn bounded_param(req: ConnParam, dev: &DeviceAttr, max_initiator_depth: u8) -> ConnParam {
    let cap = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
    ConnParam {
        responder_resources: req.responder_resources.min(cap(dev.max_qp_rd_atom)),
        initiator_depth: req.initiator_depth.min(cap(dev.max_qp_init_rd_atom)).min(max_initiator_depth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_param_takes_the_smallest() {
        let dev = DeviceAttr {
            max_qp_wr: 1024,
            max_sge: 32,
            max_cqe: 4096,
            max_mr_size: u64::MAX,
            max_qp_rd_atom: 128,
            max_qp_init_rd_atom: 4,
        };
        // cifs: responder resources 32 on its side = our initiator depth.
        let p = bounded_param(ConnParam { responder_resources: 0, initiator_depth: 32 }, &dev, 8);
        assert_eq!(p, ConnParam { responder_resources: 0, initiator_depth: 4 });
        let p = bounded_param(ConnParam { responder_resources: 255, initiator_depth: 2 }, &dev, 8);
        assert_eq!(p, ConnParam { responder_resources: 128, initiator_depth: 2 });
        let big = DeviceAttr { max_qp_init_rd_atom: 128, ..dev };
        let p = bounded_param(ConnParam { responder_resources: 1, initiator_depth: 32 }, &big, 8);
        assert_eq!(p, ConnParam { responder_resources: 1, initiator_depth: 8 });
    }

    #[test]
    fn sockaddr_round_trip() {
        for a in ["10.9.0.1:445", "[fe80::1%2]:5445"] {
            let a: SocketAddr = a.parse().unwrap();
            let ss = std_to_sockaddr(&a);
            let back = sockaddr_to_std((&ss as *const libc::sockaddr_storage).cast());
            assert_eq!(back, Some(a));
        }
    }
}
