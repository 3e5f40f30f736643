//! The little the proxy reads of SMB2 itself: the ClientGUID of the first NEGOTIATE,
//! for routing a channel to a worker (see RDMA-DESIGN.md, ChannelOffer).

/// SMB2 header length.
const SMB2_HEADER_LEN: usize = 64;
/// ClientGuid's offset in an SMB2 NEGOTIATE request (header, then StructureSize,
/// DialectCount, SecurityMode, Reserved, Capabilities).
const CLIENT_GUID_OFFSET: usize = SMB2_HEADER_LEN + 12;

/// The ClientGUID of an SMB2 NEGOTIATE request, or zero for anything else (an SMB1
/// NEGOTIATE asking for the upgrade, a truncated or foreign message).
pub fn client_guid(msg: &[u8]) -> [u8; 16] {
    let mut guid = [0u8; 16];
    let is_negotiate = msg.get(..4) == Some(b"\xfeSMB") && msg.get(12..14) == Some(&[0, 0]);
    if is_negotiate {
        if let Some(g) = msg.get(CLIENT_GUID_OFFSET..CLIENT_GUID_OFFSET + 16) {
            guid.copy_from_slice(g);
        }
    }
    guid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_of_a_negotiate() {
        let mut m = vec![0u8; 120];
        m[..4].copy_from_slice(b"\xfeSMB");
        m[4] = 64;
        m[64] = 36;
        for (i, b) in m[76..92].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let g = client_guid(&m);
        assert_eq!(g[0], 1);
        assert_eq!(g[15], 16);
        // Another command: no GUID.
        m[12] = 1;
        assert_eq!(client_guid(&m), [0; 16]);
        // SMB1 and truncated input: zero, no panic.
        assert_eq!(client_guid(b"\xffSMBr"), [0; 16]);
        assert_eq!(client_guid(&[]), [0; 16]);
        let mut short = m[..80].to_vec();
        short[12] = 0;
        assert_eq!(client_guid(&short), [0; 16]);
    }
}
