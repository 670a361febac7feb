//! `rate_limit: {per: user, max: 5, every: 10s}`: flood protection, counted in the broker so
//! it holds across workers and processes.
//!
//! Before a message runs, it is counted in its bucket (the service, or the value of the
//! `per` field) for the current window, which starts with the bucket's first message and
//! lasts `every`. Up to `max` run. The next one gets one polite reply instead of running (a
//! taskback like a normal reply, under the torch task's `out_key`, else `text`); the rest
//! of the window's messages are acknowledged without running and without a reply (counted,
//! logged at debug). Lines a torch task with a `prefix:` would ignore (chatter, not
//! commands) are not counted, nor are redeliveries of a message whose worker died (it was
//! counted the first time). When the broker cannot count, the message runs.

use std::sync::Arc;
use std::time::Duration;

use super::Finished;
use crate::broker::{Broker, Completion, Delivery};
use crate::config::{RateLimit, RatePer, Service, TaskSpec};
use crate::engine::Message;
use crate::pipeline::Outcome;

/// A service's rate limit, bound to its broker.
pub(super) struct Limiter {
    broker: Arc<dyn Broker>,
    service: String,
    limit: RateLimit,
    /// Field of the polite reply.
    reply_key: String,
    /// `(in_key, prefix)` of a torch task with a prefix: lines without it are not counted.
    commands: Option<(String, String)>,
}

impl Limiter {
    /// The service's limiter, when it has a `rate_limit:`.
    pub(super) fn new(spec: &Service, broker: Arc<dyn Broker>) -> Option<Arc<Self>> {
        let limit = spec.rate_limit.clone()?;
        let torch = spec.tasks.iter().find_map(|t| match t {
            TaskSpec::Torch(torch) => Some(torch),
            TaskSpec::Wasm(_) => None,
        });
        let reply_key = torch.map_or_else(|| "text".to_owned(), |t| t.out_key.clone());
        let commands = torch.and_then(|t| t.prefix.clone().map(|p| (t.in_key.clone(), p)));
        Some(Arc::new(Self { broker, service: spec.name.clone(), limit, reply_key, commands }))
    }

    /// Counts `delivery`; `None` when it may run, else how it ends without running.
    pub(super) async fn check(&self, delivery: &Delivery) -> Option<Finished> {
        // A redelivered message (its worker died) was counted when first delivered.
        if delivery.not_utf8.is_some() || delivery.deliveries > 1 {
            return None;
        }
        let bucket = bucket(&self.limit.per, self.commands.as_ref(), delivery)?;
        let counted = match self.broker.rate_count(&self.service, &bucket, self.limit.every).await {
            Ok(counted) => counted,
            Err(err) => {
                tracing::warn!(
                    service = %self.service,
                    id = %delivery.id,
                    error = %err,
                    "cannot count the message against rate_limit; running it"
                );
                return None;
            }
        };
        if counted.count <= self.limit.max {
            return None;
        }
        let msg = Message { id: delivery.id.clone(), service: self.service.clone(), fields: delivery.fields.clone() };
        let taskbacks = if counted.count == self.limit.max + 1 {
            let text = self.refusal(counted.left_ms);
            tracing::info!(service = %self.service, id = %msg.id, count = counted.count, "rate limit reached; answered once, not run");
            Outcome { results: vec![(self.reply_key.clone(), text)], ..Outcome::default() }.taskbacks(&msg)
        } else {
            tracing::debug!(
                service = %self.service,
                id = %msg.id,
                count = counted.count,
                "rate limit exceeded; acknowledged without running"
            );
            Vec::new()
        };
        Some(Finished::Done(Completion { id: msg.id, taskbacks }, msg.fields))
    }

    /// "rate limit: at most 5 messages per 10s per user; try again in 7s".
    fn refusal(&self, left_ms: u64) -> String {
        let who = match &self.limit.per {
            RatePer::Service => "for this service".to_owned(),
            RatePer::Field(field) => format!("per {field}"),
        };
        let max = self.limit.max;
        let messages = if max == 1 { "message" } else { "messages" };
        let again = left_ms.div_ceil(1000).max(1);
        format!("rate limit: at most {max} {messages} per {} {who}; try again in {again}s", human(self.limit.every))
    }
}

/// The bucket `delivery` counts in, or `None` when it is not counted (a line that the torch
/// task's `prefix` marks as chatter).
fn bucket(per: &RatePer, commands: Option<&(String, String)>, delivery: &Delivery) -> Option<String> {
    let get = |name: &str| delivery.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some((in_key, prefix)) = commands
        && !get(in_key).is_some_and(|line| line.trim_start().starts_with(prefix.as_str()))
    {
        return None;
    }
    Some(match per {
        RatePer::Service => "service".to_owned(),
        RatePer::Field(field) => match get(field) {
            // The value is the sender's choice: a long one becomes its SHA-256, so a bucket's
            // broker key stays short whatever a message carries.
            Some(value) if value.len() > MAX_BUCKET_VALUE => {
                use sha2::{Digest as _, Sha256};
                format!("{field}#{}", crate::text::hex(&Sha256::digest(value.as_bytes())))
            }
            Some(value) => format!("{field}={value}"),
            None => format!("{field}!"),
        },
    })
}

/// Longest field value used as is in a bucket's name; longer ones are hashed.
const MAX_BUCKET_VALUE: usize = 64;

/// `10s`, `2m`, `1h`, `1d`, `250ms`: the largest unit that divides the duration.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pairs: &[(&str, &str)]) -> Delivery {
        let fields = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Delivery { id: "1-0".into(), fields, deliveries: 1, not_utf8: None }
    }

    #[test]
    fn buckets_per_field_value_or_service_and_chatter_is_not_counted() {
        let user = RatePer::Field("user".into());
        let ann = msg(&[("user", "ann"), ("text", ".roll")]);
        assert_eq!(bucket(&user, None, &ann).as_deref(), Some("user=ann"));
        assert_eq!(bucket(&user, None, &msg(&[("text", "x")])).as_deref(), Some("user!"));
        assert_eq!(bucket(&RatePer::Service, None, &ann).as_deref(), Some("service"));
        let long = "x".repeat(100_000);
        let hashed = bucket(&user, None, &msg(&[("user", &long)])).expect("a bucket");
        assert!(hashed.starts_with("user#") && hashed.len() == "user#".len() + 64, "{hashed}");
        assert_ne!(hashed, bucket(&user, None, &msg(&[("user", &"y".repeat(100_000))])).expect("a bucket"));
        let commands = ("text".to_owned(), ".".to_owned());
        assert_eq!(bucket(&user, Some(&commands), &ann).as_deref(), Some("user=ann"));
        assert_eq!(bucket(&user, Some(&commands), &msg(&[("user", "ann"), ("text", "hi all")])), None);
        assert_eq!(bucket(&user, Some(&commands), &msg(&[("user", "ann")])), None);
    }

    #[test]
    fn windows_read_as_written() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
    }
}
