//! A service's pipeline: its steps in order, each seeing the message and the results so far.
//!
//! Each step sits behind an [`ArcSwap`], so a deployed version (`crate::deploy`) replaces it
//! between messages without a lock on the hot path: a message takes the current version of
//! every step once, when it starts, and keeps it to the end; the next message gets the new one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::broker::{Fields, ID_FIELD};
use crate::engine::{CallError, CallStats, Component, KvScope, Message};
use crate::fields::{RECEIPT_FIELD, RECEIPT_REQUEST, asks_receipt, guest_pairs, with_host_keys};
use crate::torch::Torch;

/// One step of a pipeline, swappable between messages.
pub enum Step {
    /// The built-in torch task, bound to the service's shell.
    Torch(Arc<ArcSwap<Torch>>),
    /// A Wasm task.
    Task(Arc<ArcSwap<Component>>),
}

/// The version of one step a message runs on, taken when the message started.
enum Current {
    Torch(Arc<Torch>),
    Task(Arc<Component>),
}

impl Step {
    fn current(&self) -> Current {
        match self {
            Step::Torch(torch) => Current::Torch(torch.load_full()),
            Step::Task(task) => Current::Task(task.load_full()),
        }
    }
}

impl Current {
    /// Name used in errors and dead letters: `component@version`, or `torch` with its
    /// shell's `name@version`.
    fn name(&self) -> String {
        match self {
            Current::Torch(torch) => format!("torch ({}@{})", torch.shell().name, torch.shell().version),
            Current::Task(component) => format!("{}@{}", component.name, component.version),
        }
    }

    /// Name of the step's trace span: the component's name, or `torch`.
    fn span_name(&self) -> &str {
        match self {
            Current::Torch(_) => "torch",
            Current::Task(component) => &component.name,
        }
    }
}

/// What a successful pipeline produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Merged results: a later step's key overwrites an earlier one's, in place.
    pub results: Fields,
    /// Taskbacks the steps sent through the `taskback` import.
    pub extra_taskbacks: Vec<Fields>,
    /// Summed cost of the calls.
    pub stats: CallStats,
}

/// A failed step: which one, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step}: {error}")]
pub struct StepError {
    /// The step's name (component name, or `torch`).
    pub step: String,
    /// Why it failed.
    pub error: CallError,
}

/// The ordered steps of one service.
pub struct Pipeline {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The service's kv scope, handed to components that were granted `kv`.
    pub kv: Option<KvScope>,
}

pub use crate::fields::merge;

