//! `workers.order_by: FIELD`: messages with the same value of FIELD run one after another,
//! in the order this worker read them; different values (and messages without the field)
//! run in parallel.
//!
//! The reader admits each message in read order. A message whose value is idle starts at
//! once (with a concurrency slot) and marks the value busy; one whose value is busy is
//! parked behind it without taking a slot, so one chatty user does not fill every slot
//! while waiting. The task that runs a value's message runs the parked ones after it, one
//! by one, on the same slot: the next starts only once the previous one is finished (its
//! retries included, and queued to the writer, so its taskback is written first), and the
//! value becomes idle when none is parked. Parked messages are bounded: when there are
//! `limit` of them the reader waits, as it waits for a slot.
//!
//! The order holds per worker process, among the messages it reads. Several worker
//! processes of one service (Redis) each read their share of the stream, so two messages
//! of one user read by two processes may overlap; a message reclaimed from a crashed worker
//! runs when it is reclaimed, after later ones that were already answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Finished;
use super::rate::Limiter;
use crate::broker::Delivery;
use crate::service::ServiceRuntime;

/// A message waiting for the one before it with the same value.
struct Parked {
    delivery: Delivery,
    /// Its place among the parked messages, given back when it starts.
    _place: OwnedSemaphorePermit,
}

/// Values with a message running, each with the messages parked behind it, in read order.
pub(super) struct Order {
    field: String,
    busy: Mutex<HashMap<String, VecDeque<Parked>>>,
    places: Arc<Semaphore>,
}

/// What the reader does with an admitted message.
pub(super) enum Admitted {
    /// Start it now, on a slot; `key` is its value when it has one (pass it to [`Order::next`]
    /// once it finished).
    Start { delivery: Delivery, key: Option<String> },
    /// It waits behind the running message of the same value, which will start it.
    Parked,
}

impl Order {
    /// Orders by `field`, parking at most `limit` messages.
    pub(super) fn new(field: String, limit: usize) -> Self {
        Self { field, busy: Mutex::default(), places: Arc::new(Semaphore::new(limit.max(1))) }
    }

