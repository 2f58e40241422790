//! Decides whether io_uring can run here, and says why not when it cannot:
//! it may be disabled by sysctl, filtered by seccomp (containers), or the
//! kernel may lack an opcode or the buffer rings the driver needs.

use io_uring::{opcode, IoUring, Probe};

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
