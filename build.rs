//! Embeds the git commit into `--version` as `PIKA_REMEDY_VERSION` ("0.1.0 (commit 1a2b3c4d5e6f)").
//!
//! The commit comes from, in order: the environment variable `PIKA_REMEDY_GIT_COMMIT` (set by
//! `make dist`/`make deb` and the Dockerfile, whose build context has no `.git`), then
//! `git rev-parse` when building from a clone, else "unknown" (e.g. a source tarball without
//! `.git` and without the variable). No network, no failure: a missing git is "unknown".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn valid(commit: &str) -> bool {
    !commit.is_empty() && commit.len() <= 40 && commit.chars().all(|c| c.is_ascii_alphanumeric())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PIKA_REMEDY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("PIKA_REMEDY_GIT_COMMIT")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let commit = match from_env {
        Some(c) => c,
        None => {
            let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
            let in_repo = git(&["-C", &manifest, "rev-parse", "--show-toplevel"])
                .map(PathBuf::from)
                .is_some_and(|top| {
                    top.canonicalize().ok() == PathBuf::from(&manifest).canonicalize().ok()
                });
            if in_repo {
                // Rebuild the version string when HEAD moves (a commit, a checkout).
                for p in ["HEAD", "packed-refs"] {
                    if let Some(path) = git(&["-C", &manifest, "rev-parse", "--git-path", p]) {
                        println!(
                            "cargo:rerun-if-changed={}",
                            PathBuf::from(&manifest).join(path).display()
                        );
                    }
                }
                if let Some(r) = git(&["-C", &manifest, "symbolic-ref", "-q", "HEAD"]) {
                    if let Some(path) = git(&["-C", &manifest, "rev-parse", "--git-path", &r]) {
                        println!(
                            "cargo:rerun-if-changed={}",
                            PathBuf::from(&manifest).join(path).display()
                        );
                    }
                }
                git(&["-C", &manifest, "rev-parse", "--short=12", "HEAD"])
                    .unwrap_or_else(|| "unknown".into())
            } else {
                "unknown".into()
            }
        }
    };
    let commit = if valid(&commit) {
        commit
    } else {
        "unknown".into()
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=PIKA_REMEDY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PIKA_REMEDY_VERSION={version} (commit {commit})");
}
