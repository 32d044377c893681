//! Better Auth's CSRF defences (wire spec §7): the origin check on every state-changing
//! request that carries cookies, the fetch-metadata rule of sign-in and sign-up, and the
//! validation of redirect targets (`callbackURL`, `redirectTo`, …) against the trusted
//! origins, so that no link of this face is an open redirect.

use axum::http::{HeaderMap, Method, header};
use serde_json::Value;

use super::Face;
use super::error::FaceError;

/// The URL-valued fields Better Auth checks, with the code of each one's refusal.
const URL_FIELDS: &[(&str, &str, &str)] = &[
    ("callbackURL", "INVALID_CALLBACK_URL", "Invalid callbackURL"),
    ("redirectTo", "INVALID_REDIRECT_URL", "Invalid redirectURL"),
    (
        "errorCallbackURL",
        "INVALID_ERROR_CALLBACK_URL",
        "Invalid errorCallbackURL",
    ),
    (
        "newUserCallbackURL",
        "INVALID_NEW_USER_CALLBACK_URL",
        "Invalid newUserCallbackURL",
    ),
];

/// The origin a request says it comes from: `Origin`, or failing that the origin of
/// `Referer`. `Some("null")` stays as it is (refused as missing).
fn claimed_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.to_str().unwrap_or("invalid").to_owned());
    }
    let referer = headers.get(header::REFERER)?.to_str().unwrap_or("invalid");
    Some(
        url::Url::parse(referer)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_else(|_| "invalid".to_owned()),
    )
}

/// A claimed origin must be present, not `null`, and one of the trusted origins.
fn require_trusted_origin(face: &Face, headers: &HeaderMap) -> Result<(), FaceError> {
    match claimed_origin(headers) {
        None => Err(FaceError::api(
            403,
            "MISSING_OR_NULL_ORIGIN",
            "Missing or null Origin",
        )),
        Some(origin) if origin == "null" => Err(FaceError::api(
            403,
            "MISSING_OR_NULL_ORIGIN",
            "Missing or null Origin",
        )),
        Some(origin) if face.is_trusted_origin(&origin) => Ok(()),
        Some(_) => Err(FaceError::api(403, "INVALID_ORIGIN", "Invalid origin")),
    }
}

/// Rule 1: a request other than GET/HEAD/OPTIONS that carries any `Cookie` header must
/// come from a trusted origin. Bearer-only clients (no cookies) are not checked.
pub fn check_origin(face: &Face, method: &Method, headers: &HeaderMap) -> Result<(), FaceError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if headers.contains_key(header::COOKIE) {
        require_trusted_origin(face, headers)?;
    }
    Ok(())
}

/// Rule 2, for sign-in and sign-up (after rule 1): a cross-site navigation (a form posted
/// from another site) is refused; a browser request (any `Sec-Fetch-*` header) must name a
/// trusted origin; a request naming an origin must name a trusted one; a request with
/// neither (curl, a server) passes.
pub fn check_login_csrf(face: &Face, headers: &HeaderMap) -> Result<(), FaceError> {
    if headers.contains_key(header::COOKIE) {
        return Ok(()); // rule 1 already required a trusted origin
    }
    let fetch = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let has_fetch_metadata = ["sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"]
        .iter()
        .any(|name| headers.contains_key(*name));
    if has_fetch_metadata {
        if fetch("sec-fetch-site") == Some("cross-site")
            && fetch("sec-fetch-mode") == Some("navigate")
        {
            return Err(FaceError::api(
                403,
                "CROSS_SITE_NAVIGATION_LOGIN_BLOCKED",
                "Cross-site navigation login blocked. This request appears to be a CSRF attack.",
            ));
        }
        return require_trusted_origin(face, headers);
    }
    if claimed_origin(headers).is_some() {
        return require_trusted_origin(face, headers);
    }
    Ok(())
}

/// Checks every URL-valued field of the body and the query (see [`URL_FIELDS`]).
pub fn check_url_fields(
    face: &Face,
    body: Option<&Value>,
    query: &[(String, String)],
) -> Result<(), FaceError> {
    for (field, code, message) in URL_FIELDS {
        if let Some(value) = body.and_then(|body| body.get(field)) {
            match value {
                Value::String(url) => check_url(face, url, code, message)?,
                Value::Null => {}
                _ => {
                    return Err(FaceError::message(
                        400,
                        format!("Invalid {field}: expected a string"),
                    ));
                }
            }
        }
        for (_, url) in query.iter().filter(|(key, _)| key == field) {
            check_url(face, url, code, message)?;
        }
    }
    Ok(())
}

/// A redirect target Better Auth accepts: a relative path of its safe shape, or an
/// absolute URL of a trusted origin. Anything else is `403 <code>`.
pub fn check_url(
    face: &Face,
    url: &str,
    code: &'static str,
    message: &'static str,
) -> Result<(), FaceError> {
    let allowed = if url.starts_with('/') {
        is_safe_relative_path(url)
    } else {
        url::Url::parse(url).is_ok_and(|parsed| {
            matches!(parsed.scheme(), "http" | "https")
                && face.is_trusted_origin(&parsed.origin().ascii_serialization())
        })
    };
    if allowed {
        Ok(())
    } else {
        Err(FaceError::api(403, code, message))
    }
}

/// Better Auth's relative-path rule,
/// `^\/(?!\/|\\|%2f|%5c)[\w\-.\+/@]*(?:\?[\w\-.\+/=&%@]*)?$`: a path that is not
/// protocol-relative (`//host`, `/\host`), of word characters and `- . + / @`, with an
/// optional query of those and `= & %`.
pub fn is_safe_relative_path(url: &str) -> bool {
    let Some(rest) = url.strip_prefix('/') else {
        return false;
    };
    if rest.starts_with('/') || rest.starts_with('\\') {
        return false;
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    path.chars()
        .all(|c| word(c) || matches!(c, '-' | '.' | '+' | '/' | '@'))
        && query.is_none_or(|query| {
            query
                .chars()
                .all(|c| word(c) || matches!(c, '-' | '.' | '+' | '/' | '=' | '&' | '%' | '@'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_better_auths_rule() {
        for good in [
            "/",
            "/dashboard",
            "/a/b-c.d+e@f",
            "/cb?x=1&y=%20",
            "/reset?",
        ] {
            assert!(is_safe_relative_path(good), "{good}");
        }
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "/%2fevil.test",
            "/%5cevil.test",
            "/a b",
            "/a?b?c",
            "/a#frag",
            "/é",
            "dashboard",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }
}
