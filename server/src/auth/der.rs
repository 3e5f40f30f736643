//! The small DER subset SPNEGO needs: single-byte tags, definite lengths of at most four
//! length bytes, every length checked against what is left of the input.

use super::AuthError;

/// One tag-length-value element borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    /// The value bytes.
    pub content: &'a [u8],
    /// The whole element: tag, length and value, exactly as received.
    pub raw: &'a [u8],
}

pub(crate) const TAG_ENUMERATED: u8 = 0x0a;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_GENERAL_STRING: u8 = 0x1b;
pub(crate) const TAG_APPLICATION_0: u8 = 0x60;

/// Context-specific constructed tag `[n]`.
pub(crate) const fn ctx(n: u8) -> u8 {
    0xa0 | n
}

fn bad(what: &'static str) -> AuthError {
    AuthError::InvalidParameter(what)
}

/// Reads one element from the front of `input`; returns it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), AuthError> {
    let (&tag, rest) = input.split_first().ok_or(bad("DER: missing tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(bad("DER: multi-byte tag"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(bad("DER: missing length"))?;
    let len: usize = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err(bad("DER: indefinite length"));
        }
        if n > 4 {
            return Err(bad("DER: length too long"));
        }
        let (len_bytes, after) = rest
            .split_at_checked(n)
            .ok_or(bad("DER: truncated length"))?;
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let header_len = input.len() - rest.len();
    let (content, after) = rest
        .split_at_checked(len)
        .ok_or(bad("DER: length beyond end of token"))?;
    let raw = input
        .get(..header_len + len)
        .ok_or(bad("DER: length beyond end of token"))?;
    Ok((Tlv { tag, content, raw }, after))
}

/// Reads one element that must carry `tag`.
pub(crate) fn expect_tlv(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), AuthError> {
    let (tlv, rest) = read_tlv(input)?;
    if tlv.tag != tag {
        return Err(bad("DER: unexpected tag"));
    }
    Ok((tlv, rest))
}

/// Reads an element that must be the only thing in `input` and must carry `tag`.
pub(crate) fn expect_only(input: &[u8], tag: u8) -> Result<Tlv<'_>, AuthError> {
    let (tlv, rest) = expect_tlv(input, tag)?;
    if !rest.is_empty() {
        return Err(bad("DER: trailing bytes"));
    }
    Ok(tlv)
}

/// Appends a DER element with the minimal length encoding.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// Builds a DER element into a fresh vector.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    write_tlv(&mut out, tag, content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_forms_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 70000] {
            let content = vec![0xab; len];
            let enc = tlv(TAG_OCTET_STRING, &content);
            let (t, rest) = read_tlv(&enc).unwrap();
            assert!(rest.is_empty());
            assert_eq!(t.tag, TAG_OCTET_STRING);
            assert_eq!(t.content.len(), len);
            assert_eq!(t.raw, &enc[..]);
        }
        assert_eq!(tlv(4, &[0; 128])[..3], [4, 0x81, 0x80]);
        assert_eq!(tlv(4, &[0; 256])[..4], [4, 0x82, 1, 0]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(read_tlv(&[]).is_err());
        assert!(read_tlv(&[0x30]).is_err());
        assert!(read_tlv(&[0x30, 0x80, 0, 0]).is_err());
        assert!(read_tlv(&[0x30, 0x85, 0, 0, 0, 0, 1, 0]).is_err());
        assert!(read_tlv(&[0x30, 0x82, 0x01]).is_err());
        assert!(read_tlv(&[0x30, 0x03, 1, 2]).is_err());
        assert!(read_tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(read_tlv(&[0x1f, 0x01, 0]).is_err());
        assert!(expect_only(&[0x04, 0x01, 0, 0], 0x04).is_err());
        assert!(expect_only(&[0x04, 0x01, 0], 0x30).is_err());
    }
}
