//! A pure timer queue: what is due when, in the order it was asked for. The shard
//! host, the membership driver and the simulator keep their timers in it instead of
//! hand-written heaps; it never reads a clock (every query takes `now`, the time since
//! an epoch the driver picks, as `protocol::Time` and `membership::Time` are).

#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

/// A point of virtual or real time: time since the driver's epoch.
type Time = Duration;

/// Timers ordered by due time, ties broken by insertion order (first in, first out),
/// so that a driver firing them is deterministic.
#[derive(Debug)]
pub struct TimerQueue<T> {
    heap: BinaryHeap<Due<T>>,
    seq: u64,
}

#[derive(Debug)]
struct Due<T> {
    at: Time,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        // `BinaryHeap` is a max-heap: reversed, the earliest (then the oldest) is on top.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Arms `item` to be due at `at`.
    pub fn insert(&mut self, at: Time, item: T) {
        self.seq += 1;
        self.heap.push(Due {
            at,
            seq: self.seq,
            item,
        });
    }

    /// When the earliest timer is due (`None`: nothing armed).
    pub fn next_due(&self) -> Option<Time> {
        self.heap.peek().map(|d| d.at)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Time) -> Option<T> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|d| d.item)
    }

    /// Removes and returns the earliest timer with its due time, due or not (a
    /// discrete-event driver advances its clock to it).
    pub fn pop_next(&mut self) -> Option<(Time, T)> {
        self.heap.pop().map(|d| (d.at, d.item))
    }

    /// Timers armed, due or not.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Disarms every timer (a driver that stopped for good).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    #[test]
    fn pops_earliest_first_and_ties_in_insertion_order() {
        let mut q = TimerQueue::new();
        q.insert(ms(30), "c");
        q.insert(ms(10), "a1");
        q.insert(ms(20), "b");
        q.insert(ms(10), "a2");
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_due(), Some(ms(10)));
        let mut got = Vec::new();
        while let Some(t) = q.pop_due(ms(30)) {
            got.push(t);
        }
        assert_eq!(got, ["a1", "a2", "b", "c"]);
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn nothing_pops_before_it_is_due() {
        let mut q = TimerQueue::new();
        q.insert(ms(10), 1);
        q.insert(ms(20), 2);
        assert_eq!(q.pop_due(ms(9)), None);
        assert_eq!(q.pop_due(ms(10)), Some(1));
        assert_eq!(q.pop_due(ms(19)), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_next(), Some((ms(20), 2)));
        assert_eq!(q.pop_next(), None);
    }

    #[test]
    fn clear_disarms_everything() {
        let mut q = TimerQueue::new();
        q.insert(ms(10), 1);
        q.insert(ms(20), 2);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
        assert_eq!(q.pop_due(ms(30)), None);
        q.insert(ms(5), 3);
        assert_eq!(q.pop_due(ms(5)), Some(3));
    }
}
