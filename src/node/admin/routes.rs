//! The admin routes: what each path answers, given the node behind
//! [`AdminBackend`]. The server has already checked the token and read the body.

use hyper::Method;
use serde_json::{json, Value};

use super::chaos;
use super::context::{bump, Ctx};
use super::metrics::{encode_metrics, METRICS_CONTENT_TYPE};
use super::reply::Reply;
use crate::node::batch::parse_batch;
use crate::node::snapshot::{
    id_hex, AdminBackend, BroadcastRefused, LoopControlRefused, NodeSnapshot,
};
use crate::topic::Topic;

/// The snapshot the backend gives, with the admin plane's own counters.
fn snapshot(ctx: &Ctx) -> NodeSnapshot {
    let mut s = ctx.backend.snapshot();
    s.admin = ctx.counters.load();
    s
}

/// The reply to one request.
pub(super) fn route(method: &Method, path: &str, query: &str, body: &[u8], ctx: &Ctx) -> Reply {
    let backend = ctx.backend.as_ref();
    if let Some(reply) = chaos::route(method, path, body, backend) {
        return reply;
    }
    if let Some(rest) = path.strip_prefix("/loops/") {
        return loop_control(method, rest, backend);
    }
    let allowed = match path {
        "/metrics" | "/status" | "/peers" | "/members" | "/loops" => Method::GET,
        "/broadcast" | "/broadcast/batch" => Method::POST,
        _ => return Reply::error(404, "not found"),
    };
    if *method != allowed {
        let allow = if allowed == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return Reply::error(405, "method not allowed").with_header("Allow", allow);
    }
    match path {
        "/metrics" => Reply {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: encode_metrics(&snapshot(ctx)).into_bytes(),
            headers: Vec::new(),
        },
        "/status" => Reply::json(200, &status_json(&snapshot(ctx))),
        "/peers" => Reply::json(
            200,
            &serde_json::to_value(&backend.snapshot().peers).unwrap_or(Value::Null),
        ),
        "/members" => Reply::json(200, &members_json(&backend.snapshot())),
        "/loops" => Reply::json(200, &loops_json(&backend.snapshot())),
        _ if !matches!(path, "/broadcast" | "/broadcast/batch") => Reply::error(404, "not found"),
        _ => {
            let topic = match topic_param(query) {
                Ok(t) => t,
                Err(e) => {
                    bump(&ctx.counters.bad_request);
                    return Reply::error(400, &e);
                }
            };
            if path == "/broadcast/batch" {
                return broadcast_batch(body, topic, ctx);
            }
            if body.is_empty() && !ctx.limits.allow_empty {
                bump(&ctx.counters.empty_payload);
                return Reply::error(
                    400,
                    "empty payload refused (start the node with allow_empty = true / --allow-empty to accept empty broadcasts)",
                );
            }
            broadcast(body, topic, backend)
        }
    }
}

/// The `topic` query parameter of `/broadcast` and `/broadcast/batch` (`default`
/// without one), percent-decoded and checked.
fn topic_param(query: &str) -> Result<Topic, String> {
    let mut topic = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "topic" {
            let v = percent_decode(v)
                .ok_or("query parameter `topic` is not valid percent-encoded UTF-8")?;
            topic =
                Some(Topic::new(&v).map_err(|e| format!("query parameter `topic` ({v:?}): {e}"))?);
        }
    }
    Ok(topic.unwrap_or_default())
}

/// Decodes `%XX` escapes and `+` (a space, which a topic then refuses).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `POST /loops/{name}/pause` and `POST /loops/{name}/resume` (`rest` is what
/// follows `/loops/`). Loop names may hold a `/` (`shard-0/tick`), so the action is
/// the last segment.
fn loop_control(method: &Method, rest: &str, backend: &dyn AdminBackend) -> Reply {
    let Some((name, action)) = rest.rsplit_once('/') else {
        return Reply::error(404, "not found (POST /loops/{name}/pause or /resume)");
    };
    let pause = match action {
        "pause" => true,
        "resume" => false,
        _ => return Reply::error(404, "not found (POST /loops/{name}/pause or /resume)"),
    };
    if *method != Method::POST {
        return Reply::error(405, "method not allowed").with_header("Allow", "POST");
    }
    match backend.set_loop_paused(name, pause) {
        Ok(info) => Reply::json(200, &serde_json::to_value(&info).unwrap_or(Value::Null)),
        Err(e @ LoopControlRefused::Unknown(_)) => Reply::error(404, &e.to_string()),
        Err(e @ LoopControlRefused::NotPausable(_)) => Reply::error(409, &e.to_string()),
        Err(e @ (LoopControlRefused::Timeout(_) | LoopControlRefused::Busy)) => {
            Reply::error(503, &e.to_string()).with_header("retry-after", "1")
        }
        Err(e @ LoopControlRefused::ShuttingDown) => Reply::error(503, &e.to_string()),
    }
}

