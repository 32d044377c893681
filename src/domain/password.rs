use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;
use zxcvbn::Score;

use super::{Email, FieldError};

/// A password in the form it is hashed and verified in: NFKC-normalized (applied alike when
/// setting and verifying, as NIST SP 800-63B advises), never trimmed, truncated or case-folded.
/// Its `Debug` prints `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// The normalized form of a password typed to sign in or to confirm a change. No policy
    /// applies: a password is compared with what was set, whatever today's rules are.
    pub fn for_verification(raw: &str) -> Self {
        Self(SecretString::from(raw.nfkc().collect::<String>()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in Unicode code points (of the normalized form).
    pub fn length(&self) -> usize {
        self.expose().chars().count()
    }
}

/// The rules a new password must meet: a length window and no common or context password.
/// No composition rules (NIST SP 800-63B-4, ASVS 6.2.5).
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    min_length: usize,
}

/// Words that make a password guessable in this context (ASVS 6.2.11).
const CONTEXT_WORDS: &[&str] = &["servauth"];

impl PasswordPolicy {
    pub const MAX_LENGTH: usize = 128;

    pub fn new(min_length: usize) -> Self {
        Self { min_length }
    }

    /// Checks a new password for the account with this email (when it is known). On failure, every rule the
    /// password breaks is listed, each as a field error on `field`.
    ///
    /// CPU: the common-password check scores the password against zxcvbn's dictionaries
    /// (about 30,000 common passwords plus words, names, keyboard walks, sequences and
    /// repeats); call it off the async workers.
    pub fn check(
        &self,
        raw: &str,
        email: Option<&Email>,
        field: &str,
    ) -> Result<Password, Vec<FieldError>> {
        let password = Password::for_verification(raw);
        let length = password.length();
        let mut errors = Vec::new();
        if length < self.min_length {
            errors.push(FieldError::new(
                field,
                "password_too_short",
                format!("A password has at least {} characters.", self.min_length),
            ));
        }
        if length > Self::MAX_LENGTH {
            errors.push(FieldError::new(
                field,
                "password_too_long",
                format!("A password has at most {} characters.", Self::MAX_LENGTH),
            ));
        } else if length > 0 && is_too_common(password.expose()) {
            errors.push(FieldError::new(
                field,
                "password_too_common",
                "This password is too common or too easy to guess.",
            ));
        }
        if email.is_some_and(|email| contains_email(password.expose(), email)) {
            errors.push(FieldError::new(
                field,
                "password_contains_email",
                "A password cannot be your email address or the part before its `@`.",
            ));
        }
        if errors.is_empty() {
            Ok(password)
        } else {
            Err(errors)
        }
    }
}

/// True when zxcvbn estimates fewer than 10^6 guesses (its scores 0 and 1: "too guessable"):
/// every password of its common-password list (whatever the case), and repeats, sequences,
/// keyboard walks and dictionary words with trivial changes.
fn is_too_common(password: &str) -> bool {
    zxcvbn::zxcvbn(password, CONTEXT_WORDS).score() <= Score::One
}

/// Equal to the email or its local part, compared case-insensitively after NFKC.
fn contains_email(password: &str, email: &Email) -> bool {
    let password = password.to_lowercase();
    let normalized = |s: &str| s.nfkc().collect::<String>().to_lowercase();
    password == normalized(email.as_str()) || password == normalized(email.local_part())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(policy: PasswordPolicy, raw: &str) -> Vec<&'static str> {
        let email = Email::parse("ada.lovelace@example.com", "email").unwrap();
        match policy.check(raw, Some(&email), "password") {
            Ok(_) => vec![],
            Err(errors) => errors.into_iter().map(|error| error.code).collect(),
        }
    }

    #[test]
    fn a_long_uncommon_password_passes() {
        assert!(codes(PasswordPolicy::new(15), "correct horse battery staple").is_empty());
        assert!(codes(PasswordPolicy::new(15), "ünïcödé pässwörd wïth späces").is_empty());
    }

    /// 32 code points; four of them make the longest password allowed.
    const LONGEST: &str = "žluťoučký kůň úpěl ďábelské ódy ";

    #[test]
    fn length_is_counted_in_code_points_after_nfkc() {
        // "ﬁ" (one code point) normalizes to "fi" (two).
        let policy = PasswordPolicy::new(8);
        assert_eq!(Password::for_verification("ﬁ").length(), 2);
        assert_eq!(codes(policy, &LONGEST.repeat(4)), Vec::<&str>::new());
        assert_eq!(
            codes(policy, &format!("{}ž", LONGEST.repeat(4))),
            vec!["password_too_long"]
        );
    }

    #[test]
    fn the_contracts_common_passwords_are_rejected() {
        let policy = PasswordPolicy::new(8);
        for common in [
            "password",
            "12345678",
            "123456789",
            "qwertyuiop",
            "PASSWORD",
        ] {
            assert_eq!(
                codes(policy, common),
                vec!["password_too_common"],
                "{common}"
            );
        }
        for weak in ["aaaaaaaaaaaaaaaa", "1234567890123456", "servauthservauth"] {
            assert!(
                codes(policy, weak).contains(&"password_too_common"),
                "{weak}"
            );
        }
    }

    #[test]
    fn every_broken_rule_is_listed() {
        assert_eq!(
            codes(PasswordPolicy::new(15), "password"),
            vec!["password_too_short", "password_too_common"]
        );
    }

    #[test]
    fn the_email_or_its_local_part_is_refused() {
        let policy = PasswordPolicy::new(8);
        assert!(codes(policy, "Ada.Lovelace@Example.com").contains(&"password_contains_email"));
        assert!(codes(policy, "ADA.LOVELACE").contains(&"password_contains_email"));
    }

    #[test]
    fn passwords_are_not_trimmed() {
        assert_eq!(Password::for_verification("  pass  ").expose(), "  pass  ");
    }
}
