//! The node and the simulator drive the same `ShardHost`: a scripted list of inputs
//! fed through the node shard executor's call sequence and through the simulator's
//! gives the same events and the same datagrams, byte for byte. A change to either
//! driver's sequence that alters what a node does with a frame breaks this test.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use plumcore::ids::{MessageId, NodeId};
use plumcore::protocol::host::{HostConfig, HostEvent, HostTimer, PeerLayout, ShardHost};
use plumcore::protocol::{ProtocolConfig, Shard, Time};
use plumcore::topic::Topic;
use plumcore::wire::{self, Coalescer, Frame, Header, IHaveEntry};

const ME: NodeId = NodeId(1);
const A: NodeId = NodeId(2);
const B: NodeId = NodeId(3);
const STRANGER: NodeId = NodeId(9);

/// One scripted input, at a point of time.
#[derive(Clone)]
enum Input {
    NeighborUp(NodeId),
    NeighborDown(NodeId),
    /// A datagram of these frames from this peer (its shard 0).
    Datagram(NodeId, Vec<Frame>),
    Broadcast(MessageId),
    /// Cleanup, as the node's control core commands it and the simulator's host
    /// arms it.
    Cleanup,
}

/// What a driver drained, with when.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Event(Time, HostEvent),
    Datagram(Time, SocketAddr, Bytes),
}

fn layout(id: NodeId) -> PeerLayout {
    PeerLayout {
        control: SocketAddr::new(Ipv4Addr::new(10, 0, 0, id.0 as u8).into(), 7000),
        shards: 1,
    }
}

fn encode(sender: NodeId, frames: Vec<Frame>) -> Bytes {
    let mut c = Coalescer::new(Header::new(sender, 1), wire::DEFAULT_MTU);
    let mut out = Vec::new();
    for f in frames {
        c.push(f, &mut out).expect("scripted frames fit");
    }
    c.flush(&mut out);
    assert_eq!(out.len(), 1, "one scripted datagram");
    out.pop().expect("one datagram")
}

fn id(origin: u64, seq: u64) -> MessageId {
    MessageId {
        origin: NodeId(origin),
        seq,
    }
}

fn gossip(m: MessageId, round: u16) -> Frame {
    Frame::Gossip {
        id: m,
        round,
        topic: Topic::default(),
        payload: Bytes::from_static(b"payload"),
    }
}

fn ihave(m: MessageId, round: u16) -> Frame {
    Frame::IHave {
        entries: vec![IHaveEntry { id: m, round }],
    }
}

/// Periodic work the drivers schedule differently (the node's control core and
/// anti-entropy loop, the simulator's host timers at random phases) is off; cleanup
/// is scripted.
fn config() -> ProtocolConfig {
    ProtocolConfig {
        maintenance_interval: Duration::ZERO,
        anti_entropy_interval: Duration::ZERO,
        ..ProtocolConfig::default()
    }
}

fn host() -> ShardHost {
    let cfg = config();
    let all = plumcore::ids::owned_mask(0, 1, cfg.partitions);
    let shard = Shard::new(ME, all, cfg, 42).expect("valid config");
    ShardHost::new(
        shard,
        HostConfig {
            header: Header::new(ME, 1),
            mtu: wire::DEFAULT_MTU,
        },
        42,
    )
}

fn script() -> Vec<(Time, Input)> {
    let ms = Duration::from_millis;
    let p = id(5, 0).partition(config().partitions);
    vec![
        (ms(0), Input::NeighborUp(A)),
        (ms(0), Input::NeighborUp(B)),
        // A pushes a message: delivered, relayed to B.
        (ms(10), Input::Datagram(A, vec![gossip(id(5, 0), 1)])),
        // B announces one this node lacks: a graft wait, then a Graft to B.
        (ms(20), Input::Datagram(B, vec![ihave(id(6, 0), 2)])),
        // A stranger's announcement is dropped (no graft could reach it); its push
        // is delivered.
        (ms(30), Input::Datagram(STRANGER, vec![ihave(id(7, 0), 1)])),
        (ms(35), Input::Datagram(STRANGER, vec![gossip(id(9, 0), 0)])),
        // A asks for the message it pushed; B sends it again and prunes.
        (
            ms(40),
            Input::Datagram(
                A,
                vec![Frame::Graft {
                    id: id(5, 0),
                    round: 1,
                    request: true,
                }],
            ),
        ),
        (ms(50), Input::Datagram(B, vec![gossip(id(5, 0), 3)])),
        (
            ms(55),
            Input::Datagram(B, vec![Frame::Prune { partition: p }]),
        ),
        (ms(1500), Input::Broadcast(id(1, 0))),
        (ms(1600), Input::Cleanup),
        // B answers the graft late; then A leaves.
        (ms(1700), Input::Datagram(B, vec![gossip(id(6, 0), 2)])),
        (ms(2000), Input::NeighborDown(A)),
        (ms(2100), Input::Broadcast(id(1, 1))),
        (ms(2200), Input::Datagram(A, vec![gossip(id(5, 1), 1)])),
    ]
}

/// How long after the last input timers still run.
const TAIL: Duration = Duration::from_secs(10);

