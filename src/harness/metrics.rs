//! Reading a node's `/metrics` (Prometheus text): one page, and one metric summed over
//! its label sets.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::HarnessError;

/// The text of a node's `/metrics`, with a bearer `token` when the admin plane has one.
pub fn scrape(admin: SocketAddr, token: Option<&str>) -> Result<String, HarnessError> {
    let mut req = ureq::get(&format!("http://{admin}/metrics")).timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let err = |reason: String| HarnessError::Admin {
        admin,
        path: "/metrics".into(),
        reason,
    };
    req.call()
        .map_err(|e| err(e.to_string()))?
        .into_string()
        .map_err(|e| err(e.to_string()))
}

/// Sum of every sample of metric `name` in a Prometheus text page: all its label sets
/// when `name` is bare, one when it carries labels (`name{side="refused"}`); 0 when
/// absent. A metric whose name merely starts with `name` is not counted.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`metric_sum`] of a counter, as the whole number it is (negative or fractional
/// sums, which a counter never has, are rounded and floored at 0).
pub fn counter_sum(text: &str, name: &str) -> u64 {
    metric_sum(text, name).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP plumtree_gossip_sent_total Gossip frames sent.\n\
                        # TYPE plumtree_gossip_sent counter\n\
                        plumtree_gossip_sent_total{shard=\"0\"} 10\n\
                        plumtree_gossip_sent_total{shard=\"1\"} 5\n\
                        plumtree_gossip_sent_total_extra 100\n\
                        plumtree_graft_sent_total 2\n\
                        plumtree_conflicts_total{side=\"refused\"} 3\n\
                        plumtree_conflicts_total{side=\"received\"} 4\n";

    #[test]
    fn metric_sum_adds_label_sets_and_skips_lookalikes_and_comments() {
        assert_eq!(metric_sum(PAGE, "plumtree_gossip_sent_total"), 15.0);
        assert_eq!(metric_sum(PAGE, "plumtree_graft_sent_total"), 2.0);
        assert_eq!(metric_sum(PAGE, "absent_total"), 0.0);
        assert_eq!(counter_sum(PAGE, "plumtree_gossip_sent_total"), 15);
    }

    #[test]
    fn metric_sum_with_labels_picks_one_label_set() {
        assert_eq!(
            metric_sum(PAGE, "plumtree_conflicts_total{side=\"refused\"}"),
            3.0
        );
        assert_eq!(metric_sum(PAGE, "plumtree_conflicts_total"), 7.0);
    }

    #[test]
    fn scrape_of_a_closed_port_is_an_error_naming_it() {
        let admin = super::super::ports::free_tcp().unwrap();
        let e = scrape(admin, None).unwrap_err().to_string();
        assert!(
            e.contains(&admin.to_string()) && e.contains("/metrics"),
            "{e}"
        );
    }
}