/// LoopManager totals over every loop the node lists (control core and shards):
/// `total_loops`, `running_loops` (alive, not paused), `paused_loops`, `error_loops`
/// (last run failed), as the loop-manager reference reports them.
pub fn loop_totals(s: &NodeSnapshot) -> Value {
    let l = &s.loops;
    json!({
        "total_loops": l.len(),
        "running_loops": l.iter().filter(|l| l.running && !l.paused).count(),
        "paused_loops": l.iter().filter(|l| l.paused).count(),
        "error_loops": l.iter().filter(|l| l.consecutive_errors > 0).count(),
    })
}

/// The `/loops` document: the totals of [`loop_totals`] plus `loops`, the list.
pub fn loops_json(s: &NodeSnapshot) -> Value {
    let mut v = loop_totals(s);
    if let Value::Object(map) = &mut v {
        map.insert(
            "loops".into(),
            serde_json::to_value(&s.loops).unwrap_or(Value::Null),
        );
    }
    v
}

/// The `/members` document: this node's id and address, then the HyParView views
/// (active and passive, each member with address, shard count, state and last
/// heard), the join state, the address book's fill and the membership counters.
pub fn members_json(s: &NodeSnapshot) -> Value {
    let mut v = serde_json::to_value(&s.membership).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("node_id".into(), json!(s.node_id));
        map.insert("node_name".into(), json!(s.node_name));
        map.insert("addr".into(), json!(s.addr));
    }
    v
}

/// `POST /broadcast/batch`: the body is checked whole first (400 naming the first bad
/// entry, nothing broadcast); then the payloads are broadcast in order. A refusal
/// part-way stops there: the ids accepted so far come back with the index and reason
/// of the refusal, so the client resends from that index (with none accepted, the
/// answer is the single broadcast's error).
fn broadcast_batch(body: &[u8], topic: Topic, ctx: &Ctx) -> Reply {
    let backend = ctx.backend.as_ref();
    let payloads = match parse_batch(body, backend.max_payload(), ctx.limits.allow_empty) {
        Ok(p) => p,
        Err(e) => {
            bump(&ctx.counters.bad_request);
            return Reply::error(400, &e.to_string());
        }
    };
    let mut ids = Vec::with_capacity(payloads.len());
    for (index, p) in payloads.iter().enumerate() {
        match backend.broadcast(topic.clone(), p.to_vec()) {
            Ok(id) => ids.push(id_hex(id)),
            Err(e) if index == 0 => return refused(e),
            Err(e) => {
                return Reply::json(
                    200,
                    &json!({
                        "ids": ids,
                        "accepted": index,
                        "refused": { "index": index, "error": e.to_string() },
                    }),
                )
            }
        }
    }
    Reply::json(200, &json!({ "ids": ids, "accepted": payloads.len() }))
}

/// The answer to a refused broadcast.
fn refused(e: BroadcastRefused) -> Reply {
    match e {
        e @ (BroadcastRefused::TooLarge { .. } | BroadcastRefused::DoesNotFit { .. }) => {
            Reply::error(413, &e.to_string())
        }
        e @ BroadcastRefused::ShuttingDown => Reply::error(503, &e.to_string()),
        e @ BroadcastRefused::Backpressure => {
            Reply::error(503, &e.to_string()).with_header("Retry-After", "1")
        }
    }
}

fn broadcast(body: &[u8], topic: Topic, backend: &dyn AdminBackend) -> Reply {
    match backend.broadcast(topic, body.to_vec()) {
        Ok(id) => Reply::json(200, &json!({ "id": id_hex(id) })),
        Err(e) => refused(e),
    }
}

/// The `/status` document: the snapshot as serialized, except that `peers` becomes
/// `{"eager": <sum of eager_partitions>, "lazy": <sum of lazy_partitions>,
/// "eager_peers": <distinct peers eager somewhere>, "lazy_peers": <distinct peers lazy
/// somewhere>, "list": [...]}`, and `loop_manager` holds [`loop_totals`].
pub fn status_json(s: &NodeSnapshot) -> Value {
    let eager: u64 = s.peers.iter().map(|p| u64::from(p.eager_partitions)).sum();
    let lazy: u64 = s.peers.iter().map(|p| u64::from(p.lazy_partitions)).sum();
    let (eager_peers, lazy_peers) = super::metrics::distinct_peers(s);
    let list = serde_json::to_value(&s.peers).unwrap_or(Value::Null);
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert(
            "peers".into(),
            json!({
                "eager": eager,
                "lazy": lazy,
                "eager_peers": eager_peers,
                "lazy_peers": lazy_peers,
                "list": list,
            }),
        );
        map.insert("loop_manager".into(), loop_totals(s));
    }
    v
}
