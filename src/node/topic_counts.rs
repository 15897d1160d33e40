//! Deliveries per topic, with a bound on how many topics get a series of their own:
//! topics are chosen by clients, so an unbounded label would let one client grow
//! every node's metrics without limit. The first [`MAX_TOPIC_SERIES`] topics a shard
//! delivers are counted by name; later ones under [`OTHER_TOPIC`].

use rustc_hash::FxHashMap;

use crate::topic::Topic;

/// Topics counted by name, per shard and in `/metrics`.
pub const MAX_TOPIC_SERIES: usize = 64;
/// The label deliveries of the topics beyond the bound are counted under.
pub const OTHER_TOPIC: &str = "_other";

/// One shard's deliveries by topic.
#[derive(Debug, Default)]
pub struct TopicCounts {
    named: FxHashMap<Topic, u64>,
    other: u64,
}

impl TopicCounts {
    /// Counts one delivery of `topic`.
    pub fn count(&mut self, topic: &Topic) {
        if let Some(n) = self.named.get_mut(topic) {
            *n += 1;
        } else if self.named.len() < MAX_TOPIC_SERIES {
            self.named.insert(topic.clone(), 1);
        } else {
            self.other += 1;
        }
    }

    /// (topic, deliveries), `_other` last when anything was counted there.
    pub fn series(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .named
            .iter()
            .map(|(t, n)| (t.as_str().to_string(), *n))
            .collect();
        v.sort();
        if self.other > 0 {
            v.push((OTHER_TOPIC.to_string(), self.other));
        }
        v
    }
}

/// Sums shards' series into at most [`MAX_TOPIC_SERIES`] named ones (the busiest)
/// plus `_other`.
pub fn merge<'a>(shards: impl IntoIterator<Item = &'a [(String, u64)]>) -> Vec<(String, u64)> {
    let mut all: FxHashMap<&str, u64> = FxHashMap::default();
    for s in shards {
        for (t, n) in s {
            *all.entry(t.as_str()).or_default() += n;
        }
    }
    let other = all.remove(OTHER_TOPIC).unwrap_or(0);
    let mut v: Vec<(String, u64)> = all.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: u64 = v.iter().skip(MAX_TOPIC_SERIES).map(|(_, n)| n).sum();
    v.truncate(MAX_TOPIC_SERIES);
    if other + rest > 0 {
        v.push((OTHER_TOPIC.to_string(), other + rest));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_beyond_the_bound_are_counted_as_other() {
        let mut c = TopicCounts::default();
        for i in 0..100 {
            c.count(&Topic::new(&format!("t.{i}")).unwrap());
        }
        c.count(&Topic::new("t.0").unwrap());
        let s = c.series();
        assert_eq!(s.len(), MAX_TOPIC_SERIES + 1);
        assert_eq!(s.last().unwrap(), &(OTHER_TOPIC.to_string(), 36));
        assert_eq!(s.iter().map(|(_, n)| n).sum::<u64>(), 101);
        // Two shards with different topics merge into the same bound.
        let mut d = TopicCounts::default();
        for i in 100..200 {
            d.count(&Topic::new(&format!("t.{i}")).unwrap());
        }
        let m = merge([s.as_slice(), d.series().as_slice()]);
        assert_eq!(m.len(), MAX_TOPIC_SERIES + 1);
        assert_eq!(m[0], ("t.0".to_string(), 2), "busiest first");
        assert_eq!(m.iter().map(|(_, n)| n).sum::<u64>(), 201);
    }
}
