//! SMB Direct (MS-SMBD) protocol core and transport framing.
//!
//! The SMB Direct state machine lands with issue 4; for now this crate holds the
//! Direct TCP framing that the SMB2 server uses (MS-SMB2 2.1).

pub mod tcp;
