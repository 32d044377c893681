//! The deployment files under `deploy/` (Dockerfile, compose, Kubernetes, Helm, gateways)
//! against the binary: every setting they name is one `servauth serve` reads, each flavour
//! sets the essential ones, each gives servauth longer to stop than its own shutdown grace,
//! and each gateway passes every identity header.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory;
use servauth::cli::Cli;
use servauth::config::parse_duration;

/// A deployment flavour: the files under `deploy/` that make it up, and the settings it must
/// set for servauth to run there as intended.
struct Flavour {
    name: &'static str,
    path: &'static str,
    essential: &'static [&'static str],
}

const FLAVOURS: &[Flavour] = &[
    Flavour {
        name: "Dockerfile",
        path: "Dockerfile",
        essential: &["PORT", "DATABASE_URL"],
    },
    Flavour {
        name: "compose",
        path: "compose.yaml",
        essential: &[
            "DATABASE_URL",
            "SERVAUTH_PUBLIC_URL",
            "SERVAUTH_COOKIE_SECURE",
            "SERVAUTH_SMTP_URL",
            "SERVAUTH_INTERNAL_SECRET",
            "SERVAUTH_SHUTDOWN_GRACE",
        ],
    },
    Flavour {
        name: "Kubernetes (kustomize)",
        path: "k8s",
        essential: &[
            "PORT",
            "DATABASE_URL",
            "SERVAUTH_PUBLIC_URL",
            "SERVAUTH_INTERNAL_SECRET",
            "SERVAUTH_SMTP_URL",
            "SERVAUTH_SHUTDOWN_GRACE",
        ],
    },
    Flavour {
        name: "Helm",
        path: "helm",
        essential: &[
            "PORT",
            "DATABASE_URL",
            "SERVAUTH_PUBLIC_URL",
            "SERVAUTH_INTERNAL_SECRET",
            "SERVAUTH_SMTP_URL",
            "SERVAUTH_SHUTDOWN_GRACE",
        ],
    },
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The environment variables of `servauth serve`'s arguments.
fn accepted_variables() -> BTreeSet<String> {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("servauth has a `serve` subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

/// Every deployment file under `path`: documentation (`*.md`) and the check tools' own
/// manifests (`deploy/tools/`) configure nothing.
fn deployment_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name == "tools") {
            continue;
        }
        if path.is_dir() {
            files.extend(deployment_files(&path));
        } else if path.extension().is_none_or(|extension| extension != "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The servauth settings a text names: its words (runs of `[A-Za-z0-9_]`) that are
/// `SERVAUTH_*`, `DATABASE_URL`, `REDIS_URL` or `PORT`.
fn setting_names(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            word.starts_with("SERVAUTH_") || matches!(*word, "DATABASE_URL" | "REDIS_URL" | "PORT")
        })
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn deployment_files_name_only_settings_the_binary_reads() {
    let accepted = accepted_variables();
    assert!(accepted.contains("DATABASE_URL"), "{accepted:?}");
    let files = deployment_files(&deploy_dir());
    assert!(
        !files.is_empty(),
        "no files under {}",
        deploy_dir().display()
    );
    let mut unknown = Vec::new();
    for file in &files {
        let text = read(file);
        for name in setting_names(&text) {
            if !accepted.contains(name) {
                unknown.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "settings `servauth serve --help` does not list:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn each_deployment_flavour_sets_the_essential_settings() {
    for flavour in FLAVOURS {
        let files = deployment_files(&deploy_dir().join(flavour.path));
        assert!(!files.is_empty(), "{}: no files", flavour.name);
        let text: String = files.iter().map(|file| read(file)).collect();
        let named = setting_names(&text);
        let missing: Vec<_> = flavour
            .essential
            .iter()
            .filter(|name| !named.contains(**name))
            .collect();
        assert!(
            missing.is_empty(),
            "{} does not set {missing:?}",
            flavour.name
        );
    }
}

/// The values of `key` in YAML-ish text: `key: value` and `- key=value` lines alike.
fn values_of<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.trim().trim_start_matches("- ").trim_start())
        .filter_map(|line| line.strip_prefix(key))
        .filter_map(|rest| rest.strip_prefix(':').or_else(|| rest.strip_prefix('=')))
        .map(|value| value.trim().trim_matches('"'))
        .collect()
}

/// The longest shutdown grace a flavour configures, parsed as servauth parses it.
fn longest_shutdown_grace(text: &str) -> Duration {
    let graces = values_of(text, "SERVAUTH_SHUTDOWN_GRACE");
    assert!(!graces.is_empty(), "no SERVAUTH_SHUTDOWN_GRACE");
    graces
        .into_iter()
        .map(|grace| parse_duration(grace).unwrap())
        .max()
        .unwrap()
}

fn seconds(text: &str, key: &str) -> Vec<u64> {
    values_of(text, key)
        .into_iter()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{key}: {value}")))
        .collect()
}

#[test]
fn each_flavour_lets_servauth_finish_its_shutdown_grace() {
    // compose: the time `docker compose stop` waits before SIGKILL.
    let compose = read(&deploy_dir().join("compose.yaml"));
    let stop = values_of(&compose, "stop_grace_period");
    assert_eq!(stop.len(), 1, "one stop_grace_period in compose.yaml");
    let stop = parse_duration(stop[0]).unwrap();
    let grace = longest_shutdown_grace(&compose);
    assert!(
        stop > grace,
        "compose: stop_grace_period {stop:?} <= {grace:?}"
    );

    // Kubernetes and Helm: the termination grace period covers the preStop sleep, then the
    // shutdown grace.
    for (flavour, path, pre_stop_key) in [
        ("Kubernetes", "k8s", "seconds"),
        ("Helm", "helm/servauth/values.yaml", "preStopSleepSeconds"),
    ] {
        let text: String = deployment_files(&deploy_dir().join(path))
            .iter()
            .map(|file| read(file))
            .collect();
        let termination = seconds(&text, "terminationGracePeriodSeconds");
        let termination = *termination
            .iter()
            .min()
            .expect("terminationGracePeriodSeconds");
        let pre_stop = seconds(&text, pre_stop_key).into_iter().max().unwrap_or(0);
        let grace = longest_shutdown_grace(&text);
        assert!(
            Duration::from_secs(termination) > Duration::from_secs(pre_stop) + grace,
            "{flavour}: terminationGracePeriodSeconds {termination} <= preStop {pre_stop}s + {grace:?}"
        );
    }
}

/// The identity headers forward-auth answers with (`docs/API.md`, "Forward-auth"; the
/// gateway tests check that servauth sends exactly these).
const IDENTITY_HEADERS: [&str; 6] = [
    "X-Auth-User-Id",
    "X-Auth-Session-Id",
    "X-Auth-Role",
    "X-Auth-Email",
    "X-Auth-Email-Verified",
    "X-Auth-Amr",
];

/// The Traefik configuration, which no test can run (Traefik is not in Debian), names the
/// forward-auth route and replaces every identity header; the nginx and Caddy files name
/// each too (the gateway tests run those two).
#[test]
fn each_gateway_configuration_passes_every_identity_header() {
    let dir = deploy_dir().join("gateways");
    let traefik = read(&dir.join("traefik.yaml"));
    assert!(traefik.contains("address: \"http://servauth:8080/api/internal/authorize\""));
    let copied: Vec<&str> = traefik
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("authResponseHeaders:"))
        .skip(1)
        .map_while(|line| line.trim_start().strip_prefix("- "))
        .collect();
    assert_eq!(copied, IDENTITY_HEADERS, "traefik.yaml authResponseHeaders");
    let nginx = read(&dir.join("nginx.conf"));
    let caddy = read(&dir.join("Caddyfile"));
    for header in IDENTITY_HEADERS {
        let variable = format!("$upstream_http_{}", header.to_lowercase().replace('-', "_"));
        assert!(nginx.contains(&variable), "nginx.conf: {variable}");
        assert!(
            nginx.contains(&format!("proxy_set_header {header} ")),
            "nginx.conf: {header}"
        );
        assert!(
            caddy.contains(&format!("request_header -{header}\n")),
            "Caddyfile: {header}"
        );
    }
    let copy_line = caddy
        .lines()
        .find(|line| line.trim_start().starts_with("copy_headers "))
        .expect("Caddyfile: copy_headers");
    let copied: Vec<&str> = copy_line.split_whitespace().skip(1).collect();
    assert_eq!(copied, IDENTITY_HEADERS, "Caddyfile copy_headers");
}
