//! `stdin`: each line of standard input becomes a message `{user, text}`; each taskback is
//! printed on standard output (its `text` field, or the whole taskback as JSON when it has
//! none). A taskback that asks for a receipt (`cannon.receipt: yes`) gets one saying `ok`
//! (`printed`) once it is printed. At end of input the collector waits for the replies
//! still due (answers to receipts included), then finishes.
//! Replies are guest text: printed through [`crate::text`] (newlines kept, every other
//! control, C1 and bidi character escaped).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::broker::Entry;
use crate::collector::{Context, Exit};
use crate::fields::host_id;
use crate::text::{for_json, for_terminal, for_terminal_lines};

/// After end of input, how long to wait without any taskback before giving up on replies
/// (a pipeline with empty results sends none).
const REPLY_GRACE: Duration = Duration::from_secs(10);

fn render(entry: &Entry) -> String {
    match entry.fields.iter().rev().find(|(k, _)| k == "text") {
        Some((_, text)) => for_terminal_lines(text).into_owned(),
        None => {
            let object: serde_json::Map<String, serde_json::Value> =
                entry.fields.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            for_json(serde_json::Value::Object(object).to_string())
        }
    }
}

pub async fn run(ctx: Context) -> anyhow::Result<Exit> {
    let user =
        ctx.spec.kwargs.get("user").cloned().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "me".to_owned());
    let outstanding: Arc<Mutex<HashSet<String>>> = Arc::default();
    let last_reply = Arc::new(Mutex::new(Instant::now()));

    // The printer stops after its current read, so every taskback it took is acknowledged.
    let printer_stop = ctx.shutdown.child_token();
    let printer = {
        let mut ctx = ctx.clone();
        ctx.shutdown = printer_stop.clone();
        let outstanding = outstanding.clone();
        let last_reply = last_reply.clone();
        tokio::spawn(async move {
            let receipts = ctx.clone();
            let receipts = &receipts;
            ctx.for_each_taskback(|entry| {
                println!("{}", render(&entry));
                *last_reply.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                let outstanding = outstanding.clone();
                async move {
                    // Printed: the receipt (when asked for) says `ok`; its answer is awaited
                    // too, so it is outstanding before the message it reports on is not.
                    if let Some(id) = receipts.receipt(&entry.fields, Ok("printed")).await {
                        outstanding.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                    }
                    if let Some(id) = host_id(&entry.fields) {
                        outstanding.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
                    }
                }
            })
            .await;
        })
    };

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let exit = loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = ctx.shutdown.cancelled() => break Exit::Stopped,
        };
        match line {
            Ok(Some(line)) if line.trim().is_empty() => {}
            Ok(Some(line)) => {
                let fields = vec![("user".to_owned(), user.clone()), ("text".to_owned(), line)];
                match ctx.add(fields).await {
                    Ok(id) => {
                        outstanding.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                    }
                    Err(err) => eprintln!("cannot send that: {}", for_terminal(&format!("{err:#}"))),
                }
            }
            Ok(None) => break Exit::Finished,
            Err(err) => {
                tracing::error!(service = %ctx.service.name, error = %err, "cannot read standard input");
                break Exit::Finished;
            }
        }
    };

    if exit == Exit::Finished {
        *last_reply.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        loop {
            let pending = outstanding.lock().unwrap_or_else(PoisonError::into_inner).len();
            let quiet = last_reply.lock().unwrap_or_else(PoisonError::into_inner).elapsed();
            if pending == 0 || quiet > REPLY_GRACE || ctx.shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    printer_stop.cancel();
    if let Err(err) = printer.await {
        tracing::error!(service = %ctx.service.name, error = %err, "taskback printer failed");
    }
    Ok(exit)
}
