//! The core map: which core runs the control executor and which run shards.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{one_line, CoreMapError};
use crate::topology::{format_cpu_list, Topology};

/// The keys a core map may contain, in the order they are documented.
const KNOWN_KEYS: [&str; 3] = ["control", "shards", "isolate_irq_hint"];
/// The keys a core map must contain.
const REQUIRED_KEYS: [&str; 2] = ["control", "shards"];

/// Which cores the node uses: one control core plus one core per shard.
///
/// Why a file and not flags: on real deployments the core layout is a
/// per-host decision (NUMA, NIC IRQ placement, housekeeping cores) that is
/// reviewed and versioned like any other config. The TOML form is
///
/// ```toml
/// control = 0
/// shards = [1, 2, 3]
/// isolate_irq_hint = true   # optional, default false
/// ```
///
/// Unknown keys are rejected (`deny_unknown_fields`) so a typo such as
/// `shard = [1]` fails loudly instead of silently falling back to defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreMap {
    /// Core for the control executor (membership, metrics, admin); it does
    /// no per-message work, so it may share a core on tiny hosts.
    pub control: usize,
    /// One core per shard executor, in shard order: shard `i` runs on
    /// `shards[i]`. Must be non-empty and free of duplicates.
    pub shards: Vec<usize>,
    /// When true, the node logs a hint for steering NIC IRQs away from the
    /// shard cores (see [`Validated::irq_hint`]); it never changes IRQ
    /// affinity itself, because that needs root and is host policy.
    #[serde(default)]
    pub isolate_irq_hint: bool,
}

/// A core map that passed [`CoreMap::validate`], with its non-fatal findings.
///
/// Why a separate type: the binary should only ever start executors from a
/// map that was checked against the machine it runs on; taking `Validated`
/// instead of `CoreMap` makes that check impossible to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The map, unchanged.
    pub map: CoreMap,
    /// Legal but questionable choices (a shard on the control core, shards
    /// on several NUMA nodes), one line each, for the binary to log at start-up.
    pub warnings: Vec<String>,
    /// Online cores that run no shard (the control core included when it is
    /// not also a shard): where NIC IRQs, the OS and other daemons should go.
    pub housekeeping: Vec<usize>,
}

impl CoreMap {
    /// Parses a core map from TOML text.
    ///
    /// Why not just `toml::from_str`: its errors are multi-line snippets. This
    /// maps each failure to a one-line [`CoreMapError`] naming the key
    /// (unknown, missing, wrong type) or the line and column (bad TOML). Only
    /// the syntax and types are checked here; use [`CoreMap::validate`]
    /// for the rules that depend on the machine.
    pub fn parse(text: &str) -> Result<CoreMap, CoreMapError> {
        toml::from_str::<CoreMap>(text).map_err(|err| diagnose(text, &err))
    }

