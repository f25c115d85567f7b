//! Connection caps: how many client connections are open, in total and per client address,
//! and the short answer an over-cap connection gets before it is closed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[server] max_connections` are open.
    Total,
    /// `[server] max_connections_per_address` are open from this client address.
    PerAddress,
}

impl Refusal {
    /// The whole HTTP/1.1 response written to the socket before it is closed: an OpenAI-shaped
    /// JSON error (both SDKs read `error.message`), `Connection: close`, and a fresh request
    /// id like every other answer of the gateway.
    pub fn response(self) -> Vec<u8> {
        let (head, rest) = self
            .text()
            .split_at(self.text().find("\r\n").unwrap_or(0) + 2);
        let id = crate::telemetry::request_id::fresh();
        let mut out = Vec::with_capacity(self.text().len() + 64);
        out.extend_from_slice(head.as_bytes());
        for part in [
            crate::telemetry::request_id::HEADER,
            ": ",
            &id,
            "\r\n",
            rest,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    fn text(self) -> &'static str {
        match self {
            // Retry-After: other clients' connections end all the time; a second is enough
            // for SDK retry loops not to hammer, short enough not to stall them.
            Refusal::Total => concat!(
                "HTTP/1.1 503 Service Unavailable\r\n",
                "content-type: application/json\r\n",
                "retry-after: 1\r\n",
                "connection: close\r\n",
                "content-length: 131\r\n",
                "\r\n",
                r#"{"error":{"message":"the gateway has too many open connections","#,
                r#""type":"server_error","param":null,"code":"too_many_connections"}}"#,
                "\n",
            ),
            Refusal::PerAddress => concat!(
                "HTTP/1.1 429 Too Many Requests\r\n",
                "content-type: application/json\r\n",
                "retry-after: 1\r\n",
                "connection: close\r\n",
                "content-length: 142\r\n",
                "\r\n",
                r#"{"error":{"message":"too many open connections from this address","#,
                r#""type":"requests","param":null,"code":"too_many_connections_from_address"}}"#,
                "\n",
            ),
        }
    }
}

/// The open connections of one listener. Per-address counts exist only for addresses with a
/// connection open, so the table never holds more than `max_total` entries.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Caps of `max_total` connections, `max_per_address` of them from one client address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a connection from `peer`, held as long as the connection is open (an
    /// upgraded WebSocket connection included), or why there is none.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let address = client_address(peer);
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let count = open.by_address.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *count += 1;
        open.total += 1;
        Ok(Slot {
            admission: Arc::clone(self),
            address,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> (usize, usize) {
        let open = lock(&self.open);
        (open.total, open.by_address.len())
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.admission.open);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// The address a client is counted under: IPv4 as is (also when it comes IPv4-mapped on an
/// IPv6 socket), IPv6 by its /64, since one host is routinely given a whole /64.
fn client_address(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn lock(m: &Mutex<Open>) -> MutexGuard<'_, Open> {
    // The counts stay consistent under a panic elsewhere: each change is one statement.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refusals_are_whole_http_responses_with_a_json_body() {
        for refusal in [Refusal::Total, Refusal::PerAddress] {
            let response = refusal.response();
            let text = std::str::from_utf8(&response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{refusal:?}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(json["error"]["message"].is_string(), "{refusal:?}");
            assert!(head.contains("connection: close"));
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap();
            assert!(crate::telemetry::request_id::is_sane(id.as_bytes()), "{id}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
    }

    proptest! {
        // Any interleaving of opens and closes: the caps hold at every step, a refusal names
        // the cap that is full, and the table holds only addresses with open connections.
        #[test]
        fn caps_hold_and_the_table_shrinks(
            max_total in 1usize..12,
            max_per in 1usize..6,
            steps in proptest::collection::vec((0u8..5, any::<bool>(), any::<prop::sample::Index>()), 1..200),
        ) {
            let admission = Admission::new(max_total, max_per);
            let mut slots: Vec<(u8, Slot)> = Vec::new();
            for (host, open, pick) in steps {
                if open || slots.is_empty() {
                    let ip = IpAddr::from([127, 0, 0, host + 1]);
                    let from_host = slots.iter().filter(|(h, _)| *h == host).count();
                    match admission.admit(ip) {
                        Ok(slot) => {
                            prop_assert!(slots.len() < max_total && from_host < max_per);
                            slots.push((host, slot));
                        }
                        Err(Refusal::Total) => prop_assert_eq!(slots.len(), max_total),
                        Err(Refusal::PerAddress) => {
                            prop_assert!(slots.len() < max_total);
                            prop_assert_eq!(from_host, max_per);
                        }
                    }
                } else {
                    slots.swap_remove(pick.index(slots.len()));
                }
                let hosts: std::collections::HashSet<u8> = slots.iter().map(|(h, _)| *h).collect();
                prop_assert_eq!(admission.open(), (slots.len(), hosts.len()));
            }
            slots.clear();
            prop_assert_eq!(admission.open(), (0, 0));
        }
    }
}
