//! Webhooks: audit events POSTed to `SERVAUTH_WEBHOOK_URL`, received by a real HTTP server
//! that checks every signature with the official Standard Webhooks library (PyPI
//! `standardwebhooks`), not with our code.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::support::app::{TestApp, read};
use crate::support::db::Backend;

const SERVICE: &str = "service-secret-service-secret-0123456789";
/// `whsec_` and the base64 of 32 bytes.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

/// The receiver: verifies each POST with `standardwebhooks.Webhook(secret).verify`, also
/// checks that a tampered body would be refused, appends one JSON line per request to
/// `OUT`, and answers `500` to the first `FAIL_FIRST` requests; `/redirect` answers `302`
/// to its own `/landed`, which records any visit.
const RECEIVER: &str = r#"
import http.server, json, os, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

hook = Webhook(os.environ["SECRET"])
fail_first = int(os.environ.get("FAIL_FIRST", "0"))
seen = {"n": 0}

def record(entry):
    with open(os.environ["OUT"], "a") as out:
        out.write(json.dumps(entry) + "\n")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = dict(self.headers)
        if self.path == "/redirect":
            record({"path": self.path})
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:%d/landed" % self.server.server_port)
            self.end_headers()
            return
        if self.path == "/landed":
            record({"path": self.path})
            self.send_response(200)
            self.end_headers()
            return
        seen["n"] += 1
        entry = {"path": self.path, "id": headers.get("webhook-id", headers.get("Webhook-Id"))}
        try:
            payload = hook.verify(body, headers)
            entry["verified"] = True
            entry["type"] = payload["type"]
            entry["data"] = payload["data"]
        except WebhookVerificationError as error:
            entry["verified"] = False
            entry["error"] = str(error)
        try:
            hook.verify(body + b" ", headers)
            entry["tamper_accepted"] = True
        except WebhookVerificationError:
            entry["tamper_accepted"] = False
        failing = seen["n"] <= fail_first
        entry["answered"] = 500 if failing else 200
        record(entry)
        self.send_response(entry["answered"])
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.serve_forever()
"#;

