//! Each dialect's request translator (through the registry, `WireDialect`): a client's JSON
//! body -> the unified request (as a door reads it: `providers::parse::parse`) -> every dialect's upstream body, for a model known to reason,
//! known not to, and unknown. Byte 0: bits 0-1 pick the door's dialect (`Dialect::ALL`,
//! wrapping).
#![no_main]

use libfuzzer_sys::fuzz_target;
use providers::Dialect;
use providers::request::{AnthropicDefaults, Capabilities};

fuzz_target!(|data: &[u8]| {
    let [head, body @ ..] = data else {
        return;
    };
    let door = Dialect::ALL[usize::from(head & 3) % Dialect::ALL.len()];
    // As a door reads it: the bounded tree, then the dialect's reader.
    let Ok(request) = providers::parse::parse(door, body, 1 << 16) else {
        return;
    };
    let defaults = AnthropicDefaults::default();
    for upstream in Dialect::ALL {
        for reasons in [None, Some(true), Some(false)] {
            let caps = Capabilities { reasons };
            let _ = upstream
                .wire()
                .upstream_request(&request, "m", &defaults, caps);
        }
    }
});
