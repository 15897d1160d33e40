//! Refused broadcasts, misrouted frames, cleanup, the bounds on every queue and set,
//! and configuration errors.

use super::*;

#[test]
fn broadcast_rejects_oversized_unowned_and_reused_ids() {
    let mut s = Shard::new(
        ME,
        1,
        ProtocolConfig {
            partitions: 2,
            max_payload: 4,
            ..ProtocolConfig::default()
        },
        1,
    )
    .unwrap();
    let owned = (0..)
        .map(|q| mid(1, q))
        .find(|id| id.partition(2) == 0)
        .unwrap();
    let other = (0..)
        .map(|q| mid(1, q))
        .find(|id| id.partition(2) == 1)
        .unwrap();
    assert_eq!(
        s.broadcast(ms(0), owned, Topic::default(), Bytes::from_static(b"12345")),
        Err(BroadcastError::TooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        s.broadcast(ms(0), other, Topic::default(), Bytes::from_static(b"1")),
        Err(BroadcastError::NotOwned { partition: 1 })
    );
    assert_eq!(
        s.broadcast(ms(0), owned, Topic::default(), Bytes::from_static(b"1")),
        Ok(())
    );
    assert_eq!(
        s.broadcast(ms(0), owned, Topic::default(), Bytes::from_static(b"1")),
        Err(BroadcastError::DuplicateId)
    );
}

#[test]
fn frames_for_unowned_partitions_are_counted_and_ignored() {
    let mut s = Shard::new(
        ME,
        1,
        ProtocolConfig {
            partitions: 2,
            ..ProtocolConfig::default()
        },
        1,
    )
    .unwrap();
    s.neighbor_up(ms(0), A);
    drain(&mut s);
    let other = (0..)
        .map(|q| mid(9, q))
        .find(|id| id.partition(2) == 1)
        .unwrap();
    s.handle_frame(ms(0), A, gossip(other, 0));
    s.handle_frame(ms(0), A, Frame::Prune { partition: 1 });
    s.handle_frame(ms(0), A, Frame::Prune { partition: 40 });
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().misrouted, 3);
}

#[test]
fn cleanup_expires_the_cache_after_the_ttl_and_seen_windows_after_the_retention() {
    let mut s = shard(&[A]);
    for seq in 0..10 {
        s.handle_frame(ms(0), A, gossip(mid(9, seq), 0));
    }
    drain(&mut s);
    assert_eq!(s.stats().cache_entries, 10);
    let later = Duration::from_secs(62);
    let p = s.cleanup(later, 4);
    assert!(!p.done);
    let p = s.cleanup(later, 100);
    assert!(p.done);
    let st = s.stats();
    assert_eq!(st.cache_entries, 0);
    // The seen window outlives the payloads (seen_idle_retention, 600 s), so a
    // quiet origin's later holes still count from where it left off.
    assert_eq!(st.seen_origins, 1);
    assert_eq!(st.cache_expirations, 10);
    s.cleanup(Duration::from_secs(602), 100);
    assert_eq!(s.stats().seen_origins, 0);
}

#[test]
fn ihave_queue_is_bounded() {
    let mut s = shard_with(
        ProtocolConfig {
            eager_fanout: 1,
            max_ihave_queue: 2,
            ..cfg()
        },
        &[A, B],
    );
    for seq in 0..5 {
        s.broadcast(
            ms(0),
            mid(1, seq),
            Topic::default(),
            Bytes::from_static(b"x"),
        )
        .unwrap();
    }
    let st = s.stats();
    assert_eq!(st.ihave_queue, 2);
    assert_eq!(st.ihave_dropped, 3);
}

#[test]
fn pending_grafts_are_bounded() {
    let mut s = shard_with(
        ProtocolConfig {
            max_pending_grafts: 2,
            ..cfg()
        },
        &[A],
    );
    let entries = (0..5)
        .map(|q| IHaveEntry {
            id: mid(9, q),
            round: 1,
        })
        .collect();
    s.handle_frame(ms(0), A, Frame::IHave { entries });
    let st = s.stats();
    assert_eq!(st.pending_grafts, 2);
    assert_eq!(st.pending_dropped, 3);
}

#[test]
fn neighbours_are_bounded() {
    let mut s = shard_with(
        ProtocolConfig {
            max_neighbors: 2,
            ..cfg()
        },
        &[A, B],
    );
    assert!(!s.neighbor_up(ms(0), C));
    assert!(!s.neighbor_up(ms(0), A), "already known");
    assert!(!s.neighbor_up(ms(0), ME), "never ourselves");
    assert_eq!(s.stats().neighbors_rejected, 1);
}

#[test]
fn partitions_start_from_different_random_eager_sets() {
    let peers: Vec<NodeId> = (10..22).map(NodeId).collect();
    let mut s = Shard::new(ME, u64::MAX, ProtocolConfig::default(), 3).unwrap();
    for &p in &peers {
        s.neighbor_up(ms(0), p);
    }
    let sets: std::collections::BTreeSet<Vec<NodeId>> =
        (0..64).map(|p| sorted(s.eager_peers(p))).collect();
    assert!(sets.len() > 10, "only {} distinct eager sets", sets.len());
    // Every neighbour is eager somewhere.
    for p in &peers {
        assert!((0..64).any(|q| s.eager_peers(q).contains(p)));
    }
}

#[test]
fn invalid_config_names_the_key() {
    let e = Shard::new(
        ME,
        1,
        ProtocolConfig {
            partitions: 3,
            ..ProtocolConfig::default()
        },
        1,
    )
    .err()
    .unwrap();
    assert_eq!(e.key, "partitions");
    assert!(e.to_string().contains("partitions"));
}
