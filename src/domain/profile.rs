//! The display name and picture URL of a user (Better Auth's `name` and `image`), parsed
//! once at the edge: both faces take them through [`parse_name`] and [`parse_image`].

use super::FieldError;

/// The most characters a display name has (after trimming).
pub const MAX_NAME_CHARS: usize = 100;
/// The longest picture URL kept (in bytes; a valid URL is ASCII).
pub const MAX_IMAGE_CHARS: usize = 2048;

/// A display name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters
/// (they would forge lines in mail and logs).
pub fn parse_name(raw: &str, field: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME_CHARS {
        return Err(FieldError::new(
            field,
            "invalid_name",
            format!("A name has 1 to {MAX_NAME_CHARS} characters."),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "invalid_name",
            "A name has no control characters.",
        ));
    }
    Ok(name.to_owned())
}

/// A picture URL: absolute, `http` or `https`, with a host, at most [`MAX_IMAGE_CHARS`]
/// characters. Kept as given (clients show it as they sent it).
pub fn parse_image(raw: &str, field: &str) -> Result<String, FieldError> {
    let invalid = || {
        FieldError::new(
            field,
            "invalid_image",
            format!("An image is an absolute http(s) URL of at most {MAX_IMAGE_CHARS} characters."),
        )
    };
    if raw.len() > MAX_IMAGE_CHARS || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid());
    }
    let url = url::Url::parse(raw).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  Ada  ", "name").unwrap(), "Ada");
        assert!(parse_name("   ", "name").is_err());
        assert!(parse_name(&"x".repeat(101), "name").is_err());
        assert!(parse_name(&"é".repeat(100), "name").is_ok());
        assert!(parse_name("Ada\nLovelace", "name").is_err());
        assert!(parse_name("Ada\u{7}", "name").is_err());
    }

    #[test]
    fn images_are_absolute_http_urls() {
        assert!(parse_image("https://img.example/a.png", "image").is_ok());
        assert!(parse_image("http://img.example/a.png?x=1", "image").is_ok());
        assert!(parse_image("/a.png", "image").is_err());
        assert!(parse_image("javascript:alert(1)", "image").is_err());
        assert!(parse_image("data:image/png;base64,AAAA", "image").is_err());
        assert!(parse_image("https://", "image").is_err());
        assert!(parse_image(&format!("https://a.example/{}", "x".repeat(2048)), "image").is_err());
    }
}