    /// Reads and parses a core map file.
    ///
    /// Why a separate entry point: an unreadable file is reported with its
    /// path ([`CoreMapError::Read`]), which is what the operator needs.
    pub fn from_path(path: impl AsRef<Path>) -> Result<CoreMap, CoreMapError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CoreMapError::Read {
            path: path.to_path_buf(),
            kind: e.kind(),
            reason: one_line(&e.to_string()),
        })?;
        CoreMap::parse(&text)
    }

    /// Renders the map as TOML that [`CoreMap::parse`] reads back unchanged.
    ///
    /// Why: lets the node print the effective map (e.g. the probed default)
    /// so an operator can save it as a starting point.
    pub fn to_toml(&self) -> String {
        format!(
            "control = {}\nshards = [{}]\nisolate_irq_hint = {}\n",
            self.control,
            self.shards
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.isolate_irq_hint
        )
    }

    /// Checks the map against the machine.
    ///
    /// Errors (the node must not start): the control core or a shard core is
    /// not usable by this process, `shards` is empty, or a shard core is
    /// listed twice (two executors on one core defeat thread-per-core).
    ///
    /// Warnings (the node starts, the binary logs them): a shard shares the
    /// control core, or the shards span more than one NUMA node (only
    /// detectable when the topology knows the nodes).
    pub fn validate(&self, topo: &Topology) -> Result<Validated, CoreMapError> {
        let no_such = |key: &'static str, core: usize| CoreMapError::NoSuchCore {
            key,
            core,
            online: topo.online_summary(),
        };
        if !topo.is_online(self.control) {
            return Err(no_such("control", self.control));
        }
        if self.shards.is_empty() {
            return Err(CoreMapError::EmptyShards);
        }
        let mut seen = BTreeSet::new();
        for &core in &self.shards {
            if !topo.is_online(core) {
                return Err(no_such("shards", core));
            }
            if !seen.insert(core) {
                return Err(CoreMapError::DuplicateShard { core });
            }
        }

        let mut warnings = Vec::new();
        if seen.contains(&self.control) {
            warnings.push(format!(
                "core map keys `control`/`shards`: core {} is both the control core and a shard; \
                 control work will add latency to that shard (acceptable only on 1-2 core hosts)",
                self.control
            ));
        }
        let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &core in &self.shards {
            if let Some(node) = topo.numa_node(core) {
                by_node.entry(node).or_default().push(core);
            }
        }
        if by_node.len() > 1 {
            let detail = by_node
                .iter()
                .map(|(node, cores)| format!("node {node}: cores {}", format_cpu_list(cores)))
                .collect::<Vec<_>>()
                .join("; ");
            warnings.push(format!(
                "core map key `shards`: shards span {} NUMA nodes ({detail}); cross-node memory \
                 and NIC traffic adds latency, prefer shards on the NIC's node",
                by_node.len()
            ));
        }

        let housekeeping = topo
            .online()
            .iter()
            .copied()
            .filter(|c| !seen.contains(c))
            .collect();
        Ok(Validated {
            map: self.clone(),
            warnings,
            housekeeping,
        })
    }

    /// The default layout when no core map is given: control on the lowest
    /// usable core, one shard on every other usable core.
    ///
    /// Why this shape: it uses the whole machine while keeping the control
    /// executor off the shards' cores. On a single-core host the only core is
    /// both control and the one shard, and the result carries a warning
    /// saying so. Never fails: a topology with no cores (impossible from
    /// [`Topology::detect`]) yields core 0 with a warning.
    pub fn probe(topo: &Topology) -> Validated {
        let (control, shards) = match topo.online() {
            [] => (0, vec![0]),
            [only] => (*only, vec![*only]),
            [first, rest @ ..] => (*first, rest.to_vec()),
        };
        let map = CoreMap {
            control,
            shards,
            isolate_irq_hint: false,
        };
        match map.validate(topo) {
            Ok(validated) => validated,
            Err(_) => Validated {
                map,
                warnings: vec![
                    "core map: the topology lists no usable core; assuming core 0 for control \
                     and the only shard"
                        .to_string(),
                ],
                housekeeping: Vec::new(),
            },
        }
    }
}

impl FromStr for CoreMap {
    type Err = CoreMapError;

    /// Same as [`CoreMap::parse`], so `"...".parse::<CoreMap>()` works (e.g. for clap).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CoreMap::parse(s)
    }
}

impl Validated {
    /// The one-line IRQ steering hint to log when `isolate_irq_hint = true`.
    ///
    /// Why only a hint: changing `/proc/irq/*/smp_affinity_list` or
    /// irqbalance's configuration needs root and is host policy, so the node
    /// tells the operator what to do instead of doing it. Returns `None`
    /// when the map did not ask for the hint.
    pub fn irq_hint(&self) -> Option<String> {
        if !self.map.isolate_irq_hint {
            return None;
        }
        let shards = format_cpu_list(&self.map.shards);
        if self.housekeeping.is_empty() {
            return Some(format!(
                "isolate_irq_hint: every usable core runs a shard ({shards}); NIC IRQs cannot be \
                 kept off shard cores, give the control executor a core of its own"
            ));
        }
        let hk = format_cpu_list(&self.housekeeping);
        Some(format!(
            "isolate_irq_hint: keep NIC IRQs off shard cores {shards}: set \
             IRQBALANCE_BANNED_CPULIST={shards} for irqbalance, or write {hk} to \
             /proc/irq/<N>/smp_affinity_list for each NIC queue IRQ (see tuning/README.md)"
        ))
    }
}