    fn busy(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Parked>>> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The message's value of the field, if it has the field (the first, if it has several).
    fn key(&self, delivery: &Delivery) -> Option<String> {
        delivery.fields.iter().find(|(k, _)| *k == self.field).map(|(_, v)| v.clone())
    }

    /// Called by the reader for each message, in read order. Waits only when the message
    /// must be parked and `limit` messages already are.
    pub(super) async fn admit(&self, delivery: Delivery) -> Admitted {
        let Some(key) = self.key(&delivery) else {
            return Admitted::Start { delivery, key: None };
        };
        if self.start_if_idle(&key) {
            return Admitted::Start { delivery, key: Some(key) };
        }
        // The semaphore is never closed.
        let Ok(place) = self.places.clone().acquire_owned().await else {
            return Admitted::Start { delivery, key: Some(key) };
        };
        let mut busy = self.busy();
        match busy.get_mut(&key) {
            Some(queue) => {
                queue.push_back(Parked { delivery, _place: place });
                Admitted::Parked
            }
            // What it waited for finished meanwhile.
            None => {
                busy.insert(key.clone(), VecDeque::new());
                Admitted::Start { delivery, key: Some(key) }
            }
        }
    }

    /// Marks `key` busy if it is idle; true when it was.
    fn start_if_idle(&self, key: &str) -> bool {
        let mut busy = self.busy();
        if busy.contains_key(key) {
            return false;
        }
        busy.insert(key.to_owned(), VecDeque::new());
        true
    }

    /// The message of `key` that finished is done: the next one parked behind it, which
    /// the caller runs now on the same slot, or `None` (then `key` is idle again).
    pub(super) fn next(&self, key: &str) -> Option<Delivery> {
        let mut busy = self.busy();
        let queue = busy.get_mut(key)?;
        match queue.pop_front() {
            Some(parked) => Some(parked.delivery),
            None => {
                busy.remove(key);
                None
            }
        }
    }
}

/// Runs `delivery` on its slot, then (with `order_by`) the messages of the same value
/// parked behind it, one by one; frees the slot when none is left. Each message is
/// finished (queued to the writer) before the next starts. With a `rate_limit:`, each is
/// counted first and, over the limit, acknowledged without running.
pub(super) async fn run_slot(
    service: Arc<ServiceRuntime>,
    mut delivery: Delivery,
    key: Option<String>,
    (order, limiter): (Option<Arc<Order>>, Option<Arc<Limiter>>),
    slot: OwnedSemaphorePermit,
    done: mpsc::Sender<Finished>,
) {
    loop {
        // No `tracing` span per message: it cost 2-3% of the worker's CPU (docs/performance.md,
        // round 9). Each record of a message's path names its service and id itself.
        let limited = match &limiter {
            Some(limiter) => limiter.check(&delivery).await,
            None => None,
        };
        let queued = match limited {
            // Not run: its reply (or nothing) goes to the writer, to be acknowledged.
            Some(finished) => match done.reserve().await {
                Ok(queued) => {
                    queued.send(finished);
                    true
                }
                Err(_) => false,
            },
            None => super::message::process(service.clone(), delivery, done.clone()).await,
        };
        if !queued {
            break;
        }
        let (Some(order), Some(key)) = (&order, &key) else { break };
        match order.next(key) {
            Some(next) => delivery = next,
            None => break,
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, user: Option<&str>) -> Delivery {
        let fields = user.map(|u| vec![("user".to_owned(), u.to_owned())]).unwrap_or_default();
        Delivery { id: id.to_owned(), fields, deliveries: 1, not_utf8: None }
    }

    fn started(admitted: Admitted) -> Option<(String, Option<String>)> {
        match admitted {
            Admitted::Start { delivery, key } => Some((delivery.id, key)),
            Admitted::Parked => None,
        }
    }

    #[tokio::test]
    async fn same_value_waits_other_values_and_no_value_start() {
        let order = Order::new("user".into(), 8);
        assert_eq!(started(order.admit(msg("1", Some("ann"))).await), Some(("1".into(), Some("ann".into()))));
        assert_eq!(started(order.admit(msg("2", Some("ann"))).await), None);
        assert_eq!(started(order.admit(msg("3", Some("bob"))).await), Some(("3".into(), Some("bob".into()))));
        assert_eq!(started(order.admit(msg("4", None)).await), Some(("4".into(), None)));
        assert_eq!(started(order.admit(msg("5", Some("ann"))).await), None);
        assert_eq!(order.places.available_permits(), 6, "two parked");
        // ann's first finished: her second runs, then her third, then she is idle.
        assert_eq!(order.next("ann").map(|d| d.id), Some("2".into()));
        assert_eq!(order.next("ann").map(|d| d.id), Some("5".into()));
        assert_eq!(order.next("ann").map(|d| d.id), None);
        assert_eq!(started(order.admit(msg("6", Some("ann"))).await), Some(("6".into(), Some("ann".into()))));
        assert_eq!(order.next("bob").map(|d| d.id), None);
        assert_eq!(order.places.available_permits(), 8, "none parked");
    }

    #[tokio::test]
    async fn parking_is_bounded_and_a_start_frees_a_place() {
        let order = Arc::new(Order::new("user".into(), 1));
        assert!(started(order.admit(msg("1", Some("ann"))).await).is_some());
        assert!(started(order.admit(msg("2", Some("ann"))).await).is_none());
        let third = tokio::spawn({
            let order = order.clone();
            async move { started(order.admit(msg("3", Some("ann"))).await) }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the only place is taken");
        assert_eq!(order.next("ann").map(|d| d.id), Some("2".into()));
        assert_eq!(third.await.ok(), Some(None), "parked once 2 started");
        assert_eq!(order.next("ann").map(|d| d.id), Some("3".into()));
    }
}
