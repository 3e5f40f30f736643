//! Microsoft's published test vectors.
//!
//! Sources (the hex below is as published there; it is also carried verbatim by the Pike test
//! suite, `pike/test/crypto.py` of emc-isilon/pike, "test vectors from Microsoft
//! openspecification group"):
//! - "SMB 3.1.1 Pre-authentication integrity in Windows 10" (Open Specifications blog,
//!   2015-08-11): the preauth hash chain and the resulting 3.1.1 signing key.
//! - "Encryption in SMB 3.0: A protocol perspective" (2012-10-05): 3.0 keys, AES-128-CCM
//!   encryption of a WRITE request and decryption of its response.
//! - "SMB 3.1.1 Encryption in Windows 10" (2015-09-09): 3.1.1 keys, AES-128-GCM encryption of a
//!   WRITE request and decryption of its response.
//! - "SMB 2 and SMB 3 security in Windows 10: the anatomy of signing and cryptographic keys"
//!   (2017-05-26): an SMB 3.0 signing key.

use super::super::*;
use super::{hx, with_reserved_header};

#[test]
fn preauth_hash_chain_and_311_signing_key() {
    let steps: [(&str, &str); 5] = [
        (
            // NEGOTIATE request
            "FE534D4240000100000000000000800000000000000000000100000000000000FFFE000000000000
             00000000000000000000000000000000000000000000000024000500000000003F000000ECD86F32
             6276024F9F7752B89BB33F3A70000000020000000202100200030203110300000100260000000000
             010020000100FA49E6578F1F3A9F4CD3E9CC14A67AA884B3D05844E0E5A118225C15887F32FF0000
             0200060000000000020002000100",
            "DD94EFC5321BB618A2E208BA8920D2F422992526947A409B5037DE1E0FE8C7362B8C47122594CDE0
             CE26AA9DFC8BCDBDE0621957672623351A7540F1E54A0426",
        ),
        (
            // NEGOTIATE response
            "FE534D4240000100000000000000010001000000000000000100000000000000FFFE000000000000
             000000000000000000000000000000000000000000000000410001001103020039CBCAF329714942
             BDCE5D60F09AB3FB2F000000000080000000800000008000D8DAE5ADCBAED00109094AB095AED001
             80004001C00100006082013C06062B0601050502A08201303082012CA01A3018060A2B0601040182
             3702021E060A2B06010401823702020AA282010C048201084E45474F455854530100000000000000
             60000000700000007C7CC0FD06D6362D02DDE1CF343BFE292900F49750B4AA97934D9C4296B26E51
             FD370471B235E15A50DAE15BD5489C87000000000000000060000000010000000000000000000000
             5C33530DEAF90D4DB2EC4AE3786EC3084E45474F4558545303000000010000004000000098000000
             7C7CC0FD06D6362D02DDE1CF343BFE295C33530DEAF90D4DB2EC4AE3786EC3084000000058000000
             3056A05430523027802530233121301F06035504031318546F6B656E205369676E696E6720507562
             6C6963204B65793027802530233121301F06035504031318546F6B656E205369676E696E67205075
             626C6963204B6579010026000000000001002000010060A3C3B95C3C7CCD51EC536648D9B3AC74C4
             83CA5B65385A251117BEB30712E50000020004000000000001000200",
            "324BFA92A4F3A190E466EBEA08D9C110DC88BFED758D9846ECC6F541CC1D02AE3C94A79F36011E99
             7E13F841B91B50957AD07B19C8E2539C0B23FDAE09D2C513",
        ),
        (
            // SESSION_SETUP request 1
            "FE534D4240000100000000000100800000000000000000000200000000000000FFFE000000000000
             00000000000000000000000000000000000000000000000019000001010000000000000058004A00
             0000000000000000604806062B0601050502A03E303CA00E300C060A2B06010401823702020AA22A
             04284E544C4D5353500001000000978208E200000000000000000000000000000000060380250000
             000F",
            "AC0B0F2B9986257700365E416D142A6EDC96DF03594A19E52A15F6BD0D041CD5D432F8ED42C55E33
             197A50C9EC00F1462B50C592211B1471A04B56088FDFD5F9",
        ),
        (
            // SESSION_SETUP response 1 (STATUS_MORE_PROCESSING_REQUIRED)
            "FE534D4240000100160000C00100010001000000000000000200000000000000FFFE000000000000
             190000000010000000000000000000000000000000000000090000004800B300A181B03081ADA003
             0A0101A10C060A2B06010401823702020AA281970481944E544C4D53535000020000000C000C0038
             00000015828AE20D1D8BA31179D008000000000000000050005000440000000A0092270000000F53
             005500540033003100310002000C0053005500540033003100310001000C00530055005400330031
             00310004000C0053005500540033003100310003000C0053005500540033003100310007000800A1
             A1F5ADCBAED00100000000",
            "2729E3440DFDDD839E37193F6E8F20C20CEFB3469E453A70CD980EEC06B8835740A7376008563336
             4C8989895ECE81BF102DEEB14D4B7D48AFA76901A7A38387",
        ),
        (
            // SESSION_SETUP request 2
            "FE534D4240000100000000000100800000000000000000000300000000000000FFFE000000000000
             1900000000100000000000000000000000000000000000001900000101000000000000005800CF01
             0000000000000000A18201CB308201C7A0030A0101A28201AA048201A64E544C4D53535000030000
             001800180090000000EE00EE00A80000000C000C00580000001A001A0064000000120012007E0000
             001000100096010000158288E2060380250000000FECAC77A5F385A8BF9C38C706EEEDDCD3530055
             005400330031003100610064006D0069006E006900730074007200610074006F0072004400520049
             0056004500520033003100310000000000000000000000000000000000000000000000000063078E
             B639FE03E20A231C3AE3BF23080101000000000000A1A1F5ADCBAED001BC4AD05F223CC90F000000
             0002000C0053005500540033003100310001000C0053005500540033003100310004000C00530055
             00540033003100310003000C0053005500540033003100310007000800A1A1F5ADCBAED001060004
             00020000000800300030000000000000000000000000300000B61FEFCAA857EA57BF1EDCEBF8974B
             8E0EBA5A6DFD9D07A31D11B548F8C9D0CC0A00100000000000000000000000000000000000090016
             0063006900660073002F005300550054003300310031000000000000000000000000003B9BDFF38F
             5EE8F9663F11A0F4C03A78A31204100100000063775A9A5FD97F0600000000",
            "0DD13628CC3ED218EF9DF9772D436D0887AB9814BFAE63A80AA845F36909DB7928622DDDAD522D97
             51640A459762C5A9D6BB084CBB3CE6BDADEF5D5BCE3C6C01",
        ),
    ];
    let mut h = PreauthHash::new();
    assert_eq!(h.value(), [0u8; 64]);
    for (i, (msg, expected)) in steps.iter().enumerate() {
        h.update(&hx(msg));
        assert_eq!(
            h.value().to_vec(),
            hx(expected),
            "preauth hash after message {i}"
        );
    }
    let session_key = hx("270E1BA896585EEB7AF3472D3B4C75A7");
    let signing = derive_signing_key(Dialect::SMB3_1_1, &session_key, Some(&h.value()))
        .expect("3.1.1 signing key");
    assert_eq!(signing.as_bytes(), hx("73FE7A9A77BEF0BDE49C650D8CCB5F76"));
    // derive_session_keys agrees with derive_signing_key.
    let keys = derive_session_keys(Dialect::SMB3_1_1, &session_key, Some(&h.value()), None)
        .expect("3.1.1 keys");
    assert_eq!(keys.signing.as_bytes(), signing.as_bytes());
}

