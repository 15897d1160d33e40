//! Two plumcore nodes embedded in one program: the second joins the first, each
//! subscribes, and a message published on one is delivered on both.
//!
//! `cargo run --example embed` (binds free ports on 127.0.0.1; prints what it saw).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plumcore::node::config::NodeConfig;
use plumcore::node::embed::Node;
use plumcore::node::subscribe::{Event, Subscription};

fn config(port: u16, seed: Option<SocketAddr>) -> NodeConfig {
    NodeConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        shards: Some(1),
        seeds: seed.into_iter().map(Into::into).collect(),
        log_level: "warn".into(),
        ..NodeConfig::default()
    }
}

/// The first message event within `limit`.
fn next_message(sub: &Subscription, limit: Duration) -> Option<Event> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match sub.recv_timeout(left)? {
            e @ Event::Message { .. } => return Some(e),
            other => println!("event: {other:?}"),
        }
    }
    None
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut taken = Vec::new();
    let a_port = plumcore::harness::ports::free_udp_run(2, &mut taken)?;
    let b_port = plumcore::harness::ports::free_udp_run(2, &mut taken)?;
    let a = Node::start(config(a_port, None))?;
    let b = Node::start(config(
        b_port,
        Some(SocketAddr::from(([127, 0, 0, 1], a_port))),
    ))?;
    let (on_a, on_b) = (a.subscribe("greetings.>")?, b.subscribe("greetings.>")?);
    // Wait until b has a neighbour, then publish on it.
    let t = Instant::now();
    while b.members().active.is_empty() {
        if t.elapsed() > Duration::from_secs(20) {
            return Err("node b did not join node a within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = b.publish("greetings.b", b"hello from b")?;
    for (name, sub) in [("a", &on_a), ("b", &on_b)] {
        match next_message(sub, Duration::from_secs(10)) {
            Some(Event::Message {
                id: got,
                origin,
                hops,
                topic,
                payload,
            }) if got == id => println!(
                "{name} delivered {:?} on {topic} from {origin:?} after {hops} hop(s)",
                String::from_utf8_lossy(&payload)
            ),
            other => return Err(format!("{name}: expected message {id:?}, got {other:?}").into()),
        }
    }
    b.shutdown();
    a.shutdown();
    Ok(())
}
