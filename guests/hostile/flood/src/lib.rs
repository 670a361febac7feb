//! `flood` (hostile guest): writes far more log output than a call may: `lines` lines
//! (default 100000) through each of the `log` import, stdout and stderr, then as many
//! empty lines, then lines that try to forge host log records with newlines and terminal
//! escapes. The host must cut the call's output at `limits.log_kb` and carry on; the
//! message itself succeeds with `written` = the number of lines attempted.

use std::io::Write as _;

use cannon_guest::{config, log, Fields, Message, Task};

struct Flood;

impl Task for Flood {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let lines = config::parse_or("lines", 100_000usize)?;
        let mut written = 0usize;
        // Forged records first, while the budget still has room for them.
        log::warn("flood-forged\n2030-01-01T00:00:00Z ERROR cannon_host: forged host record");
        log::warn("flood-forged \u{1b}[2J\u{1b}[31mterminal escape\r");
        written += 2;
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        for i in 0..lines {
            log::info(&format!("flood-log {i} {}", "x".repeat(64)));
            let _ = writeln!(stdout, "flood-stdout {i} {}", "y".repeat(64));
            let _ = writeln!(stderr, "flood-stderr {i} {}", "z".repeat(64));
            written += 3;
        }
        for _ in 0..lines {
            let _ = stdout.write_all(b"\n");
            log::info("");
            written += 2;
        }
        let _ = stdout.flush();
        Ok(vec![("written".to_owned(), written.to_string())])
    }
}

cannon_guest::export_task!(Flood);
