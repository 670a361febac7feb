//! Local servers speaking the documented wire protocols of chat platforms that cannot run
//! here (Slack's Web API + Socket Mode, Discord's REST API + Gateway). Each runs on its own
//! tokio runtime in the test process, on loopback ports picked by the OS, and records what
//! the client did (posts, acknowledgements, heartbeats, requests made too early) for the
//! tests to check. They implement the protocol, not a behaviour the tests want: the client
//! under test has to drive them as it would drive the real services.

#![allow(dead_code, reason = "each test module uses a different part of the fakes")]

pub mod discord;
pub mod slack;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A background runtime owning a fake server's tasks; stopped when dropped.
pub struct Background {
    pub runtime: tokio::runtime::Runtime,
}

impl Background {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake server runtime");
        Background { runtime }
    }

    /// Binds a loopback listener on a free port.
    pub fn listen(&self) -> (TcpListener, u16) {
        self.runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake server");
            let port = listener.local_addr().expect("local addr").port();
            (listener, port)
        })
    }

    /// Serves `router` as plain HTTP/1.1 on `listener`.
    pub fn serve_http(&self, listener: TcpListener, router: axum::Router) {
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
    }
}

/// Shared state guarded by a std mutex (never held across an await).
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(Arc::new(Mutex::new(value)))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a test asks of the live WebSocket connection.
#[derive(Debug)]
pub enum Control {
    /// Send this text frame.
    Send(String),
    /// Drop the TCP connection without a close frame (a network failure).
    Drop,
    /// Send a close frame with this code.
    Close(u16),
}

/// Relays one WebSocket connection until it ends: frames queued on `rx` go out (or close or
/// drop it, as the test asks), and each JSON text frame that comes in goes to `frame`.
pub async fn relay(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    rx: &mut mpsc::UnboundedReceiver<Control>,
    mut frame: impl FnMut(serde_json::Value),
) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    loop {
        tokio::select! {
            control = rx.recv() => match control {
                Some(Control::Send(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() { return; }
                }
                Some(Control::Close(code)) => {
                    let close = tokio_tungstenite::tungstenite::protocol::CloseFrame { code: code.into(), reason: "".into() };
                    let _ = socket.close(Some(close)).await;
                    return;
                }
                Some(Control::Drop) | None => return,
            },
            next = socket.next() => match next {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(payload) = serde_json::from_str(text.as_str()) {
                        frame(payload);
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// The control channel of the live connection, if any.
pub type Live = Option<mpsc::UnboundedSender<Control>>;

/// Waits until `check` holds, polling; panics with `what` and the last state after `timeout`.
pub fn wait_until<T: std::fmt::Debug>(timeout: Duration, what: &str, mut check: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, state) = check();
        if done {
            return state;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last state: {state:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The form fields of an `application/x-www-form-urlencoded` body.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The value of `key` in a form.
pub fn form_get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A JSON answer with `status`.
pub fn json_response(status: axum::http::StatusCode, body: serde_json::Value) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    response
}
