//! Reading a node's `--deliveries` file (NDJSON, format in `node::sink`) while the
//! node may still be writing it: every complete line must be a record the node
//! writes, and only a last line without its newline (being written right now) is
//! skipped. The benchmark's memberlist-plumtree comparator writes the same lines
//! without the `id`.

use std::path::Path;

use base64::Engine;

use super::error::HarnessError;

/// One delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message id (32 hex digits); a node always writes it.
    pub id: Option<String>,
    /// Hops from its origin (0: the origin's own delivery).
    pub hops: Option<u32>,
    /// Unix time in nanoseconds at which the node's writer took the delivery.
    pub t_ns: Option<u64>,
    /// The payload, decoded from the line's `payload_b64`.
    pub payload: Vec<u8>,
}

/// One line of a deliveries file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A line with a `payload_b64`: one message delivered here.
    Delivery(Delivery),
    /// `{"gap":{"origin":..,"missed":N,..}}`: messages of `origin` (16 hex digits)
    /// that will never be delivered here.
    Gap {
        /// The origin node id, as the file writes it.
        origin: String,
        /// How many of its messages are lost to this node.
        missed: u64,
    },
    /// `{"lagged":N}`: deliveries the node could not write; the missing ids show.
    Lagged(u64),
}

/// Every record of the file at `path`; none when it does not exist yet.
pub fn read_records(path: &Path) -> Result<Vec<Record>, HarnessError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HarnessError::Process {
                what: format!("reading {}", path.display()),
                source,
            })
        }
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes[..complete]
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|reason| HarnessError::Deliveries {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })
        })
        .collect()
}

/// The deliveries among [`read_records`].
pub fn read_deliveries(path: &Path) -> Result<Vec<Delivery>, HarnessError> {
    Ok(read_records(path)?
        .into_iter()
        .filter_map(|r| match r {
            Record::Delivery(d) => Some(d),
            _ => None,
        })
        .collect())
}

fn parse_line(line: &[u8]) -> Result<Record, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(n) = v["lagged"].as_u64() {
        return Ok(Record::Lagged(n));
    }
    if let (Some(origin), Some(missed)) = (v["gap"]["origin"].as_str(), v["gap"]["missed"].as_u64())
    {
        return Ok(Record::Gap {
            origin: origin.to_string(),
            missed,
        });
    }
    let payload = v["payload_b64"]
        .as_str()
        .ok_or("no payload_b64, gap or lagged field")?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| format!("payload_b64: {e}"))?;
    Ok(Record::Delivery(Delivery {
        id: v["id"].as_str().map(str::to_string),
        hops: v["hops"].as_u64().and_then(|h| u32::try_from(h).ok()),
        t_ns: v["t_ns"].as_u64(),
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_line_and_skips_a_partial_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.ndjson");
        std::fs::write(
            &p,
            "{\"id\":\"ab\",\"origin\":\"01\",\"topic\":\"t\",\"hops\":2,\"payload_b64\":\"aGk=\",\"t_ns\":9}\n\
             {\"payload_b64\":\"\"}\n\
             {\"gap\":{\"origin\":\"0000000000000001\",\"missed\":3}}\n\
             {\"lagged\":4}\n\
             {\"id\":\"ef\",\"payl",
        )
        .unwrap();
        let r = read_records(&p).unwrap();
        assert_eq!(
            r,
            vec![
                Record::Delivery(Delivery {
                    id: Some("ab".into()),
                    hops: Some(2),
                    t_ns: Some(9),
                    payload: b"hi".to_vec()
                }),
                Record::Delivery(Delivery {
                    id: None,
                    hops: None,
                    t_ns: None,
                    payload: Vec::new()
                }),
                Record::Gap {
                    origin: "0000000000000001".into(),
                    missed: 3
                },
                Record::Lagged(4),
            ]
        );
        assert_eq!(read_deliveries(&p).unwrap().len(), 2);
    }

    #[test]
    fn a_missing_file_is_empty_and_a_bad_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.ndjson");
        assert!(read_records(&p).unwrap().is_empty());
        std::fs::write(&p, "{\"lagged\":1}\nnot json\n").unwrap();
        let e = read_records(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("not JSON"), "{e}");
        std::fs::write(&p, "{\"id\":\"ab\",\"payload_b64\":\"%%\"}\n").unwrap();
        assert!(read_records(&p)
            .unwrap_err()
            .to_string()
            .contains("payload_b64"));
        std::fs::write(&p, "{\"id\":\"ab\"}\n").unwrap();
        assert!(read_records(&p).is_err());
    }
}
