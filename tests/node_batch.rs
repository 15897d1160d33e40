//! `POST /broadcast/batch` on real nodes: two `plumcore node` processes on 127.0.0.1,
//! 2,000 payloads in four requests to one node; both deliveries files hold each
//! exactly once with the right payload, in one request per 500 messages instead of
//! one per message. A malformed batch is refused whole and broadcasts nothing.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::cluster::{get_json, read_deliveries, start_node, wait_until};
use plumcore::node::batch::encode_batch;

fn post_batch(admin: std::net::SocketAddr, body: &[u8]) -> Result<serde_json::Value, u16> {
    match ureq::post(&format!("http://{admin}/broadcast/batch"))
        .timeout(Duration::from_secs(10))
        .send_bytes(body)
    {
        Ok(r) => Ok(r.into_json().unwrap()),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(e) => panic!("batch request failed: {e}"),
    }
}

#[test]
fn a_batch_is_delivered_everywhere_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    let a = start_node(1, 2, None, dir.path(), &[], &mut taken);
    let b = start_node(2, 1, Some(a.bind), dir.path(), &[], &mut taken);
    wait_until(
        "the two nodes to be neighbours",
        Duration::from_secs(30),
        || {
            get_json(a.admin, "/members")
                .is_some_and(|m| m["active"].as_array().is_some_and(|v| !v.is_empty()))
        },
    );

    // Malformed (the last length runs past the body): 400, nothing broadcast.
    let mut bad = encode_batch([&b"first"[..], b"second"]);
    bad.truncate(bad.len() - 2);
    assert_eq!(post_batch(a.admin, &bad).err(), Some(400));

    let mut sent: HashMap<String, Vec<u8>> = HashMap::new();
    for round in 0..4 {
        let payloads: Vec<Vec<u8>> = (0..500)
            .map(|k| format!("batch {round} message {k}").into_bytes())
            .collect();
        let reply = post_batch(a.admin, &encode_batch(payloads.iter().map(Vec::as_slice)))
            .expect("batch accepted");
        assert_eq!(reply["accepted"], 500, "{reply}");
        let ids = reply["ids"].as_array().unwrap();
        for (id, p) in ids.iter().zip(payloads) {
            assert!(sent.insert(id.as_str().unwrap().to_string(), p).is_none());
        }
    }
    assert_eq!(sent.len(), 2000);
    wait_until(
        "both nodes to deliver the batches",
        Duration::from_secs(60),
        || {
            [&a, &b].iter().all(|n| {
                let d = read_deliveries(&n.deliveries);
                sent.keys().all(|id| d.contains_key(id))
            })
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    for n in [&a, &b] {
        let d = read_deliveries(&n.deliveries);
        assert_eq!(
            d.len(),
            sent.len(),
            "nothing else delivered (the bad batch least of all)"
        );
        for (id, payload) in &sent {
            assert_eq!(d[id].0, 1, "{id} delivered {} times", d[id].0);
            assert_eq!(&d[id].1, payload);
        }
    }
}
