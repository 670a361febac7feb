//! `iwant-clock`: the task that drives expiry in the `iwant` service, and answers the
//! receipts of its notices. On a message with a `tick` field (from a `tick` collector) it
//! expires PENDING requests past their deadline, telling each user by a taskback `{to,
//! text, kind: expired, ...}` that asks for a receipt, and forgets requests whose window is
//! over. On a receipt of a notice that could not be delivered directly, it posts the
//! notice to the channel the user asked in. Any other message (a chat line for the shell)
//! is left alone.

use cannon_guest::receipt::Receipt;
use cannon_guest::{log, taskback, Fields, Message, Task};
use example_shared::{time, GuestKv};
use iwant_core::notices;

struct Clock;

impl Task for Clock {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        if let Some(receipt) = Receipt::of(&msg.fields) {
            if let Some(fallback) = notices::on_receipt(&GuestKv, &receipt).map_err(|e| e.to_string())? {
                log::info(&format!(
                    "notice for message {} not delivered ({}); posted to the channel",
                    receipt.for_id, receipt.detail
                ));
                taskback::send(&fallback)?;
            }
            return Ok(Vec::new());
        }
        if msg.get("tick").is_none() {
            return Ok(Vec::new());
        }
        let tock = iwant_core::tick(&GuestKv, time::now()).map_err(|e| e.to_string())?;
        for fields in notices::direct(&GuestKv, &msg.id, &tock.notices).map_err(|e| e.to_string())? {
            taskback::send(&fields)?;
        }
        let summary = format!("iwant clock: {} expired, {} forgotten", tock.expired, tock.forgotten);
        if tock.expired + tock.forgotten > 0 {
            log::info(&summary);
        } else {
            log::debug(&summary);
        }
        Ok(Vec::new())
    }
}

cannon_guest::export_task!(Clock);
