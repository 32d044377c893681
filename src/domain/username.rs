use super::FieldError;

/// A username: 3 to 32 characters of `[A-Za-z0-9_.-]`, unique case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    name: String,
    key: String,
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let length = raw.chars().count();
        if !(3..=32).contains(&length) {
            return Err(FieldError::new(
                "username",
                "invalid_username",
                "A username has 3 to 32 characters.",
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(FieldError::new(
                "username",
                "invalid_username",
                "A username uses only letters, digits, `_`, `.` and `-`.",
            ));
        }
        Ok(Self {
            name: raw.to_owned(),
            key: raw.to_ascii_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The lowercased name that uniqueness compares.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn into_parts(self) -> (String, String) {
        (self.name, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_per_the_contract() {
        assert!(Username::parse("ada").is_ok());
        assert!(Username::parse("Ada_Lovelace.1815-x").is_ok());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        for raw in ["", "ab", "a b c", "ada!", "ädä", &"a".repeat(33)] {
            assert!(Username::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        assert_eq!(Username::parse("AdA").unwrap().key(), "ada");
    }
}
