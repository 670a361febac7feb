//! Any command table and any reply budget: torch's help and usage never panic and stay
//! within the budget, the load check accepts or names an entry without panicking, and the
//! text a terminal gets carries no control, C1 or bidi character.
//!
//! Input: two bytes of budget (little endian), then the table as `name`, `summary`, `usage`
//! texts separated by 0xFF bytes (decoded lossily).

#![no_main]

use cannon_host::engine::Command;
use cannon_host::engine::commands::check_table;
use cannon_host::text::{for_json, for_terminal, for_terminal_lines, is_unsafe};
use cannon_host::torch::{help, usage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((budget, table)) = data.split_first_chunk::<2>() else {
        return;
    };
    let budget = usize::from(u16::from_le_bytes(*budget));
    let texts: Vec<String> = table.split(|&b| b == 0xff).map(|t| String::from_utf8_lossy(t).into_owned()).collect();
    let commands: Vec<Command> = texts
        .chunks(3)
        .map(|c| Command {
            name: c[0].clone(),
            summary: c.get(1).cloned().unwrap_or_default(),
            usage: c.get(2).cloned().unwrap_or_default(),
        })
        .collect();
    let listed = help(&commands, budget);
    assert!(listed.len() <= budget, "help of {} bytes over {budget}", listed.len());
    let accepted = check_table(&commands).is_ok();
    for command in &commands {
        let shown = usage(command);
        if accepted {
            assert!(shown.len() <= 64 + 256 + 1024 + 9, "usage of {} bytes", shown.len());
        }
        assert!(!for_terminal(&shown).contains(is_unsafe));
        assert!(!for_terminal_lines(&shown).contains(|c| c != '\n' && is_unsafe(c)));
    }
    let json = for_json(serde_json::Value::String(listed.clone()).to_string());
    assert!(!json.contains(is_unsafe));
    assert_eq!(serde_json::from_str::<String>(&json).ok().as_deref(), Some(listed.as_str()));
});
