//! `socket` (hostile guest): tries the network through raw `wasi:sockets` calls (the
//! message field `port` names a TCP port on 127.0.0.1 to connect to, e.g. the broker's):
//! a TCP socket and connect, a UDP socket, and a DNS lookup. The host grants no network,
//! so each must be refused; the guest fails with `denied: ...` listing what it saw, or
//! returns `BREACH` when anything worked.

use cannon_guest::{Fields, Message, Task};
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::ip_name_lookup::resolve_addresses;
use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::tcp_create_socket::create_tcp_socket;
use wasi::sockets::udp_create_socket::create_udp_socket;

struct Socket;

impl Task for Socket {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let port: u16 = msg
            .get("port")
            .unwrap_or("6379")
            .parse()
            .map_err(|e| format!("port: {e}"))?;
        let network = instance_network();
        let mut denied = Vec::new();
        let mut breach = Vec::new();
        match create_tcp_socket(IpAddressFamily::Ipv4) {
            Err(code) => denied.push(format!("tcp socket: {code:?}")),
            Ok(socket) => {
                let addr = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port,
                    address: (127, 0, 0, 1),
                });
                match socket.start_connect(&network, addr) {
                    Err(code) => denied.push(format!("tcp connect: {code:?}")),
                    Ok(()) => {
                        socket.subscribe().block();
                        match socket.finish_connect() {
                            Err(code) => denied.push(format!("tcp connect: {code:?}")),
                            Ok(_) => breach.push(format!("connected to 127.0.0.1:{port}")),
                        }
                    }
                }
            }
        }
        match create_udp_socket(IpAddressFamily::Ipv4) {
            Err(code) => denied.push(format!("udp socket: {code:?}")),
            Ok(_) => breach.push("created a UDP socket".to_owned()),
        }
        match resolve_addresses(&network, "localhost") {
            Err(code) => denied.push(format!("dns: {code:?}")),
            Ok(_) => breach.push("started a DNS lookup".to_owned()),
        }
        if breach.is_empty() {
            Err(format!("denied: {}", denied.join("; ")))
        } else {
            Ok(vec![(
                "got".to_owned(),
                format!("BREACH: {}", breach.join("; ")),
            )])
        }
    }
}

cannon_guest::export_task!(Socket);
