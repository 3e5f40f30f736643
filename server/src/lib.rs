pub mod crypto;
pub mod auth;
