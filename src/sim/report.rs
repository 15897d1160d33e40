//! What a simulation run measured, in the paper's terms.

use serde::Serialize;

/// One run's figures. `reliability`, `rmr` and `ldh` follow Leitão et al.: reliability
/// is the fraction of (live node, message) pairs delivered, over messages whose origin
/// is alive at the end and that were not broadcast during a partition; RMR is
/// `m/(n-1) - 1` per message (m payload transmissions, n receivers), averaged over
/// messages after the warm-up; LDH is the last delivery hop of a message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimReport {
    /// Protocol mode (`plumtree` or `flood`).
    pub mode: String,
    /// Nodes simulated.
    pub nodes: usize,
    /// Broadcasts issued.
    pub messages: usize,
    /// The RNG seed: the same seed gives the same report.
    pub seed: u64,
    /// Datagram loss probability of every link.
    pub loss: f64,
    /// Fraction of nodes crashed mid-run.
    pub fail: f64,
    /// Independent Plumtrees per node.
    pub partitions: u32,
    /// Nodes alive at the end.
    pub live_nodes: usize,
    /// Nodes crashed during the run.
    pub crashed_nodes: usize,
    /// Fraction of (live node, counted message) pairs delivered.
    pub reliability: f64,
    /// Messages whose origin was alive at the end (and not sent during a partition).
    pub messages_counted: usize,
    /// Messages counted in `reliability` that some live node never delivered.
    pub messages_incomplete: usize,
    /// Messages whose origin crashed, reported separately.
    pub dead_origin_messages: usize,
    /// Reliability of the dead-origin messages over live nodes.
    pub dead_origin_reliability: f64,
    /// Messages broadcast while the network was split (`--partition-heal`).
    pub partition_messages: usize,
    /// Their reliability over live nodes at the end (needs anti-entropy to reach 1.0).
    pub partition_reliability: f64,
    /// `random` or `hyparview`.
    pub overlay: String,
    /// HyParView after `--fail`: seconds from the crash until every live node had only
    /// live neighbours, at least one, and the live overlay was connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heal_seconds: Option<f64>,
    /// HyParView after `--partition-heal`: seconds from the heal until the live
    /// nodes' active views formed one connected graph again (`None`: not by the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remerge_seconds: Option<f64>,
    /// Messages broadcast between the crash and the healing (not in `reliability`).
    pub healing_messages: usize,
    /// Their reliability over live nodes at the end.
    pub healing_reliability: f64,
    /// HyParView: neighbours declared failed, passive nodes promoted, shuffles started.
    pub neighbor_failures: u64,
    /// HyParView: passive nodes promoted into an active view.
    pub promotions: u64,
    /// HyParView: shuffles started.
    pub shuffles: u64,
    /// HyParView: splices done (links traded so two short views fill) and joins
    /// through a revived lost node.
    pub splices: u64,
    /// HyParView: joins through a revived lost node (a partition re-merging).
    pub lost_rejoins: u64,
    /// Probes sent to lost nodes (all nodes together), and the virtual seconds from
    /// the crash to the end of the run they were sent in: the cost of dead nodes
    /// probed for their whole stay in the lost lists.
    pub lost_probes: u64,
    /// Virtual seconds from the crash to the end, over which `lost_probes` were sent.
    pub lost_probe_seconds: f64,
    /// HyParView: mean active-view size over live nodes at the end.
    pub mean_active_view: f64,
    /// Deliveries of a message a node had already delivered (must be 0).
    pub duplicate_deliveries: u64,
    /// `--partition-heal`: messages of the opening round (every origin the schedule
    /// uses speaks once before the first broadcast, so each node has met it).
    pub opening_messages: usize,
    /// `--partition-heal`: messages of the closing round (every origin that
    /// broadcast speaks once more after the heal, revealing losses at the tail).
    pub closing_messages: usize,
    /// Undelivered (live node, message) pairs inside a gap that node reported.
    pub gap_reported: u64,
    /// Sum of the reported gaps' `missed` counts.
    pub gap_missed: u64,
    /// `gap_missed - gap_reported`: gap counts with no undelivered message behind them.
    pub false_gaps: u64,
    /// Undelivered pairs after the node's first contact with the origin that no gap
    /// reported: silent losses.
    pub unrecovered: u64,
    /// Undelivered pairs before the node's first contact with the origin (the node
    /// never heard of the origin before that message: out of scope for gaps).
    pub before_first_contact: u64,
    /// Relative message redundancy after the warm-up (0 is a perfect tree).
    pub rmr: f64,
    /// RMR over every message, warm-up included (what a low-rate cluster pays while
    /// its trees form).
    pub rmr_all: f64,
    /// Grafts sent per delivery (each delivery through a graft came late).
    pub grafts_per_delivery: f64,
    /// Fixed origins broadcasts came from (0: any node).
    pub origins: usize,
    /// Messages `rmr` and `ldh` average over (after the warm-up).
    pub rmr_messages: usize,
    /// Messages excluded from `rmr` and `ldh` while the trees formed.
    pub warmup_messages: usize,
    /// Mean last delivery hop (tree depth seen by the farthest receiver).
    pub ldh: f64,
    /// Largest last delivery hop of any message.
    pub ldh_max: u16,
    /// Mean time from broadcast to last delivery, milliseconds of virtual time.
    pub last_delivery_ms: f64,
    /// Gossip frames sent (eager pushes).
    pub gossip_sent: u64,
    /// IHave entries sent (lazy announcements).
    pub ihave_sent: u64,
    /// Grafts sent (requests for a missing message).
    pub graft_sent: u64,
    /// Prunes sent (redundant eager links demoted).
    pub prune_sent: u64,
    /// Messages whose every graft went unanswered.
    pub graft_failed: u64,
    /// Hop-count optimisation re-links.
    pub optimizations: u64,
    /// Datagrams put on the simulated network.
    pub datagrams_sent: u64,
    /// Datagrams the link model dropped.
    pub datagrams_lost: u64,
    /// Virtual time the run lasted.
    pub virtual_seconds: f64,
    /// Scheduled events the simulator processed (a measure of the run's work).
    pub events: u64,
    /// Wall-clock run time; not part of the deterministic output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// The flood-gossip baseline on the same workload, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<SimReport>>,
    /// The flood baseline's mean LDH, to judge tree depth against it in one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_ldh: Option<f64>,
    /// The flood baseline's mean last-delivery time (ms), same purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_last_delivery_ms: Option<f64>,
}

