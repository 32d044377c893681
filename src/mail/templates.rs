//! The messages servauth sends: a subject a person expects, a plain-text body and the same
//! in HTML. Links are built from the configured app URL, never from a request's `Host`.

use chrono::Duration;
use html_escape::encode_text;

use super::OutgoingEmail;

/// Builds each kind of message with the configured link base.
#[derive(Debug, Clone)]
pub struct Templates {
    app_url: String,
}

impl Templates {
    /// `app_url`: the base of the links, without a trailing slash.
    pub fn new(app_url: String) -> Self {
        Self { app_url }
    }

    pub fn verify_email(&self, to: &str, token: &str, valid_for: Duration) -> OutgoingEmail {
        let link = format!("{}/verify-email?token={token}", self.app_url);
        message(
            to,
            "Confirm your email address",
            &[
                "Please confirm that this is your email address by opening this link:",
                &link,
                &format!(
                    "The link works once and expires in {}.",
                    describe(valid_for)
                ),
                "If you did not create an account, you can ignore this message.",
            ],
            Some(&link),
        )
    }

    pub fn reset_password(&self, to: &str, token: &str, valid_for: Duration) -> OutgoingEmail {
        let link = format!("{}/reset-password?token={token}", self.app_url);
        message(
            to,
            "Reset your password",
            &[
                "Someone asked to reset the password of your account. To choose a new one, open this link:",
                &link,
                &format!(
                    "The link works once and expires in {}.",
                    describe(valid_for)
                ),
                "If it was not you, ignore this message: your password stays as it is.",
            ],
            Some(&link),
        )
    }

    pub fn confirm_new_email(&self, to: &str, token: &str, valid_for: Duration) -> OutgoingEmail {
        let link = format!("{}/verify-email?token={token}", self.app_url);
        message(
            to,
            "Confirm your new email address",
            &[
                "Please confirm that this address should become the email address of your account:",
                &link,
                &format!(
                    "The link works once and expires in {}.",
                    describe(valid_for)
                ),
                "Until then your account keeps its current address. If you did not ask for this, ignore this message.",
            ],
            Some(&link),
        )
    }

    /// To an address that already has an account, when another account asked to move to
    /// it: nothing changes, and the owner learns that someone tried (the asker is told
    /// nothing, so the address's registration stays private).
    pub fn email_change_to_taken_address(&self, to: &str) -> OutgoingEmail {
        message(
            to,
            "Someone tried to use your email address",
            &[
                "Someone signed in to another account asked to change that account's email address to this one.",
                "Nothing was changed: this address stays with your account.",
                "If you know about this, there is nothing to do. Otherwise you may ignore this message.",
            ],
            None,
        )
    }

    pub fn email_change_requested(&self, to: &str, new_address: &str) -> OutgoingEmail {
        message(
            to,
            "Your email address is being changed",
            &[
                &format!(
                    "Someone signed in to your account asked to change its email address to {new_address}."
                ),
                "The change takes effect only when the new address is confirmed.",
                "If it was not you, change your password now and sign out of your other sessions.",
            ],
            None,
        )
    }

    pub fn email_changed(&self, to: &str, new_address: &str) -> OutgoingEmail {
        message(
            to,
            "Your email address was changed",
            &[
                &format!("The email address of your account is now {new_address}."),
                "If it was not you, contact support at once.",
            ],
            None,
        )
    }

    pub fn factor_added(&self, to: &str, what: &str) -> OutgoingEmail {
        message(
            to,
            "A second factor was added to your account",
            &[
                &format!("Signing in to your account now also works with {what}."),
                "If it was not you, reset your password now and remove it.",
            ],
            None,
        )
    }

    pub fn factor_removed(&self, to: &str, what: &str) -> OutgoingEmail {
        message(
            to,
            "A second factor was removed from your account",
            &[
                &format!(
                    "{what} no longer signs in to your account.",
                    what = capitalized(what)
                ),
                "If it was not you, reset your password now and add your second factor again.",
            ],
            None,
        )
    }

    pub fn recovery_code_used(&self, to: &str, left: u64) -> OutgoingEmail {
        message(
            to,
            "A recovery code was used",
            &[
                &format!(
                    "A recovery code of your account was just used to complete a sign-in. \
                     {left} unused codes are left."
                ),
                "If it was not you, reset your password now and create new recovery codes.",
            ],
            None,
        )
    }

    pub fn factors_reset(&self, to: &str) -> OutgoingEmail {
        message(
            to,
            "Your second factors were removed",
            &[
                "An administrator removed the second factors (authenticator app, passkeys and \
                 recovery codes) of your account. Your password alone signs in now.",
                "Add a second factor again once you are signed in. If you did not ask for this, \
                 contact support.",
            ],
            None,
        )
    }

    pub fn password_changed(&self, to: &str) -> OutgoingEmail {
        message(
            to,
            "Your password was changed",
            &[
                "The password of your account was just changed, and your other sessions were signed out.",
                "If it was not you, reset your password now.",
            ],
            None,
        )
    }
}

/// A message whose paragraphs are the lines; `link`, when given, is the button of the HTML.
fn message(to: &str, subject: &str, paragraphs: &[&str], link: Option<&str>) -> OutgoingEmail {
    let text = format!("Hello,\n\n{}\n\n— servauth\n", paragraphs.join("\n\n"));
    let body: String = paragraphs
        .iter()
        .map(|paragraph| match link {
            Some(link) if *paragraph == link => {
                let link = encode_text(link);
                format!("<p><a href=\"{link}\">{link}</a></p>\n")
            }
            _ => format!("<p>{}</p>\n", encode_text(paragraph)),
        })
        .collect();
    let html = format!(
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n<p>Hello,</p>\n{body}<p>— servauth</p>\n</body></html>\n"
    );
    OutgoingEmail {
        to: to.to_owned(),
        subject: subject.to_owned(),
        text,
        html,
    }
}

/// "30 minutes", "24 hours", "7 days".
fn describe(duration: Duration) -> String {
    let (value, unit) = if duration.num_days() >= 2 && duration.num_hours() % 24 == 0 {
        (duration.num_days(), "days")
    } else if duration.num_hours() >= 2 && duration.num_minutes() % 60 == 0 {
        (duration.num_hours(), "hours")
    } else if duration.num_minutes() >= 2 {
        (duration.num_minutes(), "minutes")
    } else {
        (duration.num_seconds(), "seconds")
    };
    format!("{value} {unit}")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_use_the_app_url_and_the_text_says_when_they_expire() {
        let templates = Templates::new("https://app.example.com".into());
        let mail = templates.reset_password("ada@example.com", "TOKEN", Duration::minutes(30));
        assert_eq!(mail.subject, "Reset your password");
        assert!(
            mail.text
                .contains("https://app.example.com/reset-password?token=TOKEN\n")
        );
        assert!(mail.text.contains("expires in 30 minutes"));
        assert!(
            mail.html
                .contains("<a href=\"https://app.example.com/reset-password?token=TOKEN\">")
        );
        let verify = templates.verify_email("ada@example.com", "T", Duration::hours(24));
        assert!(verify.text.contains("/verify-email?token=T"));
        assert!(verify.text.contains("expires in 24 hours"));
    }

    #[test]
    fn html_bodies_escape_what_they_quote() {
        let templates = Templates::new("https://app.example.com".into());
        let mail = templates.email_changed("ada@example.com", "<script>@evil.example");
        assert!(mail.html.contains("&lt;script&gt;@evil.example"));
        assert!(!mail.html.contains("<script>"));
    }
}
