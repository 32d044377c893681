use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

use super::FieldError;

/// An email address that passed the contract's rules: trimmed, at most 254 characters with a
/// local part of at most 64, one `@`, a domain of at least two dot-separated labels, and no
/// whitespace, control, invisible formatting (Unicode category Cf, which holds the bidi
/// controls) or mail-header-special characters (which also rules out SMTP header injection
/// when the address reaches a mail system). The structure is judged on the NFKC form, so a
/// full-width `＠` counts as an `@`; a non-ASCII domain must have an IDNA A-label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    key: String,
}

const FORBIDDEN: &[char] = &['(', ')', '<', '>', '[', ']', ',', ';', ':', '\\', '"', '@'];

/// Characters no address may hold, in the form given or its NFKC form: whitespace, controls,
/// and format characters (Cf: zero-width space U+200B, BOM U+FEFF, soft hyphen U+00AD, and
/// the bidi controls U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), which make two
/// addresses look alike or one display as another.
fn invisible(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c.general_category() == GeneralCategory::Format
}

impl Email {
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let invalid = |message: &str| FieldError::new(field, "invalid_email", message);
        let address = raw.trim();
        let normal: String = address.nfkc().collect();
        if address.chars().count() > 254 || normal.chars().count() > 254 {
            return Err(invalid("An email address has at most 254 characters."));
        }
        if address.chars().chain(normal.chars()).any(invisible) {
            return Err(invalid(
                "An email address has no spaces, control or invisible formatting characters.",
            ));
        }
        let Some((local, domain)) = normal.split_once('@') else {
            return Err(invalid("An email address needs an `@`."));
        };
        if local.is_empty() || local.chars().count() > 64 {
            return Err(invalid("The part before the `@` has 1 to 64 characters."));
        }
        if local.contains(FORBIDDEN) || domain.contains(FORBIDDEN) {
            return Err(invalid(
                "An email address has one `@` and no quotes, brackets or commas.",
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid(
                "The part before the `@` cannot start, end or repeat a dot.",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(invalid(
                "The domain needs dot-separated labels, such as example.com.",
            ));
        }
        if !domain.is_ascii() && idna::domain_to_ascii(domain).is_err() {
            return Err(invalid(
                "The domain is not a valid internationalised domain name.",
            ));
        }
        Ok(Self {
            address: address.to_owned(),
            key: Self::key_of(address),
        })
    }

    /// The comparison key of an address: trimmed and NFKC-normalised; the local part
    /// lowercased, `@`, the domain as its IDNA A-label (lowercase), so that `josé` composed
    /// or decomposed and `exämple.org` or `xn--exmple-cua.org` are one account. A pure-ASCII
    /// address keys as its lowercase. Takes any string (login looks up what was typed
    /// without judging it): without an `@` the whole is the local part; a domain without an
    /// A-label keys as its lowercase.
    pub fn key_of(raw: &str) -> String {
        let normal: String = raw.trim().nfkc().collect();
        let Some((local, domain)) = normal.rsplit_once('@') else {
            return normal.to_lowercase();
        };
        let domain = if domain.is_ascii() {
            domain.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_lowercase())
        };
        format!("{}@{domain}", local.to_lowercase())
    }

    /// The address as the user gave it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The comparison key ([`Email::key_of`]) that uniqueness and login compare.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.address.split_once('@').map_or("", |(local, _)| local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> bool {
        Email::parse(raw, "email").is_ok()
    }