#[test]
fn smb30_signing_key_anatomy_blog() {
    let session_key = hx("7CD451825D0450D235424E44BA6E78CC");
    for dialect in [Dialect::SMB3_0, Dialect::SMB3_0_2] {
        let k = derive_signing_key(dialect, &session_key, None).expect("3.0 signing key");
        assert_eq!(k.as_bytes(), hx("0B7E9C5CAC36C0F6EA9AB275298CEDCE"));
    }
}

const SMB30_SESSION_KEY: &str = "B4546771B515F766A86735532DD6C4F0";
const SMB30_SESSION_ID: u64 = 0x0008_E400_1400_0011;

#[test]
fn smb30_keys() {
    let keys =
        derive_session_keys(Dialect::SMB3_0, &hx(SMB30_SESSION_KEY), None, None).expect("3.0 keys");
    // The client's EncryptionKey is the server's decryption key and vice versa.
    assert_eq!(
        keys.server_in.expect("server_in").as_bytes(),
        hx("261B72350558F2E9DCF613070383EDBF")
    );
    assert_eq!(
        keys.server_out.expect("server_out").as_bytes(),
        hx("8FE2B57EC34D2DB5B1A9727F526BBDB5")
    );
}

#[test]
fn smb30_ccm_client_write_request() {
    let keys = derive_session_keys(
        Dialect::SMB3_0,
        &hx(SMB30_SESSION_KEY),
        None,
        Some(Cipher::Aes128Ccm),
    )
    .expect("3.0 keys");
    let server_in = keys.server_in.expect("server_in");
    let plaintext = hx(
        "FE534D4240000100000000000900400008000000000000000400000000000000
                        FFFE0000010000001100001400E4080000000000000000000000000000000000
                        3100700017000000000000000000000015010000390000020100000039020000
                        00000000000000007000000000000000536D623320656E6372797074696F6E20
                        74657374696E67",
    );
    let expected = hx(
        "FD534D4281A286535415445DAE393921E44FA42E66E69A111892584FB5ED524A
                       744DA3EE87000000000001001100001400E4080025C8FEE16605A437832D1CD5
                       2DA9F4645333482A175FE5384563F45FCDAFAEF38BC62BA4D5C62897996625A4
                       4C29BE5658DE2E6117585779E7B59FFD971278D08580D7FA899E410E910EABF5
                       AA1DB43050B33B49182637759AC15D84BFCDF5B6B238993C0F4CF4D6012023F6
                       C627297075D84B7803912D0A9639634453595EF3E33FFE4E7AC2AB",
    );
    // The client encrypts with its EncryptionKey (our server_in): play the client.
    let nonce: [u8; 16] = hx("66E69A111892584FB5ED524A744DA3EE")
        .try_into()
        .expect("16");
    let sealer = Sealer::new(Cipher::Aes128Ccm, server_in.as_bytes()).expect("sealer");
    let mut buf = with_reserved_header(&plaintext);
    sealer
        .seal_with_nonce(&nonce, SMB30_SESSION_ID, &mut buf)
        .expect("seal");
    assert_eq!(buf, expected);
    // And the server opens it.
    let opener = Opener::new(Cipher::Aes128Ccm, server_in.as_bytes()).expect("opener");
    let (sid, range) = opener.open(&mut buf).expect("open");
    assert_eq!(sid, SMB30_SESSION_ID);
    assert_eq!(buf.get(range).expect("range"), &plaintext[..]);
}

