//! Ctrl-C: the first one stops a long command within seconds (between synthesis iterations or
//! training steps) with exit code 130 and a truthful message; a second one stops it at once.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel).display().to_string()
}

/// Starts maskaq and waits until its stderr has a line containing `ready`; returns the child
/// and the stderr lines read so far.
fn start_until(args: &[&str], ready: &str) -> (Child, Vec<String>, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_maskaq"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start maskaq");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l.contains(ready)) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("maskaq never printed `{ready}`; stderr: {seen:?}"),
        }
    }
    (child, seen, rx)
}

fn sigint(child: &Child) {
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// Waits for the child to exit; returns (exit code, seconds, remaining stderr lines).
fn wait_exit(
    mut child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    limit: Duration,
) -> (Option<i32>, f64, Vec<String>) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            return (st.code(), t0.elapsed().as_secs_f64(), rx.try_iter().collect());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("maskaq did not stop within {limit:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_during_synthesis_stops_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("syn");
    // 100,000 iterations would take hours on any adapter: only Ctrl-C ends this run.
    let args = [
        "synth",
        "--model",
        &fixtures("tiny_vit"),
        "--num",
        "4",
        "--iters",
        "100000",
        "--log-every",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let (child, _, rx) = start_until(&args, "synth: 4 images");
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    let (code, secs, lines) = wait_exit(child, rx, Duration::from_secs(20));
    assert_eq!(code, Some(130), "exit code after Ctrl-C; stderr: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("maskaq: interrupted")), "{lines:?}");
    assert!(secs < 10.0, "took {secs:.1} s to stop");
    assert!(!out.exists(), "an interrupted synth must not leave its (empty) output folder");
}

#[test]
fn ctrl_c_in_the_first_epoch_says_nothing_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "quantize",
        "--model",
        &fixtures("tiny_vit"),
        "--num-images",
        "4",
        "--synth-iters",
        "100000",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    let (child, _, rx) = start_until(&args, "quantize: ");
    std::thread::sleep(Duration::from_millis(1500));
    sigint(&child);
    let (code, secs, lines) = wait_exit(child, rx, Duration::from_secs(20));
    assert_eq!(code, Some(130), "stderr: {lines:?}");
    let msg = lines.iter().find(|l| l.contains("maskaq: interrupted")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(msg.contains("nothing was kept"), "{msg}");
    assert!(!out.join("checkpoint.safetensors").exists());
    assert!(secs < 10.0, "took {secs:.1} s to stop");
}

#[test]
fn second_ctrl_c_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("syn");
    let args = [
        "synth",
        "--model",
        &fixtures("tiny_vit"),
        "--num",
        "4",
        "--iters",
        "100000",
        "--out",
        out.to_str().unwrap(),
    ];
    let (child, _, rx) = start_until(&args, "synth: 4 images");
    sigint(&child);
    sigint(&child);
    let (code, _, lines) = wait_exit(child, rx, Duration::from_secs(20));
    assert_eq!(code, Some(130), "stderr: {lines:?}");
}