    #[test]
    fn accepts_ordinary_addresses() {
        assert!(ok("ada@example.com"));
        assert!(ok("  Ada.Lovelace+tag@Mail.Example.co.uk "));
        assert!(ok("josé@exämple.org"));
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa mple.com",
            "ada@example..com",
            "ada@-example.com",
            "ada@example.com\r\nBcc: evil@x.com",
            "\"ada\"@example.com",
            "<ada@example.com>",
        ] {
            assert!(!ok(raw), "{raw:?} should be rejected");
        }
    }

    #[test]
    fn enforces_lengths() {
        let local = "a".repeat(64);
        assert!(ok(&format!("{local}@example.com")));
        assert!(!ok(&format!("a{local}@example.com")));
        let long_domain = format!("{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(!ok(&format!("ada@{long_domain}")), "over 254 characters");
    }

    #[test]
    fn key_is_trimmed_and_lowercased() {
        let email = Email::parse(" Ada@Example.COM ", "email").unwrap();
        assert_eq!(email.as_str(), "Ada@Example.COM");
        assert_eq!(email.key(), "ada@example.com");
        assert_eq!(email.local_part(), "Ada");
    }

    #[test]
    fn rejects_format_and_bidi_control_characters() {
        for c in [
            '\u{200B}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2060}',
            '\u{E0041}',
        ] {
            for raw in [format!("ada{c}@example.com"), format!("ada@exa{c}mple.com")] {
                let error = Email::parse(&raw, "email").unwrap_err();
                assert_eq!(error.code, "invalid_email", "{raw:?}");
            }
        }
    }

    #[test]
    fn structure_is_judged_on_the_nfkc_form() {
        // A full-width `＠` is an `@` once normalised: two of them.
        assert!(!ok("victim\u{FF20}example.com@evil.test"));
        assert!(!ok("victim@example.com\u{FF20}evil.test"));
        // Full-width dots and brackets are dots and brackets.
        assert!(!ok("ada\u{FF0E}\u{FF0E}b@example.com"), "a repeated dot");
        assert!(!ok("\u{FF1C}ada@example.com\u{FF1E}"), "angle brackets");
        assert!(
            !ok("ada@example\u{3002}\u{3002}com"),
            "ideographic full stops"
        );
        // One full-width `＠` alone is an ordinary address; the address is kept as given.
        let email = Email::parse("ada\u{FF20}example.com", "email").unwrap();
        assert_eq!(email.as_str(), "ada\u{FF20}example.com");
        assert_eq!(email.key(), "ada@example.com");
        // A non-ASCII domain needs an A-label (a label mixing left-to-right and
        // right-to-left letters has none).
        assert!(ok("ada@\u{5D0}\u{5D1}.example"));
        assert!(!ok("ada@a\u{5D0}.example"));
    }

    #[test]
    fn key_is_nfkc_with_a_lowercase_local_part_and_the_a_label_domain() {
        let nfc = Email::parse("Jos\u{E9}@Example.com", "email").unwrap();
        let nfd = Email::parse("Jose\u{301}@example.COM", "email").unwrap();
        assert_eq!(nfc.key(), "jos\u{E9}@example.com");
        assert_eq!(nfd.key(), nfc.key());
        assert_eq!(
            nfd.as_str(),
            "Jose\u{301}@example.COM",
            "the address stays as given"
        );
        let unicode = Email::parse("ada@Ex\u{C4}mple.org", "email").unwrap();
        let a_label = Email::parse("ada@XN--exmple-cua.org", "email").unwrap();
        assert_eq!(unicode.key(), "ada@xn--exmple-cua.org");
        assert_eq!(a_label.key(), unicode.key());
        // Full-width letters are their ASCII selves.
        assert_eq!(Email::key_of("\u{FF41}da@example.com"), "ada@example.com");
    }

    #[test]
    fn ascii_keys_are_the_lowercased_address_as_before() {
        for raw in [
            " Ada@Example.COM ",
            "ada.lovelace+tag@mail.example.co.uk",
            "A@XN--EXMPLE-CUA.ORG",
            "xn--bad@xn--zz.example",
            "no at sign",
            "two@at@signs",
            "",
        ] {
            assert_eq!(Email::key_of(raw), raw.trim().to_lowercase(), "{raw:?}");
        }
    }

    #[test]
    fn key_of_takes_any_string() {
        assert_eq!(
            Email::key_of("victim\u{FF20}Example.com@Evil.test"),
            "victim@example.com@evil.test"
        );
        assert_eq!(Email::key_of("Jose\u{301}"), "jos\u{E9}");
        // No A-label: the lowercased NFKC domain.
        assert_eq!(
            Email::key_of("ada@\u{301}X.example"),
            "ada@\u{301}x.example"
        );
        assert_eq!(
            Email::key_of("ada@Ex\u{C4}mple.org"),
            "ada@xn--exmple-cua.org"
        );
    }
}
