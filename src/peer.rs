//! Who is on the other end of an admin connection: the uid that owns the client socket.
//!
//! A Unix-socket client is named by the kernel itself (`SO_PEERCRED`). TCP has no such thing,
//! but on loopback both ends live in this kernel, so it can be asked who owns the client's
//! socket: one `NETLINK_SOCK_DIAG` request (`inet_diag`, what `ss` uses) naming the exact
//! 4-tuple, whose answer carries the owner's uid. Its cost does not depend on how many sockets
//! the host has open: strangers on the API port grow the socket table, and reading all of it
//! (`/proc/net/tcp`) made every admin connection pay for them (35 ms a request with 3,000 API
//! connections open, 31 ms per refused connection). `/proc/net` is still read, but only where
//! netlink is refused (a sandbox without `AF_NETLINK`): [`PeerLookup::probe`] decides once at
//! start, and `diagnose` says which is in use.
//!
//! Anything short of one clear answer is an error, and the admin port treats every error as
//! "forbidden": it fails closed.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use procfs::net::TcpNetEntry;

/// The most a sock_diag answer may take to arrive. The kernel answers during the send, so this
/// is never waited for in practice; it only bounds a kernel that does not.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a client's uid is not known. Every one of them means "forbidden".
#[derive(Debug)]
pub enum PeerError {
    NotLoopback(SocketAddr),
    /// The netlink query failed (not "no such socket": that is [`PeerError::NotFound`]).
    Query(io::Error),
    /// The kernel's answer is not an `inet_diag` message for the socket asked about.
    Answer(String),
    /// `/proc/net/tcp*` could not be read (the fallback only).
    Table(procfs::ProcError),
    NotFound(SocketAddr),
    /// `SO_PEERCRED` failed on a Unix-socket connection.
    Credentials(io::Error),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLoopback(peer) => write!(f, "peer {peer} is not on loopback"),
            Self::Query(e) => write!(f, "the sock_diag query for the client's socket failed: {e}"),
            Self::Answer(what) => write!(f, "the sock_diag answer cannot be used: {what}"),
            Self::Table(e) => write!(f, "cannot read the socket table in /proc/net: {e}"),
            Self::NotFound(peer) => write!(f, "the kernel knows no socket for peer {peer}"),
            Self::Credentials(e) => {
                write!(f, "cannot read the Unix socket's peer credentials: {e}")
            }
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Query(e) | Self::Credentials(e) => Some(e),
            Self::Table(e) => Some(e),
            Self::NotLoopback(_) | Self::Answer(_) | Self::NotFound(_) => None,
        }
    }
}

/// How TCP clients' uids are found on this host.
#[derive(Debug)]
pub enum Method {
    /// One `NETLINK_SOCK_DIAG` query per connection.
    SockDiag,
    /// Netlink was refused (the error says how): the whole of `/proc/net/tcp*` per connection.
    ProcNet(io::Error),
}

impl Method {
    /// One word for `/health` and `diagnose`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::SockDiag => "sock_diag",
            Self::ProcNet(_) => "proc_net",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SockDiag => f.write_str("netlink sock_diag (one exact query per connection)"),
            Self::ProcNet(e) => write!(
                f,
                "/proc/net/tcp, read whole per connection, because netlink is refused ({e}): \
                 allow AF_NETLINK (systemd: RestrictAddressFamilies=) so the cost of an admin \
                 connection does not grow with the host's socket table"
            ),
        }
    }
}

/// Finds the uid behind a loopback TCP connection, by the method this host allows.
#[derive(Debug)]
pub struct PeerLookup {
    method: Method,
}

