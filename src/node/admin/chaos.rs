//! The test-only chaos routes (403 unless the node runs with `--chaos`):
//! `/chaos/faults`, `/chaos/partition` and `POST /chaos/panic/{loop}`.

use hyper::Method;
use serde_json::json;

use super::reply::Reply;
use crate::node::net::socket::{AddrRange, FaultRates, FaultSwitch};
use crate::node::snapshot::{AdminBackend, ChaosRefused};

/// The answer to `path` when it is a chaos route, `None` otherwise.
pub(super) fn route(
    method: &Method,
    path: &str,
    body: &[u8],
    backend: &dyn AdminBackend,
) -> Option<Reply> {
    if path == "/chaos/faults" || path == "/chaos/partition" {
        return Some(faults_or_partition(method, path, body, backend));
    }
    let name = path.strip_prefix("/chaos/panic/")?;
    Some(panic(method, name, backend))
}

/// `POST /chaos/panic/{loop}`: the named loop panics once on its next run.
fn panic(method: &Method, name: &str, backend: &dyn AdminBackend) -> Reply {
    if *method != Method::POST {
        return Reply::error(405, "method not allowed").with_header("Allow", "POST");
    }
    match backend.inject_panic(name) {
        Ok(()) => Reply::json(200, &json!({ "panicking": name })),
        Err(e @ ChaosRefused::Disabled) => Reply::error(403, &e.to_string()),
        Err(e @ ChaosRefused::UnknownLoop(_)) => Reply::error(404, &e.to_string()),
    }
}

/// `/chaos/faults` (GET the settings, POST `FaultRates` JSON to replace the random
/// faults) and `/chaos/partition` (GET the cuts, POST `{"peers": [ADDR, ...]}` to cut
/// links, DELETE to heal them all). 403 without `--chaos`.
fn faults_or_partition(
    method: &Method,
    path: &str,
    body: &[u8],
    backend: &dyn AdminBackend,
) -> Reply {
    let allow = if path == "/chaos/faults" {
        "GET, POST"
    } else {
        "GET, POST, DELETE"
    };
    let allowed = match *method {
        Method::GET | Method::POST => true,
        Method::DELETE => path == "/chaos/partition",
        _ => false,
    };
    if !allowed {
        return Reply::error(405, "method not allowed").with_header("Allow", allow);
    }
    let switch = match backend.faults() {
        Ok(s) => s,
        Err(e) => return Reply::error(403, &e.to_string()),
    };
    let show = |switch: &FaultSwitch| {
        let c = switch.current();
        json!({
            "rates": c.rates,
            "cuts": c.cuts.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        })
    };
    if *method == Method::DELETE {
        switch.heal();
        return Reply::json(200, &show(&switch));
    }
    if *method == Method::POST {
        let done = if path == "/chaos/faults" {
            match serde_json::from_slice::<FaultRates>(body) {
                Ok(rates) => switch.set_rates(rates).map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not fault rates JSON: {e}")),
            }
        } else {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Cut {
                peers: Vec<String>,
            }
            match serde_json::from_slice::<Cut>(body) {
                Ok(c) => c
                    .peers
                    .iter()
                    .map(|p| p.parse::<AddrRange>())
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|cuts| switch.cut(cuts))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not {{\"peers\": [ADDR, ...]}}: {e}")),
            }
        };
        if let Err(e) = done {
            return Reply::error(400, &e);
        }
    }
    Reply::json(200, &show(&switch))
}
