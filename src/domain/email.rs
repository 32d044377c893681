use super::FieldError;

/// An email address that passed the contract's rules: trimmed, at most 254 characters with a
/// local part of at most 64, one `@`, a domain of at least two dot-separated labels, and no
/// whitespace, control or mail-header-special characters (which also rules out SMTP header
/// injection when the address reaches a mail system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    key: String,
}

const FORBIDDEN: &[char] = &['(', ')', '<', '>', '[', ']', ',', ';', ':', '\\', '"', '@'];

impl Email {
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let invalid = |message: &str| FieldError::new(field, "invalid_email", message);
        let address = raw.trim();
        if address.chars().count() > 254 {
            return Err(invalid("An email address has at most 254 characters."));
        }
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "An email address has no spaces or control characters.",
            ));
        }
        let Some((local, domain)) = address.split_once('@') else {
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
        Ok(Self {
            address: address.to_owned(),
            key: Self::key_of(address),
        })
    }

    /// The comparison key of an address: trimmed and lowercased. Also used to look up an
    /// address typed at login without judging its syntax.
    pub fn key_of(raw: &str) -> String {
        raw.trim().to_lowercase()
    }

    /// The address as the user gave it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The lowercased address that uniqueness and login compare.
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
}
