//! SMB Direct (MS-SMBD) protocol core and transport framing.
//!
//! - [`wire`]: MS-SMBD packet codecs.
//! - [`tcp`]: Direct TCP framing used by the SMB2 server (MS-SMB2 2.1).

pub mod tcp;
pub mod wire;
pub mod fabric;
#[doc(hidden)]
pub mod fuzz;
pub mod smbd;

pub use smbd::{Action, Config, Connection, Event, Role};