#[test]
fn smb30_ccm_server_write_response() {
    let keys =
        derive_session_keys(Dialect::SMB3_0, &hx(SMB30_SESSION_KEY), None, None).expect("3.0 keys");
    let server_out = keys.server_out.expect("server_out");
    let transformed = hx(
        "FD534D42A6015530A18F6D9AFFE22AFAE8E66484860000000000000011000014
                          00E4080050000000000001001100001400E40800DBF46435C5F14169293CE079
                          E344479BF670227E49873F458672C3098DAC467DD5809F369D67409166515787
                          1483E01F7BECD02064EAC3E235F913668BBC2F097980D4B378F1993EFF6E60D1
                          77309E5B",
    );
    let plaintext = hx(
        "FE534D4240000100000000000900210009000000000000000400000000000000
                        FFFE0000010000001100001400E4080000000000000000000000000000000000
                        11000000170000000000000000000000",
    );
    let header = parse_transform_header(&transformed).expect("header");
    assert_eq!(header.session_id, SMB30_SESSION_ID);
    assert_eq!(header.original_message_size, 0x50);
    let opener = Opener::new(Cipher::Aes128Ccm, server_out.as_bytes()).expect("opener");
    let mut buf = transformed.clone();
    let (sid, range) = opener.open(&mut buf).expect("open");
    assert_eq!(sid, SMB30_SESSION_ID);
    assert_eq!(buf.get(range).expect("range"), &plaintext[..]);
    // Our server-side seal, given the same nonce, produces Windows' bytes exactly.
    let sealer = Sealer::new(Cipher::Aes128Ccm, server_out.as_bytes()).expect("sealer");
    let mut out = with_reserved_header(&plaintext);
    sealer
        .seal_with_nonce(&header.nonce, SMB30_SESSION_ID, &mut out)
        .expect("seal");
    assert_eq!(out, transformed);
}

const SMB311_SESSION_KEY: &str = "419FDDF34C1E001909D362AE7FB6AF79";
const SMB311_PREAUTH: &str = "B23F3CBFD69487D9832B79B1594A367CDD950909B774C3A4C412B4FCEA9EDDDB
                              A7DB256BA2EA30E977F11F9B113247578E0E915C6D2A513B8F2FCA5707DC8770";