fn drain(h: &mut ShardHost, now: Time, out: &mut Vec<Out>) {
    while let Some(e) = h.poll_event() {
        out.push(Out::Event(now, e));
    }
    while let Some((a, d)) = h.poll_datagram() {
        out.push(Out::Datagram(now, a, d));
    }
}

/// Both drivers' pump: flush, then drain events, then datagrams.
fn pump(h: &mut ShardHost, now: Time, out: &mut Vec<Out>) {
    h.flush();
    drain(h, now, out);
}

/// Both drivers' wake-ups: fire every host timer due by `t`, each at its own time.
fn wake_until(h: &mut ShardHost, t: Time, out: &mut Vec<Out>) {
    while let Some(at) = h.next_timeout().filter(|&at| at <= t) {
        h.fire_due(at);
        pump(h, at, out);
    }
}

/// Both drivers' host call for one input: the same method with the same arguments.
fn apply(h: &mut ShardHost, now: Time, input: &Input) {
    match input {
        Input::Datagram(from, frames) => {
            let bytes = encode(*from, frames.clone());
            let src = layout(*from).shard_addr(0);
            h.receive_bytes(now, src, &bytes, false)
                .expect("scripted datagrams decode");
        }
        Input::NeighborUp(p) => h.neighbor_up(now, *p, layout(*p)),
        Input::NeighborDown(p) => h.neighbor_down(now, *p),
        Input::Broadcast(m) => h
            .broadcast(now, *m, Topic::default(), Bytes::from_static(b"mine"))
            .expect("valid broadcast"),
        Input::Cleanup => h.fire(now, HostTimer::Cleanup),
    }
}

/// Runs `script` through one driver's sequence: before each input the wake-ups due
/// by then, then the input's host call, then `after` (what that driver does between
/// the call and the pump), then the pump; last, the timers of the [`TAIL`].
fn drive(
    script: &[(Time, Input)],
    after: impl Fn(&mut ShardHost, Time, &Input),
) -> (Vec<Out>, ShardHost) {
    let mut h = host();
    let mut out = Vec::new();
    for (now, input) in script {
        let now = *now;
        wake_until(&mut h, now, &mut out);
        apply(&mut h, now, input);
        after(&mut h, now, input);
        pump(&mut h, now, &mut out);
    }
    let end = script.last().expect("a script").0 + TAIL;
    wake_until(&mut h, end, &mut out);
    (out, h)
}

/// The shard executor's sequence (`node/shard/exec.rs`): commands run in the tick
/// loop (command, then due timers, then the pump); a datagram runs in the receive
/// path (`receive_bytes`, then the pump); the tick loop wakes at the host's next
/// timeout and fires what is due. The pump flushes, then drains events, then
/// datagrams.
fn run_as_node(script: &[(Time, Input)]) -> (Vec<Out>, ShardHost) {
    drive(script, |h, now, input| {
        if !matches!(input, Input::Datagram(..)) {
            h.fire_due(now);
        }
    })
}

/// The simulator's sequence (`sim/runner.rs`): every event (a membership view
/// change, a datagram, a broadcast, a wake-up at the host's earliest timer) is one
/// host call and one pump, in virtual-time order; at equal times a wake-up armed
/// earlier runs first.
fn run_as_sim(script: &[(Time, Input)]) -> (Vec<Out>, ShardHost) {
    drive(script, |_, _, _| {})
}

#[test]
fn node_and_simulator_sequences_give_identical_outputs() {
    let script = script();
    let (node, node_host) = run_as_node(&script);
    let (sim, sim_host) = run_as_sim(&script);
    assert_eq!(node, sim);
    assert_eq!(node_host.stats(), sim_host.stats());
    assert_eq!(
        format!("{:?}", node_host.shard().stats()),
        format!("{:?}", sim_host.shard().stats())
    );

    // The script exercised what it claims: deliveries (A's push, the stranger's
    // push, the grafted message, a push from A after it left), the stranger rule, a Graft to B, and sends to
    // neighbours only.
    let delivered: Vec<MessageId> = node
        .iter()
        .filter_map(|o| match o {
            Out::Event(_, HostEvent::Deliver { id, .. }) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [id(5, 0), id(9, 0), id(6, 0), id(5, 1)]);
    // The stranger's two datagrams and A's after it left.
    let hs = node_host.stats();
    assert_eq!((hs.unknown_senders, hs.ihave_unknown_sender), (3, 1));
    let mut grafted_b = false;
    let mut sent_gossip = 0;
    for o in &node {
        let Out::Datagram(_, addr, bytes) = o else {
            continue;
        };
        assert!(
            [layout(A).shard_addr(0), layout(B).shard_addr(0)].contains(addr),
            "sent to a non-neighbour: {addr}"
        );
        for f in wire::decode(bytes).expect("decodable").frames {
            match f {
                Frame::Graft { id: g, .. } if *addr == layout(B).shard_addr(0) => {
                    grafted_b |= g == id(6, 0);
                }
                Frame::Gossip { .. } => sent_gossip += 1,
                _ => {}
            }
        }
    }
    assert!(grafted_b, "no graft to B for its announcement");
    assert!(sent_gossip >= 3, "relays and broadcasts: {sent_gossip}");
}
