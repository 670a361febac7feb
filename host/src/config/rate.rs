//! A service's `rate_limit: {per: user, max: 5, every: 10s}`.

use super::de::join;
use super::duration::every;
use super::loader::{Loader, field, is_identifier};
use super::model::{RateLimit, RatePer};
use super::yaml::{Node, Value};

const KEYS: &[&str] = &["per", "max", "every"];

pub(crate) fn rate_limit(ctx: &mut Loader, node: &Node, path: &str) -> Option<RateLimit> {
    let fields = ctx.map(node, path, KEYS)?;
    let mut complete = true;
    for key in KEYS {
        if field(fields, key).is_none() {
            ctx.error(node, path, format!("missing `{key}:` (e.g. `rate_limit: {{per: user, max: 5, every: 10s}}`)"));
            complete = false;
        }
    }
    if !complete {
        return None;
    }
    let per_node = field(fields, "per")?;
    let per_path = join(path, "per");
    let per = match ctx.string(per_node, &per_path) {
        Some(name) if name == "service" => Some(RatePer::Service),
        Some(name) if is_identifier(&name, &['_', '-', '.']) => Some(RatePer::Field(name)),
        Some(name) => {
            let msg = format!("`{name}` is neither `service` nor a message field name (e.g. `user`, `channel`)");
            ctx.error(per_node, &per_path, msg);
            None
        }
        None => None,
    };
    let max_node = field(fields, "max")?;
    let max = match &max_node.value {
        Value::Int(n) if *n >= 1 => Some(u64::try_from(*n).unwrap_or(u64::MAX)),
        _ => {
            ctx.expected(max_node, &join(path, "max"), "a whole number of at least 1");
            None
        }
    };
    let every = every(ctx, field(fields, "every")?, &join(path, "every"));
    let (per, max, every) = (per?, max?, every?);
    Some(RateLimit { per, max, every })
}
