//! The Autobahn TestSuite cases (run by kosoku, the native Autobahn runner)
//! against `surge echo`. Every case must be OK, NON-STRICT or INFORMATIONAL;
//! a FAILED case, or no cases at all, fails the test.
//!
//! The permessage-deflate cases (12.* and 13.*, 216 of them, about three
//! minutes) run on one epoll shard in release builds: compression is the
//! sans-IO core's, the same whatever driver moves the bytes (both drivers
//! run every other case, and tests/deflate.rs runs on both). The server
//! compresses every message there (`--deflate-threshold 0`): kosoku's
//! deflate cases hash an uncompressed text echo as a Python str and error
//! out, a harness bug, while sending small messages uncompressed is allowed
//! and what surge does by default.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

const DEFLATE_CASES: [&str; 2] = ["12.*", "13.*"];
const PASSING: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];

fn run_suite(name: &str, server_args: &[&str], deflate: bool) {
    // Debug builds compress too slowly for 216 cases of 1,000 messages.
    let deflate = deflate && !cfg!(debug_assertions);
    let mut args = server_args.to_vec();
    if deflate {
        args.extend(["--deflate-threshold", "0"]);
    }
    let server = Server::start(&args);
    let outdir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/autobahn")
        .join(name);
    let _ = std::fs::remove_dir_all(&outdir);
    let mut cmd = Command::new(venv().join("bin/kosoku"));
    cmd.arg(server.addr.to_string())
        .args(["-p", "4", "-o"])
        .arg(&outdir);
    if !deflate {
        for pattern in DEFLATE_CASES {
            cmd.args(["-x", pattern]);
        }
    }
    // kosoku exits non-zero when a case fails; the report says which.
    let out = output_within(&mut cmd, Duration::from_secs(900));
    println!("autobahn {name}: kosoku exited with {}", out.status);
    let index = outdir.join("index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| {
        panic!(
            "no report at {} ({e}); kosoku said:\n{}{}",
            index.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = parse_index(&text);
    let mut behaviors: BTreeMap<&str, usize> = BTreeMap::new();
    let mut closes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (case, behavior, close) in &report {
        *behaviors.entry(behavior).or_default() += 1;
        *closes.entry(close).or_default() += 1;
        if !PASSING.contains(&behavior.as_str()) || !PASSING.contains(&close.as_str()) {
            bad.push(format!("{case}: {behavior} (close: {close})"));
        }
    }
    println!(
        "autobahn {name}: {} cases; behavior: {behaviors:?}; close behavior: {closes:?}",
        report.len()
    );
    for case in &report {
        if case.1 != "OK" || case.2 != "OK" {
            println!("  {} {} (close {})", case.0, case.1, case.2);
        }
    }
    let expected = if deflate { 500 } else { 250 };
    assert!(report.len() > expected, "only {} cases ran", report.len());
    assert!(bad.is_empty(), "failing cases:\n{}", bad.join("\n"));
}

/// (case, behavior, behaviorClose) for every case in kosoku's index.json:
/// `{"agent": {"1.1.1": {"behavior": "OK", "behaviorClose": "OK", ...}}}`.
fn parse_index(json: &str) -> Vec<(String, String, String)> {
    let python = venv().join("bin/python");
    // Tab-separated: close behaviors such as "WRONG CODE" contain spaces.
    let script = "import json,sys\nfor a in json.load(sys.stdin).values():\n  for k,v in sorted(a.items(), key=lambda kv: [int(x) for x in kv[0].split('.')]): print(k, v['behavior'], v['behaviorClose'], sep='\\t')";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "index.json did not parse");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.split('\t');
            (
                p.next().unwrap().to_owned(),
                p.next().unwrap().to_owned(),
                p.next().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn autobahn_epoll_one_shard() {
    run_suite(
        "epoll-1",
        &["echo", "--backend", "epoll", "--shards", "1"],
        true,
    );
}

#[test]
fn autobahn_uring_one_shard() {
    run_suite(
        "uring-1",
        &["echo", "--backend", "uring", "--shards", "1"],
        false,
    );
}

#[test]
fn autobahn_epoll_two_shards() {
    run_suite(
        "epoll-2",
        &["echo", "--backend", "epoll", "--shards", "2"],
        false,
    );
}

#[test]
fn autobahn_uring_two_shards() {
    run_suite(
        "uring-2",
        &["echo", "--backend", "uring", "--shards", "2"],
        false,
    );
}