const SMB311_SESSION_ID: u64 = 0x0000_1000_0000_0025;

fn smb311_keys() -> SessionKeys {
    let preauth: [u8; 64] = hx(SMB311_PREAUTH).try_into().expect("64");
    derive_session_keys(
        Dialect::SMB3_1_1,
        &hx(SMB311_SESSION_KEY),
        Some(&preauth),
        Some(Cipher::Aes128Gcm),
    )
    .expect("3.1.1 keys")
}

#[test]
fn smb311_keys_gcm() {
    let keys = smb311_keys();
    assert_eq!(
        keys.server_in.expect("server_in").as_bytes(),
        hx("A2F5E80E5D59103034F32E52F698E5EC")
    );
    assert_eq!(
        keys.server_out.expect("server_out").as_bytes(),
        hx("748C50868C90F302962A5C35F5F9A8BF")
    );
}

#[test]
fn smb311_gcm_client_write_request() {
    let server_in = smb311_keys().server_in.expect("server_in");
    let plaintext = hx("FE534D4240000100000000000900010008000000000000000500000000000000FFFE000001000000
                        25000000001000000000000000000000000000000000000031007000170000000000000000000000
                        0600000004000000010000000400000000000000000000007000000000000000536D623320656E63
                        72797074696F6E2074657374696E67");
    let expected = hx("FD534D42BD73D97D2BC9001BCAFAC0FDFF5FEEBCC7D6822D269CAF48904C664C0000000087000000
                       0000010025000000001000006ECDD2A7AFC7B47763057A041B8FD4DAFFE990B70C9E09D36C084E02
                       D14EF247F8BDE38ACF6256F8B1D3B56F77FBDEB312FEA5E92CBCC1ED8FB2EBBFAA75E49A4A394BB4
                       4576545567C24D4C014D47C9FBDFDAFD2C4F9B72F8D256452620A299F48E29E53D6B61D1C13A19E9
                       1AF013F00D17E3ABC2FC3D36C8C1B6B93973253852DBD442E46EE8");
    let nonce: [u8; 16] = hx("C7D6822D269CAF48904C664C00000000")
        .try_into()
        .expect("16");
    let sealer = Sealer::new(Cipher::Aes128Gcm, server_in.as_bytes()).expect("sealer");
    let mut buf = with_reserved_header(&plaintext);
    sealer
        .seal_with_nonce(&nonce, SMB311_SESSION_ID, &mut buf)
        .expect("seal");
    assert_eq!(buf, expected);
    let opener = Opener::new(Cipher::Aes128Gcm, server_in.as_bytes()).expect("opener");
    let (sid, range) = opener.open(&mut buf).expect("open");
    assert_eq!(sid, SMB311_SESSION_ID);
    assert_eq!(buf.get(range).expect("range"), &plaintext[..]);
}

#[test]
fn smb311_gcm_server_write_response() {
    let server_out = smb311_keys().server_out.expect("server_out");
    let transformed = hx("FD534D42ACBE1CB7ED343ADF1725EF144D90D4B0E06831DD2E8EB7B4000000000000000050000000
                          00000100250000000010000026BBBF949983A6C1C796559D0F2C510CB651D1F7B6AC8DED32A2A0B8
                          F2D793A815C6F6B848D69767A215841A42D400AE6DDB5F0B44173A014973321FDD7950DA6179159B
                          82E03C9E18A050FF0EA1C967");
    let plaintext = hx("FE534D4240000100000000000900010001000000000000000500000000000000FFFE000001000000
                        25000000001000000000000000000000000000000000000011000000170000000000000000000000");
    let opener = Opener::new(Cipher::Aes128Gcm, server_out.as_bytes()).expect("opener");
    let mut buf = transformed.clone();
    let (sid, range) = opener.open(&mut buf).expect("open");
    assert_eq!(sid, SMB311_SESSION_ID);
    assert_eq!(buf.get(range).expect("range"), &plaintext[..]);
    let header = parse_transform_header(&transformed).expect("header");
    let sealer = Sealer::new(Cipher::Aes128Gcm, server_out.as_bytes()).expect("sealer");
    let mut out = with_reserved_header(&plaintext);
    sealer
        .seal_with_nonce(&header.nonce, SMB311_SESSION_ID, &mut out)
        .expect("seal");
    assert_eq!(out, transformed);
}