/// Turns a failed `toml::from_str::<CoreMap>` into a one-line, key-naming error.
///
/// The serde error carries the byte span of the offending key or value;
/// re-parsing the text into a span-annotated table tells which key that
/// span belongs to.
fn diagnose(text: &str, err: &toml::de::Error) -> CoreMapError {
    let err_span = err.span();
    let (line, col) = position(text, err_span.as_ref().map_or(0, |s| s.start));

    let table = match toml::from_str::<BTreeMap<Spanned<String>, Spanned<toml::Value>>>(text) {
        Ok(table) => table,
        Err(syntax) => return syntax_error(text, &syntax),
    };

    if let Some(span) = err_span.filter(|s| !s.is_empty()) {
        for (key, value) in &table {
            let in_key = contains(&key.span(), &span);
            let in_value = contains(&value.span(), &span);
            if !in_key && !in_value {
                continue;
            }
            return match KNOWN_KEYS.iter().find(|k| **k == key.get_ref()) {
                Some(known) => CoreMapError::InvalidValue {
                    key: known,
                    reason: one_line(err.message()),
                    line,
                    col,
                },
                None => {
                    let (line, col) = position(text, key.span().start);
                    CoreMapError::UnknownKey {
                        key: one_line(key.get_ref()),
                        line,
                        col,
                    }
                }
            };
        }
    }

    // Serde reports unknown keys and bad values before missing ones, so
    // anything left with a required key absent is a missing key.
    let present: BTreeSet<&str> = table.keys().map(|k| k.get_ref().as_str()).collect();
    if let Some(missing) = REQUIRED_KEYS.iter().find(|k| !present.contains(*k)) {
        return CoreMapError::MissingKey { key: missing };
    }

    CoreMapError::Syntax {
        line,
        col,
        message: one_line(err.message()),
    }
}

