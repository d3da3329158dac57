//! Who is on the other end of a loopback TCP connection: the uid that owns the client socket.
//!
//! TCP has no `SO_PEERCRED`, but on loopback both ends live in this kernel, and the socket
//! table (`/proc/net/tcp` and `/proc/net/tcp6`, read through `procfs`) lists the client's socket
//! with its local and remote address and its owner's uid. The client's socket is the entry whose
//! local address is our peer and whose remote address is our end. Anything short of one clear
//! answer is an error, and the admin port treats every error as "forbidden": it fails closed.
//! This needs `/proc/net` readable: under systemd, `ProcSubset=pid` would hide it.

use std::fmt;
use std::net::SocketAddr;

use procfs::net::TcpNetEntry;

#[derive(Debug)]
pub enum PeerError {
    NotLoopback(SocketAddr),
    Table(String),
    NotFound(SocketAddr),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLoopback(peer) => write!(f, "peer {peer} is not on loopback"),
            Self::Table(e) => write!(f, "cannot read the socket table in /proc/net: {e}"),
            Self::NotFound(peer) => write!(f, "no socket for peer {peer} in /proc/net"),
        }
    }
}

impl std::error::Error for PeerError {}

/// The uid owning the client socket of the connection from `peer` to `local`.
pub fn uid_of(peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerError> {
    if !peer.ip().is_loopback() {
        return Err(PeerError::NotLoopback(peer));
    }
    let table = match peer {
        SocketAddr::V4(_) => procfs::net::tcp(),
        SocketAddr::V6(_) => procfs::net::tcp6(),
    }
    .map_err(|e| PeerError::Table(e.to_string()))?;
    find_owner(&table, peer, local).ok_or(PeerError::NotFound(peer))
}

fn find_owner(table: &[TcpNetEntry], peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let mut owners = table
        .iter()
        .filter(|e| e.local_address == peer && e.remote_address == local)
        .map(|e| e.uid);
    let uid = owners.next()?;
    // Two entries for one 4-tuple cannot happen for live sockets; if the table ever says so,
    // refuse rather than pick one.
    owners.all(|other| other == uid).then_some(uid)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn finds_our_own_uid_for_our_own_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = uid_of(peer, server_side.local_addr().unwrap()).unwrap();
        assert_eq!(uid, rustix::process::getuid().as_raw());
    }

    #[test]
    fn an_unknown_connection_is_an_error() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(matches!(uid_of(peer, local), Err(PeerError::NotFound(_))));
        let remote: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(matches!(uid_of(remote, local), Err(PeerError::NotLoopback(_))));
    }
}
