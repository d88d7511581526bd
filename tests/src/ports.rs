//! Free TCP ports on 127.0.0.1 for the processes a test starts.

use std::net::{SocketAddr, TcpListener};

/// A port that was free a moment ago: bound to `127.0.0.1:0`, read back and released. Another process
/// could take it before the test's process binds it; the window is short and every process fails
/// loudly (its log says which address it could not bind) when that happens.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:<free port>`.
///
/// # Errors
/// When no port can be bound.
pub fn free_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound_again() {
        let addr = free_addr().expect("free port");
        assert_ne!(addr.port(), 0);
        TcpListener::bind(addr).expect("the port is free after release");
    }
}
