//! The simulated clock: when a client's update would arrive, given its device.
//!
//! A client with profile (speed `v` steps/s, bandwidth `b` bytes/s) that runs `τ`
//! local steps on a model of `d` f32 parameters completes after
//! `t = τ / v + 2 · 4d / b` simulated seconds (download + upload of the model). The
//! asynchronous loop orders events by this time, ties by client id.

use fedpace_core::ClientId;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One client's device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeviceProfile {
    /// Local steps per simulated second.
    pub speed: f64,
    /// Bytes per simulated second.
    pub bandwidth: f64,
    /// Probability of being available in a round.
    pub availability: f64,
    /// Probability of dropping out once selected.
    pub dropout: f64,
    /// Largest number of local steps per round, if the device has a limit.
    pub max_steps: Option<u32>,
}

/// Bytes of one model transfer for `d` f32 parameters.
pub fn model_bytes(d: usize) -> f64 {
    4.0 * d as f64
}

/// Seconds spent on communication (model down and update up).
pub fn comm_seconds(p: &DeviceProfile, bytes: f64) -> f64 {
    if p.bandwidth.is_infinite() {
        0.0
    } else {
        2.0 * bytes / p.bandwidth
    }
}

/// Simulated seconds for `steps` local steps plus communication.
pub fn completion_seconds(p: &DeviceProfile, steps: u32, bytes: f64) -> f64 {
    steps as f64 / p.speed + comm_seconds(p, bytes)
}

/// The most local steps that fit in `budget` seconds (communication included).
pub fn steps_within(p: &DeviceProfile, budget: f64, bytes: f64) -> u32 {
    let t = budget - comm_seconds(p, bytes);
    if t <= 0.0 {
        0
    } else {
        // A tiny tolerance so that a budget computed as τ/v admits τ steps.
        ((t * p.speed) * (1.0 + 1e-12)).floor().min(u32::MAX as f64) as u32
    }
}

/// An event on the simulated clock.
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// When (simulated seconds).
    pub time: f64,
    /// Who.
    pub client: ClientId,
    /// What.
    pub payload: T,
}

impl<T> PartialEq for Event<T> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<T> Eq for Event<T> {}
impl<T> PartialOrd for Event<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Event<T> {
    // Reversed: BinaryHeap is a max-heap and we pop the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.time
            .total_cmp(&self.time)
            .then_with(|| o.client.cmp(&self.client))
    }
}

/// Events in simulated-time order, ties broken by client id.
#[derive(Debug)]
pub struct EventQueue<T> {
    heap: BinaryHeap<Event<T>>,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T> EventQueue<T> {
    /// Schedules an event.
    pub fn push(&mut self, time: f64, client: ClientId, payload: T) {
        self.heap.push(Event {
            time,
            client,
            payload,
        });
    }
    /// The earliest event (lowest client id among equal times).
    pub fn pop(&mut self) -> Option<Event<T>> {
        self.heap.pop()
    }
    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }
    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_by_time_then_client_id() {
        let mut q = EventQueue::default();
        q.push(2.0, 5, 'a');
        q.push(1.0, 9, 'b');
        q.push(2.0, 3, 'c');
        q.push(0.5, 7, 'd');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|e| e.payload)).collect();
        assert_eq!(order, vec!['d', 'b', 'c', 'a']);
    }

    #[test]
    fn completion_time_by_hand() {
        let p = DeviceProfile {
            speed: 4.0,
            bandwidth: 800.0,
            availability: 1.0,
            dropout: 0.0,
            max_steps: None,
        };
        // 10 steps / 4 + 2 · 400 bytes / 800 = 2.5 + 1
        assert_eq!(completion_seconds(&p, 10, model_bytes(100)), 3.5);
        assert_eq!(steps_within(&p, 3.5, model_bytes(100)), 10);
        assert_eq!(steps_within(&p, 1.0, model_bytes(100)), 0);
    }
}
