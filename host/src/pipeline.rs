//! A service's pipeline: its steps in order, each seeing the message and the results so far.

use std::sync::Arc;

use crate::broker::{Fields, ID_FIELD};
use crate::engine::{CallError, CallStats, Component, KvScope, Message};
use crate::torch::Torch;

/// One step of a pipeline.
pub enum Step {
    Torch(Arc<Torch>),
    Task(Arc<Component>),
}

impl Step {
    /// Name used in errors and logs: the component's name, or `torch`.
    pub fn name(&self) -> &str {
        match self {
            Step::Torch(_) => "torch",
            Step::Task(component) => &component.name,
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
    pub step: String,
    pub error: CallError,
}

/// The ordered steps of one service.
pub struct Pipeline {
    pub steps: Vec<Step>,
    /// The service's kv scope, handed to components that were granted `kv`.
    pub kv: Option<KvScope>,
}

/// Sets `key` to `value`, overwriting an existing pair in place.
pub fn merge(results: &mut Fields, new: Fields) {
    for (key, value) in new {
        match results.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => results.push((key, value)),
        }
    }
}

impl Pipeline {
    /// Runs every step; the first failure stops the pipeline.
    pub async fn run(&self, msg: &Message) -> Result<Outcome, StepError> {
        let mut outcome = Outcome::default();
        for step in &self.steps {
            let fail = |error| StepError { step: step.name().to_owned(), error };
            let (new, taskbacks, stats) = match step {
                Step::Torch(torch) => {
                    let out = torch.run(msg, self.kv.clone()).await.map_err(fail)?;
                    let results = out.value.map(|reply| (torch.spec.out_key.clone(), reply)).into_iter().collect();
                    (results, out.taskbacks, out.stats)
                }
                Step::Task(component) => {
                    let out = component.run(msg, &outcome.results, self.kv.clone()).await.map_err(fail)?;
                    (out.value, out.taskbacks, out.stats)
                }
            };
            merge(&mut outcome.results, new);
            outcome.extra_taskbacks.extend(taskbacks);
            outcome.stats.instantiate += stats.instantiate;
            outcome.stats.wall += stats.wall;
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
    /// The taskbacks to deliver: the message plus results plus `cannon.id` when results
    /// are non-empty, then the extra ones (each tagged with `cannon.id` as well).
    pub fn taskbacks(self, msg: &Message) -> Vec<Fields> {
        let mut out = Vec::with_capacity(1 + self.extra_taskbacks.len());
        if !self.results.is_empty() {
            let mut fields = msg.fields.clone();
            merge(&mut fields, self.results);
            merge(&mut fields, vec![(ID_FIELD.to_owned(), msg.id.clone())]);
            out.push(fields);
        }
        for mut extra in self.extra_taskbacks {
            merge(&mut extra, vec![(ID_FIELD.to_owned(), msg.id.clone())]);
            out.push(extra);
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
    fn later_keys_overwrite_in_place() {
        let mut results = f(&[("a", "1"), ("b", "2")]);
        merge(&mut results, f(&[("b", "3"), ("c", "4")]));
        assert_eq!(results, f(&[("a", "1"), ("b", "3"), ("c", "4")]));
    }

    #[test]
    fn taskback_is_message_plus_results_plus_id() {
        let msg = Message { id: "1-0".into(), service: "s".into(), fields: f(&[("user", "me"), ("text", "hi")]) };
        let outcome = Outcome { results: f(&[("text", "HI")]), ..Outcome::default() };
        assert_eq!(outcome.taskbacks(&msg), vec![f(&[("user", "me"), ("text", "HI"), ("cannon.id", "1-0")])]);
        let empty = Outcome::default();
        assert!(empty.taskbacks(&msg).is_empty());
    }
}