struct Receiver {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Receiver {
    /// `None` when python3 or the library is missing on a developer's machine (in CI, where
    /// `.ci/run` installs it, that is a failure).
    async fn start(fail_first: u32) -> Option<Self> {
        let ready = Command::new("python3")
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|status| status.success());
        if !ready {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs the standardwebhooks library (pip install standardwebhooks)"
            );
            eprintln!("skipping: pip install standardwebhooks");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("receiver.py"), RECEIVER).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .arg(dir.path().join("receiver.py"))
            .arg(port.to_string())
            .env("SECRET", SECRET)
            .env("FAIL_FIRST", fail_first.to_string())
            .env("OUT", dir.path().join("received.jsonl"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(15), "no receiver");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Self { child, port, dir })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn(backend: Backend, url: &str) -> Option<TestApp> {
    TestApp::spawn_with(
        backend,
        &[
            "--internal-secret",
            SERVICE,
            "--webhook-url",
            url,
            "--webhook-secret",
            SECRET,
        ],
    )
    .await
}

/// `GET /admin/outbox`, as a service.
async fn outbox_of(app: &TestApp) -> Value {
    let reply = app
        .client
        .request(Method::GET, app.url("/admin/outbox"))
        .header("x-service-auth", SERVICE)
        .send()
        .await
        .unwrap();
    read(reply).await.body
}

/// Every event arrives signed as the specification says; a receiver that fails gets the
/// same delivery again (same `webhook-id`) after the backoff.
async fn audit_events_arrive_signed_and_failed_deliveries_are_retried(backend: Backend) {
    let Some(receiver) = Receiver::start(1).await else {
        return;
    };
    let Some(app) = spawn(backend, &receiver.url("/hook")).await else {
        return;
    };
    let registered = app.register("ada@example.com").await;
    let user = registered["user"]["id"].as_str().unwrap();
    let started = Instant::now();
    let delivered = loop {
        let received = receiver.received();
        let ok: Vec<Value> = received
            .iter()
            .filter(|entry| entry["answered"] == 200)
            .cloned()
            .collect();
        if ok.len() >= 2 {
            break received;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{received:#?}");
        // Past the first retry's backoff (5 s), well within the receiver's 5-minute tolerance.
        app.clock.advance(chrono::Duration::seconds(6));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        delivered
            .iter()
            .all(|entry| entry["verified"] == true && entry["tamper_accepted"] == false),
        "{delivered:#?}"
    );
    let types: Vec<&str> = delivered
        .iter()
        .filter(|entry| entry["answered"] == 200)
        .map(|entry| entry["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"user.registered") && types.contains(&"user.signed_in"),
        "{types:?}"
    );
    // The first attempt failed; its retry came under the same id.
    let failed = delivered
        .iter()
        .find(|entry| entry["answered"] == 500)
        .expect("the failed first attempt");
    assert!(
        delivered
            .iter()
            .any(|entry| entry["id"] == failed["id"] && entry["answered"] == 200),
        "{delivered:#?}"
    );
    let registered_event = delivered
        .iter()
        .find(|entry| entry["type"] == "user.registered")
        .unwrap();
    assert_eq!(registered_event["data"]["user_id"], user);
    assert_eq!(registered_event["data"]["event"], "user.registered");
}

/// A receiver that redirects is not followed (not even to itself): the delivery fails
/// every attempt and ends dead, and the request never reaches the redirect's target.
async fn redirects_are_never_followed(backend: Backend) {
    let Some(receiver) = Receiver::start(0).await else {
        return;
    };
    let Some(app) = spawn(backend, &receiver.url("/redirect")).await else {
        return;
    };
    app.register("ada@example.com").await;
    let mut outbox = Value::Null;
    for _ in 0..60 {
        outbox = outbox_of(&app).await;
        if outbox["dead"] == 2 {
            break;
        }
        app.clock.advance(chrono::Duration::hours(3));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(outbox["dead"], 2, "{outbox:#}");
    let dead = &outbox["dead_messages"][0];
    assert_eq!(dead["kind"], "webhook");
    assert!(
        dead["last_error"].as_str().unwrap().contains("302"),
        "{dead:#}"
    );
    let received = receiver.received();
    assert!(
        received.iter().all(|entry| entry["path"] == "/redirect"),
        "{received:#?}"
    );
    assert_eq!(received.len(), 16, "8 attempts for each of the 2 events");
}

/// A receiver that accepts connections and never answers (and, for a second server, one
/// that is unreachable) holds up neither the requests whose events it should get nor the
/// mail of the same outbox.
async fn a_hanging_or_unreachable_receiver_blocks_neither_requests_nor_mail(backend: Backend) {
    let Some(smtp) = crate::support::smtp::SmtpSink::start().await else {
        return;
    };
    // Hangs: every connection is accepted, read from and never answered (held until the test ends).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    // Unreachable: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);

    for (url, hangs) in [(hanging, true), (unreachable, false)] {
        let Some(app) = TestApp::spawn_with(
            backend,
            &[
                "--internal-secret",
                SERVICE,
                "--webhook-url",
                &url,
                "--webhook-secret",
                SECRET,
                "--smtp-url",
                &smtp.url(),
            ],
        )
        .await
        else {
            return;
        };
        let email = if hangs {
            "ada@example.com"
        } else {
            "bob@example.com"
        };
        app.register(email).await;
        if hangs {
            let started = Instant::now();
            while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "no delivery attempt"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // While the webhook delivery hangs (or fails), requests are answered and mail goes out.
        let forgot = app
            .post("/auth/password/forgot", serde_json::json!({"email": email}))
            .await;
        assert_eq!(forgot.status, reqwest::StatusCode::ACCEPTED);
        smtp.wait_for(email, "Confirm your email address").await;
        smtp.wait_for(email, "Reset your password").await;
        let outbox = outbox_of(&app).await;
        assert!(
            outbox["pending"].as_u64().unwrap() >= 1,
            "the events wait for their receiver: {outbox:#}"
        );
        assert_eq!(outbox["dead"], 0, "{outbox:#}");
    }
}

crate::support::both_backends!(
    audit_events_arrive_signed_and_failed_deliveries_are_retried,
    redirects_are_never_followed,
    a_hanging_or_unreachable_receiver_blocks_neither_requests_nor_mail,
);