impl PeerLookup {
    /// Opens a sock_diag socket once to learn whether netlink is allowed here. Refusal by a
    /// sandbox (`EAFNOSUPPORT`, `EACCES`, `EPERM`, `EPROTONOSUPPORT`) selects the `/proc/net`
    /// fallback; the choice holds for the life of the process.
    pub fn probe() -> Self {
        let method = match netlink_sys::Socket::new(NETLINK_SOCK_DIAG) {
            Ok(_) => Method::SockDiag,
            Err(e) => Method::ProcNet(e),
        };
        Self { method }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The uid owning the client socket of the connection from `peer` to `local`.
    pub fn uid_of(&self, peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerError> {
        if !peer.ip().is_loopback() {
            return Err(PeerError::NotLoopback(peer));
        }
        match self.method {
            Method::SockDiag => sock_diag_uid(peer, local),
            Method::ProcNet(_) => proc_net_uid(peer, local),
        }
    }
}

/// The uid of a Unix-socket client, as the kernel recorded it at `connect`.
pub fn unix_uid(stream: &UnixStream) -> Result<u32, PeerError> {
    rustix::net::sockopt::socket_peercred(stream)
        .map(|cred| cred.uid.as_raw())
        .map_err(|e| PeerError::Credentials(e.into()))
}

/// Asks the kernel for the one socket whose local end is `peer` and remote end is `local`
/// (the client's view of the connection): `inet_diag_req_v2` without `NLM_F_DUMP`, with the
/// cookie "unknown", is an exact lookup (`inet_diag_find_one_icsk`), not a walk of the table.
fn sock_diag_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerError> {
    let socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG).map_err(PeerError::Query)?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(QUERY_TIMEOUT),
    )
    .map_err(|e| PeerError::Query(e.into()))?;
    let wanted = socket_id(peer, local);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family: if peer.is_ipv4() { AF_INET } else { AF_INET6 },
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: wanted.clone(),
    });
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    // Sized by the packet itself, which is what `serialize` requires.
    let mut out = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut out);
    socket.send_to(&out, &netlink_sys::SocketAddr::new(0, 0), 0).map_err(PeerError::Query)?;
    let mut answer = vec![0u8; 8192];
    let len = socket.recv(&mut &mut answer[..], 0).map_err(PeerError::Query)?;
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(&answer[..len])
        .map_err(|e| PeerError::Answer(e.to_string()))?;
    match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
            let found = &response.header.socket_id;
            if found.source_port != wanted.source_port
                || found.destination_port != wanted.destination_port
                || !same_ip(found.source_address, peer.ip())
                || !same_ip(found.destination_address, local.ip())
            {
                return Err(PeerError::Answer(format!(
                    "it names {}:{} -> {}:{}, not the connection asked about",
                    found.source_address,
                    found.source_port,
                    found.destination_address,
                    found.destination_port
                )));
            }
            Ok(response.header.uid)
        }
        NetlinkPayload::Error(e) => match e.to_io() {
            e if e.kind() == io::ErrorKind::NotFound => Err(PeerError::NotFound(peer)),
            e => Err(PeerError::Query(e)),
        },
        other => Err(PeerError::Answer(format!("unexpected message {other:?}"))),
    }
}

/// The client's socket as sock_diag names it: its own end is the source.
fn socket_id(peer: SocketAddr, local: SocketAddr) -> SocketId {
    let mut id = if peer.is_ipv4() { SocketId::new_v4() } else { SocketId::new_v6() };
    id.source_port = peer.port();
    id.destination_port = local.port();
    id.source_address = peer.ip();
    id.destination_address = local.ip();
    // INET_DIAG_NOCOOKIE: any socket with this 4-tuple.
    id.cookie = [0xff; 8];
    id
}

/// Whether two addresses are the same, an IPv4 address and its IPv4-mapped IPv6 form alike.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The fallback: the client's socket is the entry whose local address is our peer and whose
/// remote address is our end, in a table read whole.
fn proc_net_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerError> {
    let table = match peer {
        SocketAddr::V4(_) => procfs::net::tcp(),
        SocketAddr::V6(_) => procfs::net::tcp6(),
    }
    .map_err(PeerError::Table)?;
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

    fn own_uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    fn connection(bind: &str) -> (TcpStream, SocketAddr, SocketAddr) {
        let listener = TcpListener::bind(bind).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        (client, peer, server_side.local_addr().unwrap())
    }

    #[test]
    fn sock_diag_finds_our_own_uid_for_our_own_connections() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let (_client, peer, local) = connection(bind);
            assert_eq!(sock_diag_uid(peer, local).unwrap(), own_uid(), "{bind}");
        }
        assert!(matches!(PeerLookup::probe().method(), Method::SockDiag));
    }

    #[test]
    fn the_proc_net_fallback_agrees() {
        let (_client, peer, local) = connection("127.0.0.1:0");
        assert_eq!(proc_net_uid(peer, local).unwrap(), own_uid());
    }

    #[test]
    fn an_unknown_connection_is_an_error() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let lookup = PeerLookup::probe();
        assert!(matches!(lookup.uid_of(peer, local), Err(PeerError::NotFound(_))));
        assert!(matches!(proc_net_uid(peer, local), Err(PeerError::NotFound(_))));
        let remote: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(matches!(lookup.uid_of(remote, local), Err(PeerError::NotLoopback(_))));
    }

    #[test]
    fn a_unix_client_is_named_by_its_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(unix_uid(&a).unwrap(), own_uid());
    }
}