/// Maps an error from the plain TOML parse (no core map schema involved).
fn syntax_error(text: &str, err: &toml::de::Error) -> CoreMapError {
    let span = err.span();
    let (line, col) = position(text, span.as_ref().map_or(0, |s| s.start));
    if err.message() == "duplicate key" {
        if let Some(key) = span.and_then(|s| text.get(s)) {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            if !key.is_empty() {
                return CoreMapError::DuplicateKey {
                    key: one_line(key),
                    line,
                    col,
                };
            }
        }
    }
    CoreMapError::Syntax {
        line,
        col,
        message: one_line(err.message()),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// 1-based (line, column) of byte offset `index`; columns count characters.
fn position(text: &str, index: usize) -> (usize, usize) {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    let before = &text[..index];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..index].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(control: usize, shards: &[usize]) -> CoreMap {
        CoreMap {
            control,
            shards: shards.to_vec(),
            isolate_irq_hint: false,
        }
    }

    // ---- parsing: valid input ------------------------------------------

    #[test]
    fn parses_the_documented_example() {
        let m = CoreMap::parse(
            "control = 0\nshards = [1, 2, 3]\nisolate_irq_hint = true   # steer IRQs\n",
        )
        .unwrap();
        assert_eq!(
            m,
            CoreMap {
                control: 0,
                shards: vec![1, 2, 3],
                isolate_irq_hint: true
            }
        );
    }

    #[test]
    fn isolate_irq_hint_defaults_to_false() {
        let m = CoreMap::parse("control = 2\nshards = [0]\n").unwrap();
        assert_eq!(m, map(2, &[0]));
    }

    #[test]
    fn from_str_and_to_toml_round_trip() {
        let m: CoreMap = "shards = [3, 1]\ncontrol = 0\nisolate_irq_hint = true"
            .parse()
            .unwrap();
        assert_eq!(m.shards, vec![3, 1], "shard order is preserved");
        assert_eq!(CoreMap::parse(&m.to_toml()).unwrap(), m);
        assert_eq!(
            map(0, &[1, 2]).to_toml(),
            "control = 0\nshards = [1, 2]\nisolate_irq_hint = false\n"
        );
    }

    #[test]
    fn from_path_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core-map.toml");
        std::fs::write(&path, "control = 0\nshards = [1]\n").unwrap();
        assert_eq!(CoreMap::from_path(&path).unwrap(), map(0, &[1]));
    }

    // ---- parsing: errors -------------------------------------------------

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = CoreMap::from_path(&path).unwrap_err();
        match &err {
            CoreMapError::Read { path: p, kind, .. } => {
                assert_eq!(p, &path);
                assert_eq!(*kind, std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("core map file `"), "{text}");
        assert!(text.contains("nope.toml"), "{text}");
    }

    #[test]
    fn directory_instead_of_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = CoreMap::from_path(dir.path()).unwrap_err();
        assert!(matches!(err, CoreMapError::Read { .. }), "{err:?}");
    }

    #[test]
    fn non_utf8_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.toml");
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let err = CoreMap::from_path(&path).unwrap_err();
        assert!(matches!(err, CoreMapError::Read { .. }), "{err:?}");
    }

    #[test]
    fn file_content_errors_are_the_same_as_string_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core-map.toml");
        std::fs::write(&path, "control = 0\nshard = [1]\n").unwrap();
        assert_eq!(
            CoreMap::from_path(&path).unwrap_err(),
            CoreMap::parse("control = 0\nshard = [1]\n").unwrap_err()
        );
    }

    #[test]
    fn unknown_key_is_named_with_position() {
        let err = CoreMap::parse("control = 0\nshards = [1]\nshard = [2]\n").unwrap_err();
        assert_eq!(
            err,
            CoreMapError::UnknownKey {
                key: "shard".into(),
                line: 3,
                col: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "core map key `shard`: unknown key at line 3, column 1 \
             (expected one of `control`, `shards`, `isolate_irq_hint`)"
        );
    }

    #[test]
    fn unknown_table_is_named() {
        let err = CoreMap::parse("control = 0\nshards = [1]\n[extra]\nx = 1\n").unwrap_err();
        assert!(
            matches!(&err, CoreMapError::UnknownKey { key, line: 3, .. } if key == "extra"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_key_with_newline_stays_one_line() {
        let err = CoreMap::parse("control = 0\nshards = [1]\n\"a\\nb\" = 1\n").unwrap_err();
        assert!(matches!(err, CoreMapError::UnknownKey { .. }), "{err:?}");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn the_first_problem_in_the_file_wins() {
        // A bad value before an unknown key: the bad value is reported.
        let err = CoreMap::parse("control = \"x\"\nshards = [1]\nfoo = 1\n").unwrap_err();
        assert!(
            matches!(err, CoreMapError::InvalidValue { key: "control", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_control_and_missing_shards() {
        assert_eq!(
            CoreMap::parse("shards = [1]\n").unwrap_err(),
            CoreMapError::MissingKey { key: "control" }
        );
        assert_eq!(
            CoreMap::parse("control = 0\n").unwrap_err(),
            CoreMapError::MissingKey { key: "shards" }
        );
        assert_eq!(
            CoreMap::parse("").unwrap_err().to_string(),
            "core map key `control`: missing (required)"
        );
    }

    #[test]
    fn negative_core_is_an_invalid_value_with_position() {
        let err = CoreMap::parse("control = -1\nshards = [1]\n").unwrap_err();
        match &err {
            CoreMapError::InvalidValue { key, line, col, .. } => {
                assert_eq!((*key, *line, *col), ("control", 1, 11));
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("core map key `control`: "), "{text}");
        assert!(text.ends_with("(line 1, column 11)"), "{text}");
    }

    #[test]
    fn negative_shard_points_at_the_element() {
        let err = CoreMap::parse("control = 0\nshards = [1, -2]\n").unwrap_err();
        assert!(
            matches!(
                err,
                CoreMapError::InvalidValue {
                    key: "shards",
                    line: 2,
                    col: 14,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (text, key) in [
            ("control = 0\nshards = 3\n", "shards"),
            ("control = 0\nshards = [\"1\"]\n", "shards"),
            ("control = 1.5\nshards = [1]\n", "control"),
            (
                "control = 0\nshards = [1]\nisolate_irq_hint = \"yes\"\n",
                "isolate_irq_hint",
            ),
            ("shards = [1]\n[control]\nx = 1\n", "control"),
            ("control.x = 1\nshards = [1]\n", "control"),
        ] {
            let err = CoreMap::parse(text).unwrap_err();
            match &err {
                CoreMapError::InvalidValue { key: k, .. } => assert_eq!(*k, key, "{text:?}"),
                other => panic!("{text:?}: unexpected {other:?}"),
            }
            assert!(err
                .to_string()
                .starts_with(&format!("core map key `{key}`: ")));
        }
    }

    #[test]
    fn bad_toml_reports_line_and_column() {
        let err = CoreMap::parse("control = 0\nshards = [1, 2\n").unwrap_err();
        match &err {
            CoreMapError::Syntax { line, message, .. } => {
                assert!(*line >= 2, "{err:?}");
                assert!(!message.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("core map: invalid TOML at line "),
            "{text}"
        );
        assert!(!text.contains('\n'));

        let err = CoreMap::parse("control = = 0\n").unwrap_err();
        assert!(
            matches!(err, CoreMapError::Syntax { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_key_is_named() {
        let err = CoreMap::parse("control = 0\ncontrol = 1\nshards = [1]\n").unwrap_err();
        assert_eq!(
            err,
            CoreMapError::DuplicateKey {
                key: "control".into(),
                line: 2,
                col: 1
            }
        );
    }

    #[test]
    fn position_counts_characters_and_clamps() {
        assert_eq!(position("abc", 0), (1, 1));
        assert_eq!(position("abc", 2), (1, 3));
        assert_eq!(position("a\nbc", 3), (2, 2));
        assert_eq!(position("é = x", 4), (1, 4));
        assert_eq!(position("é", 1), (1, 1));
        assert_eq!(position("ab", 99), (1, 3));
    }

    // ---- validation ------------------------------------------------------

    #[test]
    fn valid_map_has_no_warnings() {
        let v = map(0, &[1, 2, 3]).validate(&Topology::fake(4)).unwrap();
        assert_eq!(v.map, map(0, &[1, 2, 3]));
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        assert_eq!(v.housekeeping, vec![0]);
    }

    #[test]
    fn unused_cores_are_housekeeping() {
        let v = map(0, &[2, 3]).validate(&Topology::fake(6)).unwrap();
        assert_eq!(v.housekeeping, vec![0, 1, 4, 5]);
    }

    #[test]
    fn shard_on_missing_core_is_rejected_with_online_list() {
        let err = map(0, &[1, 7]).validate(&Topology::fake(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "core map key `shards`: core 7 does not exist on this machine (cores 0-1 online)"
        );
    }

    #[test]
    fn control_on_missing_core_is_rejected() {
        let err = map(9, &[1]).validate(&Topology::fake(4)).unwrap_err();
        assert_eq!(
            err,
            CoreMapError::NoSuchCore {
                key: "control",
                core: 9,
                online: "0-3".into()
            }
        );
    }

    #[test]
    fn cores_outside_the_affinity_mask_are_rejected() {
        // e.g. a container limited to cores 2,3 and 6.
        let topo = Topology::new([2, 3, 6], BTreeMap::new(), None);
        let err = map(2, &[3, 4]).validate(&topo).unwrap_err();
        assert_eq!(
            err.to_string(),
            "core map key `shards`: core 4 does not exist on this machine (cores 2-3,6 online)"
        );
        assert!(map(2, &[3, 6]).validate(&topo).is_ok());
    }

    #[test]
    fn duplicate_shard_is_rejected() {
        let err = map(0, &[1, 2, 1]).validate(&Topology::fake(4)).unwrap_err();
        assert_eq!(err, CoreMapError::DuplicateShard { core: 1 });
        assert_eq!(
            err.to_string(),
            "core map key `shards`: core 1 listed twice"
        );
    }

    #[test]
    fn empty_shards_is_rejected() {
        let err = CoreMap::parse("control = 0\nshards = []\n")
            .unwrap()
            .validate(&Topology::fake(4))
            .unwrap_err();
        assert_eq!(err, CoreMapError::EmptyShards);
        assert_eq!(err.to_string(), "core map key `shards`: must not be empty");
    }

    #[test]
    fn shard_on_control_core_is_a_warning_not_an_error() {
        let v = map(0, &[0, 1]).validate(&Topology::fake(2)).unwrap();
        assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
        assert!(v.warnings[0].contains("core 0 is both the control core and a shard"));
        assert_eq!(v.housekeeping, Vec::<usize>::new());
    }

    #[test]
    fn shards_spanning_numa_nodes_warn() {
        let topo = Topology::fake_numa(16, 2);
        let v = map(0, &[1, 2, 8, 9]).validate(&topo).unwrap();
        assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
        assert_eq!(
            v.warnings[0],
            "core map key `shards`: shards span 2 NUMA nodes (node 0: cores 1-2; node 1: \
             cores 8-9); cross-node memory and NIC traffic adds latency, prefer shards on the \
             NIC's node"
        );
        // All shards on one node: no warning, even if control is on another.
        let v = map(0, &[8, 9, 10]).validate(&topo).unwrap();
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        // Unknown NUMA: no warning.
        let v = map(0, &[1, 8]).validate(&Topology::fake(16)).unwrap();
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn warnings_accumulate() {
        let v = map(0, &[0, 9])
            .validate(&Topology::fake_numa(16, 2))
            .unwrap();
        assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
        assert!(v.warnings.iter().all(|w| !w.contains('\n')));
    }

    // ---- probe -----------------------------------------------------------

    #[test]
    fn probe_on_one_core_shares_it_with_a_warning() {
        let v = CoreMap::probe(&Topology::fake(1));
        assert_eq!(v.map, map(0, &[0]));
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("core 0 is both the control core and a shard"));
    }

    #[test]
    fn probe_on_two_cores() {
        let v = CoreMap::probe(&Topology::fake(2));
        assert_eq!(v.map, map(0, &[1]));
        assert!(v.warnings.is_empty());
        assert_eq!(v.housekeeping, vec![0]);
    }

    #[test]
    fn probe_on_sixteen_cores() {
        let v = CoreMap::probe(&Topology::fake(16));
        assert_eq!(v.map, map(0, &(1..16).collect::<Vec<_>>()));
        assert!(v.warnings.is_empty());
        assert!(!v.map.isolate_irq_hint);
    }

    #[test]
    fn probe_on_sixteen_cores_two_numa_nodes_warns() {
        let v = CoreMap::probe(&Topology::fake_numa(16, 2));
        assert_eq!(v.map.shards.len(), 15);
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("NUMA"));
    }

    #[test]
    fn probe_uses_the_lowest_allowed_core_for_control() {
        let topo = Topology::new([4, 5, 6], BTreeMap::new(), None);
        let v = CoreMap::probe(&topo);
        assert_eq!(v.map, map(4, &[5, 6]));
    }

    #[test]
    fn probe_on_an_empty_topology_does_not_panic() {
        let v = CoreMap::probe(&Topology::new([], BTreeMap::new(), None));
        assert_eq!(v.map, map(0, &[0]));
        assert_eq!(v.warnings.len(), 1);
    }

    #[test]
    fn probe_result_always_revalidates() {
        for n in 1..=32 {
            let topo = Topology::fake(n);
            let v = CoreMap::probe(&topo);
            assert_eq!(v.map.validate(&topo).unwrap(), v, "n = {n}");
        }
    }

    // ---- IRQ hint --------------------------------------------------------

    #[test]
    fn irq_hint_only_when_asked() {
        let v = map(0, &[1, 2, 3]).validate(&Topology::fake(4)).unwrap();
        assert_eq!(v.irq_hint(), None);
        let mut m = map(0, &[1, 2, 3]);
        m.isolate_irq_hint = true;
        let hint = m.validate(&Topology::fake(4)).unwrap().irq_hint().unwrap();
        assert!(hint.contains("IRQBALANCE_BANNED_CPULIST=1-3"), "{hint}");
        assert!(hint.contains("write 0 to /proc/irq/"), "{hint}");
        assert!(!hint.contains('\n'));
    }

    #[test]
    fn irq_hint_when_no_core_is_free() {
        let mut m = map(0, &[0, 1]);
        m.isolate_irq_hint = true;
        let hint = m.validate(&Topology::fake(2)).unwrap().irq_hint().unwrap();
        assert!(hint.contains("cannot be kept off shard cores"), "{hint}");
    }
}
