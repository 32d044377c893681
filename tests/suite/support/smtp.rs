//! A real SMTP server on loopback for the mail tests: aiosmtpd (PyPI) with its `Mailbox`
//! handler, writing every message it receives into a temporary maildir that tests read.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

/// One delivered message, decoded enough to read its headers and links.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    /// The `Message-ID` header: the outbox row's id, the same on every delivery attempt.
    pub message_id: String,
    /// The whole message with quoted-printable soft breaks and `=3D` undone.
    pub body: String,
}

impl Mail {
    /// The token of the first `…?token=` link.
    pub fn token(&self) -> String {
        let start = self
            .body
            .find("token=")
            .map(|at| at + "token=".len())
            .expect("a link with a token");
        self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect()
    }
}

impl SmtpSink {
    /// Starts a server on a free port; `None` when aiosmtpd is not installed on a developer's
    /// machine (in CI, where `.ci/run` installs it, that is a failure).
    pub async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_with(port, None).await
    }

    /// As [`Self::start`], on `port`; with `ack_after`, each message is stored at once but
    /// answered `250` only that much later (aiosmtpd's `Mailbox` handler, subclassed): a
    /// sender killed meanwhile never learns that it was delivered.
    pub async fn start_with(port: u16, ack_after: Option<Duration>) -> Option<Self> {
        let dir = tempfile::tempdir().expect("maildir");
        let handler = match ack_after {
            None => "aiosmtpd.handlers.Mailbox",
            Some(_) => {
                std::fs::write(dir.path().join("slow_sink.py"), SLOW_SINK).expect("handler");
                "slow_sink.SlowMailbox"
            }
        };
        let spawned = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", handler])
            .arg(dir.path().join("maildir"))
            .env("PYTHONPATH", dir.path())
            .env(
                "SINK_ACK_AFTER",
                ack_after.unwrap_or_default().as_secs_f64().to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = spawned else {
            return skip("python3 is not installed");
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(_)) = child.try_wait() {
                return skip("aiosmtpd is not installed (pip install aiosmtpd)");
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "aiosmtpd did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Self { child, port, dir })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message delivered so far.
    pub fn messages(&self) -> Vec<Mail> {
        let new = self.dir.path().join("maildir").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        let mut paths: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        paths.sort_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
        paths
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .map(|raw| parse(&raw))
            .collect()
    }

    /// The messages to this address whose subject contains `subject`.
    pub fn messages_to(&self, to: &str, subject: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|mail| mail.to.contains(to) && mail.subject.contains(subject))
            .collect()
    }

    /// Waits (10 s at most) until `count` messages to `to` with this subject arrived.
    pub async fn wait_for_n(&self, to: &str, subject: &str, count: usize) -> Vec<Mail> {
        let started = Instant::now();
        loop {
            let found = self.messages_to(to, subject);
            if found.len() >= count {
                return found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {count} message(s) to {to} about {subject:?}; got {:?}",
                self.messages()
                    .iter()
                    .map(|m| (&m.to, &m.subject))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the first message to `to` with this subject.
    pub async fn wait_for(&self, to: &str, subject: &str) -> Mail {
        self.wait_for_n(to, subject, 1).await.remove(0)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd's maildir handler, answering each message only `SINK_ACK_AFTER` seconds after
/// storing it.
const SLOW_SINK: &str = r#"
import asyncio, os
from aiosmtpd.handlers import Mailbox

class SlowMailbox(Mailbox):
    async def handle_DATA(self, server, session, envelope):
        answer = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(float(os.environ["SINK_ACK_AFTER"]))
        return answer
"#;

fn skip(why: &str) -> Option<SmtpSink> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs the SMTP test server: {why}"
    );
    eprintln!("skipping: {why}");
    None
}

fn parse(raw: &str) -> Mail {
    let body = raw
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let header = |name: &str| {
        raw.lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.strip_prefix(name).map(|value| value.trim().to_owned()))
            .unwrap_or_default()
    };
    Mail {
        to: header("To:"),
        subject: header("Subject:"),
        message_id: header("Message-ID:"),
        body,
    }
}
