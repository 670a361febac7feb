//! `limits:` of a service and of a component: the ranges that make sense, and the
//! service's limits a component's own `limits:` starts from.

use super::loader::Loader;
use super::model::Limits;
use super::yaml::Node;

/// The problem text of a count or size that must not be zero.
pub(super) const AT_LEAST_ONE: &str = "must be at least 1";

/// The per-service limits a component's `limits:` overrides.
pub(crate) struct ServiceLimits<'n> {
    /// The service's limits (global defaults where it sets none).
    pub limits: Limits,
    /// The service's `limits:` mapping when it parsed cleanly.
    pub node: Option<&'n Node>,
}

/// Limits that make no sense; only keys present in `node` are checked (defaults are sane).
pub(crate) fn check_limits(ctx: &mut Loader, limits: &Limits, node: Option<&Node>, path: &str) {
    ctx.check(node, path, "timeout_ms", limits.timeout_ms == 0, AT_LEAST_ONE);
    let mb = limits.memory_mb;
    ctx.check(node, path, "memory_mb", mb == 0 || mb > 4096, "must be between 1 and 4096");
    ctx.check(node, path, "message_kb", limits.message_kb == 0, AT_LEAST_ONE);
    ctx.check(node, path, "max_fields", limits.max_fields == 0, AT_LEAST_ONE);
    ctx.check(node, path, "fuel", limits.fuel == Some(0), "must be at least 1 (or null for no fuel limit)");
    ctx.check(node, path, "compile_s", limits.compile_s == 0, AT_LEAST_ONE);
    let mb = limits.compile_mb;
    ctx.check(node, path, "compile_mb", !(64..=1 << 20).contains(&mb), "must be between 64 and 1048576");
}
