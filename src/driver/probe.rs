//! Decides whether io_uring can run here, and says why not when it cannot:
//! it may be disabled by sysctl, filtered by seccomp (containers), or the
//! kernel may lack an opcode or the buffer rings the driver needs; and
//! resolves `--backend` from that.

use io_uring::{opcode, IoUring, Probe};

use crate::config::Backend;

/// Resolves `--backend auto` to the best driver this kernel allows, logging
/// why when it has to fall back; an explicit `uring` that cannot run is an
/// error.
pub(crate) fn resolve_backend(requested: Backend) -> Result<Backend, String> {
    match requested {
        Backend::Epoll => Ok(Backend::Epoll),
        Backend::Uring => probe_uring()
            .map(|()| Backend::Uring)
            .map_err(|why| format!("--backend uring: {why}")),
        Backend::Auto => match probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(why) => {
                tracing::warn!("using epoll: {why}");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// Probes io_uring on a thread of its own: tearing the probe ring down
/// leaves task work that interrupts the creating thread's next timed
/// socket call with EINTR, and that thread may be an embedder's.
fn probe_uring() -> Result<(), String> {
    std::thread::spawn(uring_support)
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

/// Ok when every io_uring feature the driver uses works; otherwise the reason.
pub(crate) fn uring_support() -> Result<(), String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if v.trim() == "2" {
            return Err("io_uring is disabled (kernel.io_uring_disabled=2)".into());
        }
    }
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "multishot accept"),
        (opcode::RecvMulti::CODE, "multishot recv"),
        (opcode::Send::CODE, "send"),
        (opcode::SendZc::CODE, "send_zc"),
        (opcode::AsyncCancel::CODE, "cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("the kernel lacks io_uring {name}"));
        }
    }
    let bufs = super::uring::buf_ring::BufRing::new(&ring, 2, 64, 0, false)
        .map_err(|e| format!("provided-buffer rings unavailable: {e}"))?;
    bufs.unregister(&ring);
    Ok(())
}
