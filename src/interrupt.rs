//! Ctrl-C: the first press asks the running command to stop at its next step (a synthesis
//! iteration, a training step, an evaluation batch), so `quantize` keeps its last finished epoch
//! and temporary files are cleaned up; a second press exits at once with code 130.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (the binary calls this once). Without a handler Ctrl-C still ends the
/// process at once, which loses nothing that was finished: every output is written atomically.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("\nmaskaq: stopped at once (second Ctrl-C)");
            exit_now(130);
        }
        eprintln!("\nmaskaq: stopping after the current step (Ctrl-C again to stop at once)");
    });
}

/// Ends the process without running exit handlers. `std::process::exit` from this handler thread
/// runs the C library's exit handlers and the GPU driver's destructors while the main thread is
/// still inside the driver; on lavapipe that corrupted the heap ("corrupted size vs. prev_size",
/// SIGABRT instead of exit code 130). Nothing is lost: every output is written atomically.
fn exit_now(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` takes no pointers and never returns; skipping exit handlers is the point.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// An error once Ctrl-C was pressed; loops call this between steps.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Tests only: as if Ctrl-C had been pressed (or not).
pub fn set_requested(v: bool) {
    REQUESTED.store(v, Ordering::SeqCst);
}
