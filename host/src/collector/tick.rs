//! `tick`: a message `{tick: TIME}` (plus kwargs) on a schedule, `every: 5s` or `cron:` in
//! UTC. TIME is the scheduled fire time in RFC 3339 UTC, not the moment the message was
//! added. The next fire time always comes from the schedule, so nothing drifts; fire times
//! that passed while the host was busy or the broker down are skipped (and logged), never
//! fired in a burst. With `at_start: true`, one tick is also sent when the collector starts.

use std::time::Duration;

use anyhow::Context as _;

use crate::collector::schedule::Schedule;
use crate::collector::{Context, Exit};
use crate::config::TickSchedule;
use crate::time::{rfc3339, unix_ms as now_ms};

/// Longest single sleep, so a wall-clock change is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(30);

pub async fn run(ctx: Context, spec: &TickSchedule, at_start: bool) -> anyhow::Result<Exit> {
    let name = ctx.service.name.clone();
    let schedule = Schedule::new(spec).with_context(|| format!("service {name:?}: tick collector"))?;
    let never = || anyhow::anyhow!("service {name:?}: the tick schedule has no next fire time");
    let taskbacks = ctx.log_taskbacks();
    let describe = match spec {
        TickSchedule::Every(period) => format!("every {}", super::humanize(*period)),
        TickSchedule::Cron(expr) => format!("cron `{expr}` (UTC)"),
    };
    let mut last = now_ms();
    if at_start {
        fire(&ctx, last).await?;
    }
    let mut next = schedule.next_after(last).ok_or_else(never)?;
    tracing::info!(service = %name, schedule = %describe, next = %rfc3339(next), "tick collector started");
    let exit = loop {
        let wait = next.saturating_sub(now_ms());
        if wait > 0 {
            let pause = Duration::from_millis(wait.unsigned_abs()).min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(pause) => continue,
                () = ctx.shutdown.cancelled() => break Exit::Stopped,
            }
        }
        if ctx.shutdown.is_cancelled() {
            break Exit::Stopped;
        }
        fire(&ctx, next).await?;
        last = next;
        // The fire time after the one just sent; when two or more of them have passed
        // meanwhile, resume with the first one not yet past and skip the rest.
        let now = now_ms();
        next = schedule.next_after(last).ok_or_else(never)?;
        if schedule.next_after(next).is_some_and(|after| after <= now) {
            let resume = schedule.next_after(now - 1).ok_or_else(never)?;
            tracing::warn!(
                service = %name,
                from = %rfc3339(next),
                until = %rfc3339(resume),
                "fell behind the schedule; skipping the ticks in between"
            );
            next = resume;
        }
    };
    taskbacks.finish(&name).await;
    Ok(exit)
}

async fn fire(ctx: &Context, at_ms: i64) -> anyhow::Result<()> {
    let tick = rfc3339(at_ms);
    match ctx.add_patiently(vec![("tick".to_owned(), tick.clone())]).await {
        Ok(id) => {
            tracing::debug!(service = %ctx.service.name, tick = %tick, id = %id, "tick");
            Ok(())
        }
        Err(err) if ctx.shutdown.is_cancelled() => {
            tracing::warn!(service = %ctx.service.name, tick = %tick, error = %err, "tick not sent: shutting down");
            Ok(())
        }
        Err(err) => Err(err).with_context(|| format!("cannot send tick {tick}")),
    }
}
