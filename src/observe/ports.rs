//! The host's TCP sockets, read from /proc/net/tcp and tcp6: ports a new host port
//! must not take.

use std::collections::BTreeSet;

/// Ports a TCP socket of this host holds, listening or connected (an outgoing
/// connection's local port cannot be bound either), from /proc/net/tcp and tcp6.
pub fn listening() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse_proc_net_tcp(&text));
        }
    }
    out
}

/// The local ports of the sockets in a /proc/net/tcp table, but those in TIME_WAIT
/// (06) and CLOSE (07), which hold nothing a listener's bind cares about.
fn parse_proc_net_tcp(text: &str) -> BTreeSet<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            if matches!(*state, "06" | "07") {
                return None;
            }
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_proc() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
           1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000\n\
           2: 0100007F:1F42 0100007F:9C41 06 00000000:00000000 00:00000000 00000000\n";
        // Listening, and connected: both hold their port; TIME_WAIT does not.
        assert_eq!(parse_proc_net_tcp(table), BTreeSet::from([8000, 8001]));
    }

    #[test]
    fn a_port_this_process_listens_on_is_reported() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        // IPv6 sockets are in /proc/net/tcp6; a host without IPv6 has no loopback for it.
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let found = listening();
        assert!(
            found.contains(&v4_port),
            "127.0.0.1:{v4_port} listens but is not reported: {found:?}"
        );
        if let Some(v6) = &v6 {
            let v6_port = v6.local_addr().unwrap().port();
            assert!(
                found.contains(&v6_port),
                "[::1]:{v6_port} listens but is not reported: {found:?}"
            );
        }
    }
}
