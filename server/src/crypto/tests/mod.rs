//! Tests of the crypto module: Microsoft's published vectors (`vectors`), reference outputs of
//! the smbprotocol package (`reference`), edge cases (`edges`), property tests (`props`), our
//! one-pass AES-GCM against `aes_gcm` (`gcm`) and an
//! ignored throughput measurement (`throughput`).

mod edges;
mod gcm;
mod props;
mod reference;
mod throughput;
mod vectors;

/// Hex to bytes, ignoring whitespace.
fn hx(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    hex::decode(clean).expect("test hex literal")
}

/// 52 reserved bytes followed by `msg`, as the caller of `Sealer::seal` lays a buffer out.
fn with_reserved_header(msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; super::TRANSFORM_HEADER_LEN];
    buf.extend_from_slice(msg);
    buf
}