impl Pipeline {
    /// Runs every step; the first failure stops the pipeline.
    pub async fn run(&self, msg: &Message) -> Result<Outcome, StepError> {
        let mut outcome = Outcome::default();
        // Every step's version is fixed now, for the whole message.
        let steps: Vec<Current> = self.steps.iter().map(Step::current).collect();
        for step in &steps {
            let call = crate::observe::trace::CallSpan::start(step.span_name());
            let fail = |error: CallError| {
                call.fail(&error.to_string());
                StepError { step: step.name(), error }
            };
            let (new, taskbacks, stats) = match step {
                Current::Torch(torch) => {
                    let out = torch.run(msg, self.kv.clone()).await.map_err(fail)?;
                    let results = out.value.map(|reply| (torch.spec.out_key.clone(), reply)).into_iter().collect();
                    (results, out.taskbacks, out.stats)
                }
                Current::Task(component) => {
                    let out = component.run(msg, &outcome.results, self.kv.clone()).await.map_err(fail)?;
                    (out.value, out.taskbacks, out.stats)
                }
            };
            // Host-owned keys (`cannon.*`) a step returns are dropped, every occurrence.
            let merging = crate::worker::stages::STAGES.clock();
            merge(&mut outcome.results, guest_pairs(new));
            if let Some(merging) = merging {
                crate::worker::stages::STAGES.merge_step(merging.elapsed());
            }
            outcome.extra_taskbacks.extend(taskbacks);
            outcome.stats.instantiate += stats.instantiate;
            outcome.stats.wall += stats.wall;
            outcome.stats.waited += stats.waited;
            outcome.stats.memory_peak = outcome.stats.memory_peak.max(stats.memory_peak);
            outcome.stats.fuel = match (outcome.stats.fuel, stats.fuel) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(outcome)
    }
}

impl Outcome {
    /// The taskbacks to deliver: `cannon.id` first, then the message's fields and the
    /// results (merged, later keys winning in place) when results are non-empty; then the
    /// extra ones, each `cannon.id` first followed by what the step sent. Host-owned keys
    /// (`cannon.*`) from the message, the results or a step are dropped, all occurrences, so
    /// every taskback holds exactly one `cannon.id`, the host's, in the first pair.
    pub fn taskbacks(self, msg: &Message) -> Vec<Fields> {
        // `receipt: yes` from a step (never from the message) becomes the host's `cannon.receipt: yes`.
        let head = |receipt: bool| {
            let mut head = vec![(ID_FIELD.to_owned(), msg.id.clone())];
            if receipt {
                head.push((RECEIPT_FIELD.to_owned(), "yes".to_owned()));
            }
            head
        };
        let mut out = Vec::with_capacity(1 + self.extra_taskbacks.len());
        if !self.results.is_empty() {
            let receipt = asks_receipt(&self.results);
            let mut entry = with_host_keys(head(receipt), msg.fields.iter().cloned().chain(self.results));
            if receipt {
                entry.retain(|(k, _)| k != RECEIPT_REQUEST);
            }
            out.push(entry);
        }
        for extra in self.extra_taskbacks {
            let receipt = asks_receipt(&extra);
            let rest = extra.into_iter().filter(|(k, _)| !(receipt && k == RECEIPT_REQUEST));
            out.push(with_host_keys(head(receipt), rest));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn taskback_is_message_plus_results_plus_id() {
        let msg = Message { id: "1-0".into(), service: "s".into(), fields: f(&[("user", "me"), ("text", "hi")]) };
        let outcome = Outcome { results: f(&[("text", "HI")]), ..Outcome::default() };
        assert_eq!(outcome.taskbacks(&msg), vec![f(&[("cannon.id", "1-0"), ("user", "me"), ("text", "HI")])]);
        let empty = Outcome::default();
        assert!(empty.taskbacks(&msg).is_empty());
    }

    #[test]
    fn a_step_asks_for_a_receipt_the_message_cannot() {
        let msg = Message { id: "3-0".into(), service: "s".into(), fields: f(&[("receipt", "yes"), ("text", "hi")]) };
        // The message's own `receipt: yes` is data, not a request.
        let plain = Outcome { results: f(&[("text", "HI")]), ..Outcome::default() };
        assert_eq!(plain.taskbacks(&msg), vec![f(&[("cannon.id", "3-0"), ("receipt", "yes"), ("text", "HI")])]);
        let asking = Outcome {
            results: f(&[("text", "HI"), ("receipt", "yes")]),
            extra_taskbacks: vec![f(&[("receipt", "yes"), ("to", "bob")]), f(&[("receipt", "maybe")])],
            ..Outcome::default()
        };
        assert_eq!(
            asking.taskbacks(&msg),
            vec![
                f(&[("cannon.id", "3-0"), ("cannon.receipt", "yes"), ("text", "HI")]),
                f(&[("cannon.id", "3-0"), ("cannon.receipt", "yes"), ("to", "bob")]),
                f(&[("cannon.id", "3-0"), ("receipt", "maybe")]),
            ]
        );
    }

    #[test]
    fn forged_host_keys_never_reach_a_taskback() {
        let msg = Message {
            id: "7-0".into(),
            service: "s".into(),
            fields: f(&[("cannon.id", "1-0"), ("text", "hi"), ("cannon.error", "fake")]),
        };
        let forged = f(&[("cannon.id", "1-0"), ("text", "FORGED"), ("Cannon.ID", "1-0"), ("cannon.id", "1-0")]);
        let outcome = Outcome {
            results: f(&[("text", "HI"), ("n", "1")]),
            extra_taskbacks: vec![forged.clone(), forged],
            ..Outcome::default()
        };
        let taskbacks = outcome.taskbacks(&msg);
        assert_eq!(taskbacks[0], f(&[("cannon.id", "7-0"), ("text", "HI"), ("n", "1")]));
        for extra in &taskbacks[1..] {
            assert_eq!(extra, &f(&[("cannon.id", "7-0"), ("text", "FORGED")]));
        }
        for taskback in &taskbacks {
            assert_eq!(crate::fields::host_id(taskback), Some("7-0"));
            assert_eq!(taskback.iter().filter(|(k, _)| crate::fields::is_host_key(k)).count(), 1);
        }
    }
}
