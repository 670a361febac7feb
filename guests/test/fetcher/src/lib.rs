//! `fetcher` (test guest): outbound HTTP as the message asks, for `tests/e2e/egress.rs`.
//!
//! Message fields: `url` (required); `method` (default GET); `body`; `header`
//! (`name: value`); `repeat` (send it
//! that many times, default 1); `auth` (the name of a secret sent as `Bearer` token);
//! `leak` = `yes` (log the `auth` secret and fail with it in the error: the host must
//! mask both). Results: `status`, `body` (of the last response), `secret` (`seen` or
//! `absent`: whether `config.get(auth)` answered).

use cannon_guest::{config, http, log, Fields, Message, Task};

struct Fetcher;

impl Task for Fetcher {
    fn run(msg: Message, _results: Fields) -> Result<Fields, String> {
        let url = msg.get("url").ok_or("no url field")?;
        let method = msg.get("method").unwrap_or("GET");
        let repeat: usize = msg.get("repeat").unwrap_or("1").parse().map_err(|_| "repeat: not a number")?;
        let secret = msg.get("auth").and_then(config::get);
        if msg.get("leak") == Some("yes") {
            let token = secret.clone().unwrap_or_default();
            log::info(&format!("the token is {token}"));
            println!("stdout token {token}");
            return Err(format!("leaking {token} on purpose"));
        }
        let mut request = http::Request::new(method, url).body(msg.get("body").unwrap_or("").as_bytes().to_vec());
        if let Some((name, value)) = msg.get("header").and_then(|h| h.split_once(':')) {
            request = request.header(name.trim(), value.trim());
        }
        if let Some(token) = &secret {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let mut last = None;
        for i in 0..repeat {
            let response = request.send().map_err(|e| format!("request {}: {e}", i + 1))?;
            last = Some(response);
        }
        let response = last.ok_or("repeat: 0")?;
        Ok(vec![
            ("status".into(), response.status.to_string()),
            ("body".into(), String::from_utf8_lossy(&response.body).into_owned()),
            ("secret".into(), if secret.is_some() { "seen" } else { "absent" }.into()),
        ])
    }
}

cannon_guest::export_task!(Fetcher);
