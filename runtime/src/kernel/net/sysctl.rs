//! Per-namespace sysctls, written from a thread inside the namespace:
//! `/proc/sys/net` shows the network namespace of whoever opens it.

use crate::kernel::KernelError;

/// Ports below this need `CAP_NET_BIND_SERVICE` over the namespace's
/// owner, the host's user namespace, which sandbox root never has; 0
/// lets the sandbox's root (and every other user in it) bind any port,
/// like root on a machine of its own.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Lets every process in the calling thread's network namespace bind
/// low ports (the knob covers IPv6 too).
pub fn allow_unprivileged_low_ports() -> Result<(), KernelError> {
    std::fs::write(UNPRIVILEGED_PORT_START, b"0")
        .map_err(|e| KernelError::setup_io("write", UNPRIVILEGED_PORT_START, &e))
}
