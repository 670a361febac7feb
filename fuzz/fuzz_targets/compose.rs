//! Any bytes as a compose file: `config::parse` returns a `Compose` or errors that say
//! something, sorted by line; it never panics, overflows the stack or runs away.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/fuzz".to_owned()),
        "TOKEN" => Some("s3cr3t".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(err) = cannon_host::config::parse(&text, Path::new("/fuzz/cannon-compose.yml"), &env) {
        assert!(!err.diagnostics.is_empty(), "an error always says something");
        assert!(err.diagnostics.windows(2).all(|w| w[0].line <= w[1].line), "diagnostics sorted by line");
        let _ = err.to_string();
    }
});
