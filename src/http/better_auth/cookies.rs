//! Better Auth's cookies, byte for byte (better-call 1.4.5 `signCookieValue`,
//! `serializeSignedCookie`, `getSignedCookie`; wire spec §4): a signed value is
//! `value + "." + base64(HMAC-SHA256(secret, value))` (standard alphabet, padded: 44
//! characters ending in `=`), written through JS `encodeURIComponent`.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What JS `encodeURIComponent` escapes: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The length of a signature as Better Auth writes it (32 bytes in padded base64).
const SIGNATURE_CHARS: usize = 44;

/// The key that signs and checks cookie values: HMAC-SHA256 keyed with the secret's UTF-8
/// bytes as they are (Better Auth does not decode it).
#[derive(Clone)]
pub struct CookieSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSigner(..)")
    }
}

impl CookieSigner {
    /// A signer keyed with `secret` (HMAC takes keys of any length).
    pub fn new(secret: &str) -> Option<Self> {
        HmacSha256::new_from_slice(secret.as_bytes())
            .ok()
            .map(|mac| Self { mac })
    }

    /// The padded standard base64 HMAC of `value`.
    pub fn signature(&self, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// `value.signature`, as `set-auth-token` carries it (not yet percent-encoded).
    pub fn signed(&self, value: &str) -> String {
        format!("{value}.{}", self.signature(value))
    }

    /// The value of a signed `value.signature`, if the signature is Better Auth's shape
    /// (44 characters ending in `=`: base64url or unpadded forms are refused, as Better Auth
    /// refuses them) and verifies, in constant time.
    pub fn verify<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let dot = signed.rfind('.').filter(|&dot| dot >= 1)?;
        let (value, signature) = (&signed[..dot], &signed[dot + 1..]);
        if signature.len() != SIGNATURE_CHARS || !signature.ends_with('=') {
            return None;
        }
        let bytes = STANDARD.decode(signature).ok()?;
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        mac.verify_slice(&bytes).ok()?;
        Some(value)
    }
}

/// JS `encodeURIComponent` (UTF-8, uppercase hex).
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, URI_COMPONENT).to_string()
}

/// JS `decodeURIComponent` where it succeeds; the value as it is where it would throw
/// (better-call keeps such a cookie undecoded).
pub fn decode_component(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    match percent_decode_str(value).decode_utf8() {
        Ok(decoded) => Cow::Owned(decoded.into_owned()),
        Err(_) => Cow::Borrowed(value),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, as better-call reads it:
/// pairs split on `;`, name and value at the first `=`, trimmed, one pair of surrounding
/// quotes dropped, percent-decoded; the first occurrence wins.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            if key.trim() != name {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or(value);
            Some(decode_component(value).into_owned())
        })
}

/// A `Set-Cookie` line in better-call's attribute order: `Max-Age` only when given (none:
/// a browser-session cookie), then `Path=/; HttpOnly`, `Secure` when `secure`, `SameSite=Lax`.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> HeaderValue {
    let mut line = format!("{name}={value}");
    if let Some(max_age) = max_age {
        line.push_str(&format!("; Max-Age={max_age}"));
    }
    line.push_str("; Path=/; HttpOnly");
    if secure {
        line.push_str("; Secure");
    }
    line.push_str("; SameSite=Lax");
    // Names are ours and values percent-encoded: always a valid header value.
    HeaderValue::from_str(&line).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` line that deletes cookie `name` (`Max-Age=0`, empty value).
pub fn expired_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", Some(0), secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz";

    #[test]
    fn signatures_match_the_specs_worked_example() {
        let signer = CookieSigner::new(SECRET).unwrap();
        assert_eq!(
            signer.signature("6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1"),
            "HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7AE="
        );
        assert_eq!(
            signer.signature("true"),
            "1Ue91JS+cwPpyhFiSTriJ9vlBOt6RG78rdQqJ+TjbEk="
        );
        assert_eq!(
            encode_component(&signer.signed("6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1")),
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.HlGrb1g7Ezlrmp46m%2Fj5Fv%2FYYpSpzDGTFD8Lh0IN7AE%3D"
        );
    }

    #[test]
    fn only_a_padded_standard_signature_verifies() {
        let signer = CookieSigner::new(SECRET).unwrap();
        let good = "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7AE=";
        assert_eq!(
            signer.verify(good),
            Some("6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1")
        );
        for bad in [
            // base64url, unpadded, truncated, forged, no value, no signature
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.HlGrb1g7Ezlrmp46m_j5Fv_YYpSpzDGTFD8Lh0IN7AE=",
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7AE",
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7=",
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ2.HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7AE=",
            ".HlGrb1g7Ezlrmp46m/j5Fv/YYpSpzDGTFD8Lh0IN7AE=",
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1",
            "6QSzvjYGDfr4IndKtl2VvMk67mrmMjZ1.",
            "abc.def",
            "x.ééééééééééééééééééééééééééééééééééééééééééé=",
        ] {
            assert_eq!(signer.verify(bad), None, "{bad}");
        }
    }

    #[test]
    fn encode_component_is_javascripts() {
        assert_eq!(
            encode_component("a+b/c=d e!~*'()-_."),
            "a%2Bb%2Fc%3Dd%20e!~*'()-_."
        );
        assert_eq!(encode_component("é"), "%C3%A9");
        assert_eq!(decode_component("a%2Bb"), "a+b");
        assert_eq!(decode_component("100%"), "100%");
    }

    #[test]
    fn the_first_cookie_of_a_name_wins() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; better-auth.session_token=\"x%2By\"; better-auth.session_token=z",
            ),
        );
        assert_eq!(
            read_cookie(&headers, "better-auth.session_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(read_cookie(&headers, "missing"), None);
    }
}