impl SimReport {
    /// A readable table (with the baseline side by side when present).
    pub fn table(&self) -> String {
        let mut cols = vec![self];
        if let Some(b) = &self.baseline {
            cols.push(b);
        }
        let mut out = String::new();
        let header: Vec<String> = cols.iter().map(|c| c.mode.clone()).collect();
        out.push_str(&format!("{:<26}", "metric"));
        for h in &header {
            out.push_str(&format!("{h:>14}"));
        }
        out.push('\n');
        type Cell = Box<dyn Fn(&SimReport) -> String>;
        let rows: Vec<(&str, Cell)> = vec![
            ("nodes", Box::new(|r| r.nodes.to_string())),
            ("live nodes", Box::new(|r| r.live_nodes.to_string())),
            ("messages", Box::new(|r| r.messages.to_string())),
            ("reliability", Box::new(|r| format!("{:.6}", r.reliability))),
            (
                "duplicate deliveries",
                Box::new(|r| r.duplicate_deliveries.to_string()),
            ),
            // These are measured over the messages past their partition's warm-up;
            // with none there is no figure, not a zero.
            ("rmr messages", Box::new(|r| r.rmr_messages.to_string())),
            ("rmr", Box::new(|r| past_warmup(r, format!("{:.4}", r.rmr)))),
            (
                "ldh (mean)",
                Box::new(|r| past_warmup(r, format!("{:.2}", r.ldh))),
            ),
            (
                "ldh max",
                Box::new(|r| past_warmup(r, r.ldh_max.to_string())),
            ),
            (
                "last delivery ms (mean)",
                Box::new(|r| past_warmup(r, format!("{:.1}", r.last_delivery_ms))),
            ),
            (
                "rmr (all messages)",
                Box::new(|r| format!("{:.4}", r.rmr_all)),
            ),
            (
                "grafts per delivery",
                Box::new(|r| format!("{:.5}", r.grafts_per_delivery)),
            ),
            ("gossip sent", Box::new(|r| r.gossip_sent.to_string())),
            ("ihave sent", Box::new(|r| r.ihave_sent.to_string())),
            ("graft sent", Box::new(|r| r.graft_sent.to_string())),
            ("prune sent", Box::new(|r| r.prune_sent.to_string())),
            ("graft failed", Box::new(|r| r.graft_failed.to_string())),
            ("optimizations", Box::new(|r| r.optimizations.to_string())),
            (
                "dead-origin messages",
                Box::new(|r| r.dead_origin_messages.to_string()),
            ),
            (
                "dead-origin reliability",
                Box::new(|r| format!("{:.6}", r.dead_origin_reliability)),
            ),
            (
                "partition messages",
                Box::new(|r| r.partition_messages.to_string()),
            ),
            (
                "partition reliability",
                Box::new(|r| format!("{:.6}", r.partition_reliability)),
            ),
            (
                "opening messages",
                Box::new(|r| r.opening_messages.to_string()),
            ),
            (
                "closing messages",
                Box::new(|r| r.closing_messages.to_string()),
            ),
            ("gap reported", Box::new(|r| r.gap_reported.to_string())),
            ("false gaps", Box::new(|r| r.false_gaps.to_string())),
            ("unrecovered", Box::new(|r| r.unrecovered.to_string())),
            (
                "before first contact",
                Box::new(|r| r.before_first_contact.to_string()),
            ),
            ("overlay", Box::new(|r| r.overlay.clone())),
            (
                "heal seconds",
                Box::new(|r| r.heal_seconds.map_or("-".into(), |h| format!("{h:.2}"))),
            ),
            (
                "remerge seconds",
                Box::new(|r| r.remerge_seconds.map_or("-".into(), |h| format!("{h:.2}"))),
            ),
            (
                "healing messages",
                Box::new(|r| r.healing_messages.to_string()),
            ),
            (
                "healing reliability",
                Box::new(|r| format!("{:.6}", r.healing_reliability)),
            ),
            (
                "neighbour failures",
                Box::new(|r| r.neighbor_failures.to_string()),
            ),
            ("promotions", Box::new(|r| r.promotions.to_string())),
            ("splices", Box::new(|r| r.splices.to_string())),
            ("lost rejoins", Box::new(|r| r.lost_rejoins.to_string())),
            ("lost probes", Box::new(|r| r.lost_probes.to_string())),
            (
                "mean active view",
                Box::new(|r| format!("{:.2}", r.mean_active_view)),
            ),
            ("datagrams sent", Box::new(|r| r.datagrams_sent.to_string())),
            ("datagrams lost", Box::new(|r| r.datagrams_lost.to_string())),
            (
                "virtual seconds",
                Box::new(|r| format!("{:.1}", r.virtual_seconds)),
            ),
            (
                "wall seconds",
                Box::new(|r| r.wall_seconds.map_or("-".into(), |w| format!("{w:.2}"))),
            ),
        ];
        for (name, f) in rows {
            out.push_str(&format!("{name:<26}"));
            for c in &cols {
                out.push_str(&format!("{:>14}", f(c)));
            }
            out.push('\n');
        }
        out
    }
}

/// `figure`, or "-" when no message was past its partition's warm-up.
fn past_warmup(r: &SimReport, figure: String) -> String {
    if r.rmr_messages == 0 {
        "-".to_string()
    } else {
        figure
    }
}
