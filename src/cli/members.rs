//! `plumcore members`: a node's HyParView views, read from its admin plane
//! (`GET /members`), as a table or as the raw JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

/// Flags of `plumcore members`.
#[derive(clap::Args)]
pub struct MembersArgs {
    /// The node's admin plane: HOST:PORT or http://HOST:PORT[/] (the node's default
    /// admin address unless given).
    #[arg(long, value_name = "ADDR|URL", default_value = "127.0.0.1:7080")]
    pub admin: String,
    /// Print the `/members` JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The node's admin bearer token (first line of the file), when it has one.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// `http://HOST:PORT` from `HOST:PORT` or an `http://` URL (a trailing `/` or
/// `/members` is dropped); `https` is refused (the admin plane speaks plain HTTP).
pub fn admin_base(admin: &str) -> Result<String> {
    let a = admin.trim();
    let rest = match a.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(anyhow!(
                "--admin {a}: scheme `{scheme}` not supported (the admin plane is plain http)"
            ))
        }
        None => a,
    };
    let host = rest.trim_end_matches('/');
    let host = host.strip_suffix("/members").unwrap_or(host);
    if host.is_empty() || host.contains('/') {
        return Err(anyhow!(
            "--admin {a}: expected HOST:PORT or http://HOST:PORT"
        ));
    }
    Ok(format!("http://{host}"))
}

/// The innermost cause of an error: the part worth printing once.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Exit code of `plumcore members`: 1 for anything that went wrong, printed in one
/// line (the error says what it could not do and why, once).
pub fn exit_code(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plumcore: {e}");
            ExitCode::from(1)
        }
    }
}

/// Fetches `/members` and prints it.
pub fn run(a: &MembersArgs) -> Result<()> {
    let url = format!("{}/members", admin_base(&a.admin)?);
    let mut req = ureq::get(&url).timeout(Duration::from_secs(5));
    if let Some(path) = &a.admin_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("admin token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            return Err(anyhow!("GET {url}: HTTP {code} {}", body.trim()));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(anyhow!(
                "cannot reach the admin plane at {url}: {}",
                root_cause(&t)
            ))
        }
    };
    let v: Value = resp
        .into_json()
        .map_err(|e| anyhow!("GET {url}: answer is not JSON: {e}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", table(&v));
    }
    Ok(())
}

/// The human form: a heading, then one row per view member, then the lost nodes the
/// driver still probes.
pub fn table(v: &Value) -> String {
    let s = |x: &Value| x.as_str().unwrap_or("-").to_string();
    let n = |x: &Value| x.as_u64().map_or("-".to_string(), |n| n.to_string());
    let mut out = format!(
        "node {}{} at {}: active {}/{}, passive {}/{}{}, address book {}/{}\n",
        s(&v["node_id"]),
        v["node_name"]
            .as_str()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        s(&v["addr"]),
        v["active"].as_array().map_or(0, Vec::len),
        n(&v["active_capacity"]),
        v["passive"].as_array().map_or(0, Vec::len),
        n(&v["passive_capacity"]),
        if v["joining"].as_bool() == Some(true) {
            " (joining)"
        } else {
            ""
        },
        n(&v["address_book_size"]),
        n(&v["address_book_capacity"]),
    );
    out.push_str(&format!(
        "{:<8} {:<16} {:<20} {:<22} {:>6} {:>14}\n",
        "STATE", "NODE ID", "NAME", "ADDRESS", "SHARDS", "LAST HEARD MS"
    ));
    for view in ["active", "passive", "lost"] {
        for m in v[view].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<8} {:<16} {:<20} {:<22} {:>6} {:>14}\n",
                s(&m["state"]),
                s(&m["node_id"]),
                s(&m["name"]),
                s(&m["addr"]),
                n(&m["shards"]),
                n(&m["last_heard_ms_ago"]),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_accepts_addresses_and_urls() {
        for a in [
            "127.0.0.1:7080",
            "http://127.0.0.1:7080",
            "http://127.0.0.1:7080/",
            "HTTP://127.0.0.1:7080/members",
        ] {
            assert_eq!(admin_base(a).unwrap(), "http://127.0.0.1:7080", "{a}");
        }
        assert_eq!(admin_base("localhost:9").unwrap(), "http://localhost:9");
        assert!(admin_base("https://x:1")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(admin_base("http://x:1/a/b").is_err());
    }

    #[test]
    fn table_lists_both_views() {
        let v = serde_json::json!({
            "node_id": "00000000000000ff", "addr": "127.0.0.1:7000",
            "active_capacity": 5, "passive_capacity": 30, "joining": false,
            "address_book_size": 2, "address_book_capacity": 204,
            "node_name": "web-0",
            "active": [{"node_id": "0000000000000001", "name": "web-1", "addr": "127.0.0.1:7100",
                        "shards": 2, "state": "active", "last_heard_ms_ago": 12}],
            "passive": [{"node_id": "0000000000000002", "addr": null,
                         "shards": 0, "state": "passive", "last_heard_ms_ago": null}],
            "lost": [{"node_id": "0000000000000003", "addr": "127.0.0.1:7200",
                      "shards": 1, "state": "lost", "last_heard_ms_ago": 9000}],
        });
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].contains("active 1/5, passive 1/30"), "{t}");
        assert!(
            lines[0].starts_with("node 00000000000000ff (web-0) at"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("active   0000000000000001 web-1                127.0.0.1:7100"),
            "{t}"
        );
        assert!(lines[2].trim_end().ends_with("12"), "{t}");
        assert!(lines[3].starts_with("passive  0000000000000002 -"), "{t}");
        assert!(
            lines[4].starts_with("lost     0000000000000003 -                    127.0.0.1:7200"),
            "{t}"
        );
    }
}
