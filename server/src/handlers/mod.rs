//! One file per group of SMB2 commands; each handler parses its request,
//! acts, and appends the response body, or returns the NT status to answer.

pub mod create;
pub mod dir;
pub mod durable;
pub mod file;
pub mod info;
pub mod ioctl;
pub mod lease;
pub mod lock;
pub mod notify;
pub mod oplock;
pub mod rdma_io;
pub mod streams;
pub mod tree;

use crate::wire::header::Command;
use crate::wire::u32_at;

/// The payload size a request moves, for the credit charge check.
pub fn payload_size(cmd: Command, msg: &[u8]) -> u64 {
    let b = crate::wire::header::HEADER_LEN;
    let v = match cmd {
        Command::Read => u32_at(msg, b + 4).unwrap_or(0),
        Command::Write => u32_at(msg, b + 4).unwrap_or(0),
        Command::QueryDirectory => u32_at(msg, b + 28).unwrap_or(0),
        Command::QueryInfo => u32_at(msg, b + 4).unwrap_or(0),
        Command::SetInfo => u32_at(msg, b + 4).unwrap_or(0),
        Command::Ioctl => {
            let input = u32_at(msg, b + 28).unwrap_or(0);
            let max_out = u32_at(msg, b + 44).unwrap_or(0);
            input.max(max_out)
        }
        Command::ChangeNotify => u32_at(msg, b + 4).unwrap_or(0),
        _ => 0,
    };
    u64::from(v)
}

pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_WRITE_DATA: u32 = 0x2;
pub const FILE_APPEND_DATA: u32 = 0x4;
pub const FILE_READ_EA: u32 = 0x8;
pub const FILE_WRITE_EA: u32 = 0x10;
pub const FILE_EXECUTE: u32 = 0x20;
pub const FILE_DELETE_CHILD: u32 = 0x40;
pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
pub const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
pub const DELETE: u32 = 0x10000;
pub const READ_CONTROL: u32 = 0x20000;
pub const WRITE_DAC: u32 = 0x40000;
pub const WRITE_OWNER: u32 = 0x80000;
pub const SYNCHRONIZE: u32 = 0x100000;
pub const ACCESS_SYSTEM_SECURITY: u32 = 0x0100_0000;
pub const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
pub const GENERIC_WRITE: u32 = 0x4000_0000;
pub const GENERIC_READ: u32 = 0x8000_0000;
pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
pub const FILE_GENERIC_READ: u32 = 0x0012_0089;
pub const FILE_GENERIC_WRITE: u32 = 0x0012_0116;
pub const FILE_GENERIC_EXECUTE: u32 = 0x0012_00A0;
/// What a read-only share grants at most.
pub const READ_ONLY_ACCESS: u32 = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE;
pub const WRITE_ACCESS_BITS: u32 = FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES | DELETE | WRITE_DAC | WRITE_OWNER | FILE_DELETE_CHILD;

/// Maps GENERIC_* bits to specific rights (MS-SMB2 3.3.5.9 / MS-FSA).
pub fn map_generic(mut a: u32) -> u32 {
    if a & GENERIC_READ != 0 {
        a |= FILE_GENERIC_READ;
    }
    if a & GENERIC_WRITE != 0 {
        a |= FILE_GENERIC_WRITE;
    }
    if a & GENERIC_EXECUTE != 0 {
        a |= FILE_GENERIC_EXECUTE;
    }
    if a & GENERIC_ALL != 0 {
        a |= FILE_ALL_ACCESS;
    }
    a & !(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL)
}
