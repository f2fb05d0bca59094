//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): HMAC-SHA1, 6 digits, 30-second
//! steps, the form every authenticator app reads from an `otpauth://totp/` URI (secret in RFC 4648
//! base32). A code is accepted for the current step and one step either side (clock drift), and
//! only for a step later than the last one accepted, so a code works once.

use aws_lc_rs::hmac;

/// Seconds per step (RFC 6238 §4: X = 30).
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
const DRIFT: i64 = 1;
/// Secret length in bytes (RFC 4226 §4 recommends 160 bits).
pub const SECRET_LEN: usize = 20;

/// The step a Unix time falls in.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The HOTP value of `secret` at counter `step` (RFC 4226 §5.3, dynamic truncation).
pub fn code_at(secret: &[u8], step: i64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    binary % 10u32.pow(DIGITS)
}

/// The step `code` (as typed: digits, spaces allowed) is valid for at `unix_seconds`, if it is
/// one of the steps around now and later than `last_step`. Compares every candidate step, so the
/// time taken does not depend on which one matched.
pub fn verify(secret: &[u8], code: &str, unix_seconds: i64, last_step: i64) -> Option<i64> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let presented: u32 = digits.parse().ok()?;
    let now = step_at(unix_seconds);
    let mut matched = None;
    for step in now - DRIFT..=now + DRIFT {
        let equal = subtle::ConstantTimeEq::ct_eq(&code_at(secret, step), &presented);
        if bool::from(equal) && step > last_step && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps take secrets.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The `otpauth://totp/` URI an authenticator app takes (Google Authenticator's key URI format):
/// the issuer's label and the account name, the secret, and the parameters spelled out.
pub fn otpauth_uri(issuer_label: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer_label),
        enc(account),
        base32(secret),
        enc(issuer_label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (the 8-digit values, of which a 6-digit code is the last 6).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight) in [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(code_at(secret, step_at(time)), eight % 1_000_000, "T={time}");
        }
    }

    #[test]
    fn verification_window_and_single_use() {
        let secret = b"12345678901234567890";
        let now = 1111111111;
        let code = format!("{:06}", code_at(secret, step_at(now)));
        assert_eq!(verify(secret, &code, now, 0), Some(step_at(now)));
        assert_eq!(verify(secret, &code, now + 30, 0), Some(step_at(now)), "one step late");
        assert_eq!(verify(secret, &code, now - 30, 0), Some(step_at(now)), "one step early");
        assert_eq!(verify(secret, &code, now + 90, 0), None, "too old");
        assert_eq!(verify(secret, &code, now, step_at(now)), None, "used already");
        assert_eq!(verify(secret, &format!("{} {}", &code[..3], &code[3..]), now, 0), Some(step_at(now)));
        for bad in ["", "12345", "1234567", "12a456", "０１２３４５"] {
            assert_eq!(verify(secret, bad, now, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn base32_and_uri() {
        // RFC 4648 §10.
        for (raw, enc) in [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foobar", "MZXW6YTBOI")] {
            assert_eq!(base32(raw.as_bytes()), enc);
        }
        let uri = otpauth_uri("Tessera auth.example.com", "alice", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/Tessera%20auth%2Eexample%2Ecom:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Tessera%20auth%2Eexample%2Ecom&algorithm=SHA1&digits=6&period=30"
        );
    }
}
