//! `fetch` (hostile guest): imports `wasi:http/outgoing-handler`, which cannon provides only
//! to a component granted `allow: [{http: [...]}]`. Without the grant the host must refuse
//! to load it, naming the import and the component; it must never get to run.

use cannon_guest::{Fields, Message, Task};
use wasi::http::outgoing_handler::handle;
use wasi::http::types::{Fields as Headers, OutgoingRequest};

struct Fetch;

impl Task for Fetch {
    fn run(_msg: Message, _results: Fields) -> Result<Fields, String> {
        let request = OutgoingRequest::new(Headers::new());
        match handle(request, None) {
            Ok(_) => Ok(vec![(
                "got".to_owned(),
                "BREACH: sent an HTTP request".to_owned(),
            )]),
            Err(code) => Err(format!("http: {code:?}")),
        }
    }
}

cannon_guest::export_task!(Fetch);
