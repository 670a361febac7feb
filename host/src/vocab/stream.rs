//! Which of a service's three streams, and its name in broker keys.

use serde::Deserialize;

/// Which of a service's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// `data`: the messages workers consume.
    Data,
    /// `taskback`: what the pipeline sends back to the collector.
    Taskback,
    /// `dead`: messages that failed for good.
    Dead,
}

impl StreamKind {
    /// The stream's name: the last part of its key (`{ns}:{service}:data`).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Data => "data",
            StreamKind::Taskback => "taskback",
            StreamKind::Dead => "dead",
        }
    }
}
