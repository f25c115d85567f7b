//! Safe by default: without gateway keys, the gateway listens only on loopback unless the
//! operator says otherwise (`--allow-open` or `[server] open = true`).

use std::net::SocketAddr;

use crate::config::Config;

/// A listen address that would expose the gateway without gateway keys.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {addr} ({setting}): it is not a loopback address and no gateway \
     keys are configured, so anyone who reaches it would spend the provider keys; configure \
     gateway keys, listen on 127.0.0.1, or set `[server] open = true` (or pass --allow-open)"
)]
pub struct ExposureError {
    /// The refused address.
    pub addr: SocketAddr,
    /// The setting that named it.
    pub setting: &'static str,
}

/// Checks `[server] listen` and `admin_listen` against `[server] open` and the gateway keys;
/// logs a warning when the gateway is open to the network without keys (at every start).
pub fn check(config: &Config) -> Result<(), ExposureError> {
    let server = &config.server;
    check_addrs(config, server.listen, server.admin_listen, true)
}

/// [`check`] for the addresses actually bound (a library caller may bind its own listener),
/// without the warning.
pub fn check_bound(
    config: &Config,
    main: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<(), ExposureError> {
    check_addrs(config, main, admin, false)
}

fn check_addrs(
    config: &Config,
    main: SocketAddr,
    admin: Option<SocketAddr>,
    warn: bool,
) -> Result<(), ExposureError> {
    let exposed = std::iter::once((main, MAIN))
        .chain(admin.map(|a| (a, ADMIN)))
        .filter(|(addr, _)| !addr.ip().is_loopback());
    for (addr, setting) in exposed {
        if !config.server.open {
            // The admin listener is guarded by its own key, never by gateway keys.
            if setting == ADMIN || !config.has_gateway_keys() {
                return Err(ExposureError { addr, setting });
            }
        } else if warn && !config.has_gateway_keys() {
            tracing::warn!(
                %addr,
                setting,
                "open to the network without gateway keys: anyone who reaches this port \
                 spends the provider keys"
            );
        }
    }
    Ok(())
}

const MAIN: &str = "[server] listen";
const ADMIN: &str = "[server] admin_listen";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
            Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            (0u8..=255).prop_map(|o| IpAddr::V4(Ipv4Addr::new(127, o, 1, 2))),
        ]
    }

    proptest! {
        #[test]
        fn only_loopback_without_open(ip in any_ip(), admin in proptest::option::of(any_ip()),
                                      port in 0u16.., open: bool) {
            let mut config = Config::default();
            config.server.listen = SocketAddr::new(ip, port);
            config.server.admin_listen = admin.map(|a| SocketAddr::new(a, port));
            config.server.open = open;
            let all_loopback = ip.is_loopback() && admin.is_none_or(|a| a.is_loopback());
            let result = check(&config);
            prop_assert_eq!(result.is_ok(), open || all_loopback);
            if let Err(e) = result {
                let text = e.to_string();
                prop_assert!(text.contains("[server] open") && text.contains("--allow-open"));
                prop_assert!(!e.addr.ip().is_loopback());
            }
        }
    }
}
