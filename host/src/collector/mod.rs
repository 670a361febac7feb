//! Native collectors: long-lived sources of a service's messages, and the receivers of its
//! taskbacks.
//!
//! ## Layout
//! - `mod.rs`: [`run`], dispatch on the collector kind, and the shared taskback reader.
//! - `stdin.rs`: interactive chat on standard input and output.

mod stdin;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, COLLECTOR_GROUP, Entry, Fields, StreamKind};
use crate::config::{CollectorKind, Service};

/// How a collector ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Its input ended (e.g. end of standard input): the process may shut down.
    Finished,
    /// The shutdown token was cancelled.
    Stopped,
}

/// Everything a collector needs.
#[derive(Clone)]
pub struct Context {
    pub service: Service,
    pub broker: Arc<dyn Broker>,
    /// Consumer name in the service's collector group on the taskback stream.
    pub consumer: String,
    pub shutdown: CancellationToken,
}

impl Context {
    /// Adds one message built from `fields` plus the collector's kwargs, refusing it
    /// when it exceeds `limits.message_kb`.
    pub async fn add(&self, fields: Fields) -> anyhow::Result<String> {
        let mut message = Vec::with_capacity(fields.len() + self.kwargs().len());
        message.extend(self.kwargs().iter().map(|(k, v)| (k.clone(), v.clone())));
        crate::pipeline::merge(&mut message, fields);
        let bytes: usize = message.iter().map(|(k, v)| k.len() + v.len()).sum();
        let max = self.service.limits.message_kb.saturating_mul(1024);
        if bytes as u64 > max {
            anyhow::bail!(
                "message of {bytes} bytes exceeds limits.message_kb = {} of service {:?}",
                self.service.limits.message_kb,
                self.service.name
            );
        }
        Ok(self.broker.add(&self.service.name, StreamKind::Data, &message).await?)
    }

    fn kwargs(&self) -> &crate::config::Kwargs {
        static EMPTY: std::sync::OnceLock<crate::config::Kwargs> = std::sync::OnceLock::new();
        self.service.collector.as_ref().map_or_else(|| EMPTY.get_or_init(Default::default), |c| &c.kwargs)
    }

    /// Reads taskbacks through the collector group until shutdown, calling `handle` on each
    /// and acknowledging it afterwards.
    pub async fn taskbacks(&self, mut handle: impl FnMut(&Entry)) {
        let mut failures = 0u32;
        while !self.shutdown.is_cancelled() {
            let read = self
                .broker
                .read_group(
                    &self.service.name,
                    StreamKind::Taskback,
                    COLLECTOR_GROUP,
                    &self.consumer,
                    64,
                    Duration::from_millis(500),
                )
                .await;
            match read {
                Ok(entries) => {
                    failures = 0;
                    for entry in &entries {
                        handle(entry);
                    }
                    let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
                    if let Err(err) =
                        self.broker.ack(&self.service.name, StreamKind::Taskback, COLLECTOR_GROUP, &ids).await
                    {
                        tracing::error!(service = %self.service.name, error = %err, "cannot acknowledge taskbacks");
                    }
                }
                Err(err) => {
                    failures += 1;
                    tracing::error!(service = %self.service.name, error = %err, "cannot read taskbacks");
                    let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                }
            }
        }
    }
}

/// Runs the service's collector until its input ends or `shutdown`.
pub async fn run(ctx: Context) -> anyhow::Result<Exit> {
    let Some(spec) = ctx.service.collector.clone() else {
        return Ok(Exit::Stopped);
    };
    match spec.kind {
        CollectorKind::Stdin => stdin::run(ctx).await,
        other => anyhow::bail!("service {:?}: collector {other:?} is not implemented yet", ctx.service.name),
    }
}
