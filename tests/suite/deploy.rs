//! The deployment files under `deploy/` (Dockerfile, compose, Kubernetes, Helm) against the
//! binary: every setting they name is one `servauth serve` reads, each flavour sets the
//! essential ones, and each gives servauth longer to stop than its own shutdown grace.

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
