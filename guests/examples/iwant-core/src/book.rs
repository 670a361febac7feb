//! The stored requests and matches, and the records they are kept as.
//!
//! kv keys: `seq` (the last id handed out), `req:{id}` (one request per user and ask),
//! `res:{id}` (the result several requests point to: PENDING, MATCHED or EXPIRED). Ids are
//! zero-padded so that `list-keys` returns them in order.

use cannon_guest::CmdError;
use example_shared::{Record, Store};

/// Most keys read by one listing: requests and results live only until their window ends.
pub const LIST_LIMIT: u32 = 1000;

/// The state of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still looking for company, until `deadline`.
    Pending,
    /// Two or more requests share this result; more may join until it starts.
    Matched,
    /// The deadline passed with nobody found (the user was told).
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Matched => "MATCHED",
            Status::Expired => "EXPIRED",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "PENDING" => Ok(Status::Pending),
            "MATCHED" => Ok(Status::Matched),
            "EXPIRED" => Ok(Status::Expired),
            other => Err(format!("unknown status {other:?}")),
        }
    }
}

/// One user's ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub user: String,
    /// The chat server it was asked on; only requests of one server match.
    pub server: String,
    pub activity: String,
    pub start: u64,
    pub end: u64,
    pub deadline: u64,
    /// The result this request points to.
    pub result: u64,
}

/// What one or more requests point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The id of the request that opened it.
    pub id: u64,
    pub status: Status,
    pub server: String,
    pub activity: String,
    /// The window every member can make: the intersection of their windows.
    pub start: u64,
    pub end: u64,
    /// While PENDING: when looking stops (the opening request's deadline).
    pub deadline: u64,
    /// Request ids, in joining order.
    pub members: Vec<u64>,
}

pub fn req_key(id: u64) -> String {
    format!("req:{id:010}")
}

pub fn res_key(id: u64) -> String {
    format!("res:{id:010}")
}

impl Request {
    fn record(&self) -> Record {
        Record::new()
            .with("id", self.id)
            .with("user", &self.user)
            .with("server", &self.server)
            .with("activity", &self.activity)
            .with("start", self.start)
            .with("end", self.end)
            .with("deadline", self.deadline)
            .with("result", self.result)
    }

    fn from_record(r: &Record) -> Result<Self, String> {
        let what = "request";
        Ok(Request {
            id: r.parse("id", what)?,
            user: r.require("user", what)?.to_owned(),
            server: r.require("server", what)?.to_owned(),
            activity: r.require("activity", what)?.to_owned(),
            start: r.parse("start", what)?,
            end: r.parse("end", what)?,
            deadline: r.parse("deadline", what)?,
            result: r.parse("result", what)?,
        })
    }
}

impl Outcome {
    fn record(&self) -> Record {
        let members: Vec<String> = self.members.iter().map(u64::to_string).collect();
        Record::new()
            .with("id", self.id)
            .with("status", self.status.as_str())
            .with("server", &self.server)
            .with("activity", &self.activity)
            .with("start", self.start)
            .with("end", self.end)
            .with("deadline", self.deadline)
            .with("members", members.join(","))
    }

    fn from_record(r: &Record) -> Result<Self, String> {
        let what = "result";
        let members = r.require("members", what)?;
        let members = if members.is_empty() {
            Vec::new()
        } else {
            members
                .split(',')
                .map(|m| m.parse().map_err(|_| format!("result: bad member {m:?}")))
                .collect::<Result<_, _>>()?
        };
        Ok(Outcome {
            id: r.parse("id", what)?,
            status: Status::parse(r.require("status", what)?)?,
            server: r.require("server", what)?.to_owned(),
            activity: r.require("activity", what)?.to_owned(),
            start: r.parse("start", what)?,
            end: r.parse("end", what)?,
            deadline: r.parse("deadline", what)?,
            members,
        })
    }
}

/// Typed access to the requests and results in a [`Store`].
pub struct Book<'a, S: Store> {
    pub store: &'a S,
}

fn damaged(key: &str, err: String) -> CmdError {
    CmdError::fail(format!("stored value {key:?} is damaged: {err}"))
}

impl<'a, S: Store> Book<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Book { store }
    }

    pub fn next_id(&self) -> Result<u64, CmdError> {
        let id = self.store.increment("seq", 1)?;
        u64::try_from(id).map_err(|_| CmdError::fail(format!("kv key seq holds {id}")))
    }

    fn load<T>(&self, key: &str, decode: fn(&Record) -> Result<T, String>) -> Result<Option<T>, CmdError> {
        let Some(raw) = self.store.get(key)? else {
            return Ok(None);
        };
        let record = Record::decode(&raw).map_err(|e| damaged(key, e))?;
        decode(&record).map(Some).map_err(|e| damaged(key, e))
    }

    pub fn request(&self, id: u64) -> Result<Option<Request>, CmdError> {
        self.load(&req_key(id), Request::from_record)
    }

    pub fn outcome(&self, id: u64) -> Result<Option<Outcome>, CmdError> {
        self.load(&res_key(id), Outcome::from_record)
    }

    pub fn save_request(&self, req: &Request) -> Result<(), CmdError> {
        Ok(self.store.set(&req_key(req.id), &req.record().encode())?)
    }

    pub fn save_outcome(&self, res: &Outcome) -> Result<(), CmdError> {
        Ok(self.store.set(&res_key(res.id), &res.record().encode())?)
    }

    pub fn delete_request(&self, id: u64) -> Result<(), CmdError> {
        self.store.delete(&req_key(id))?;
        Ok(())
    }

    pub fn delete_outcome(&self, id: u64) -> Result<(), CmdError> {
        self.store.delete(&res_key(id))?;
        Ok(())
    }

    /// Every request, in id order.
    pub fn requests(&self) -> Result<Vec<Request>, CmdError> {
        self.all("req:", Request::from_record)
    }

    /// Every result, in id order.
    pub fn outcomes(&self) -> Result<Vec<Outcome>, CmdError> {
        self.all("res:", Outcome::from_record)
    }

    fn all<T>(&self, prefix: &str, decode: fn(&Record) -> Result<T, String>) -> Result<Vec<T>, CmdError> {
        let mut out = Vec::new();
        for key in self.store.list(prefix, LIST_LIMIT)? {
            // A key deleted between the listing and the read is simply gone.
            if let Some(item) = self.load(&key, decode)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The members of `res`, in joining order (a missing one is skipped).
    pub fn members(&self, res: &Outcome) -> Result<Vec<Request>, CmdError> {
        let mut out = Vec::new();
        for id in &res.members {
            if let Some(req) = self.request(*id)? {
                out.push(req);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_shared::MemStore;

    #[test]
    fn records_round_trip() {
        let store = MemStore::new();
        let book = Book::new(&store);
        let req = Request {
            id: 7,
            user: "a:b".to_owned(),
            server: "s".to_owned(),
            activity: "coffee".to_owned(),
            start: 10,
            end: 20,
            deadline: 5,
            result: 7,
        };
        let res = Outcome {
            id: 7,
            status: Status::Matched,
            server: "s".to_owned(),
            activity: "coffee".to_owned(),
            start: 10,
            end: 20,
            deadline: 5,
            members: vec![7, 9],
        };
        book.save_request(&req).unwrap();
        book.save_outcome(&res).unwrap();
        assert_eq!(book.request(7).unwrap(), Some(req.clone()));
        assert_eq!(book.outcome(7).unwrap(), Some(res));
        assert_eq!(book.requests().unwrap(), vec![req]);
        assert_eq!(store.keys(), ["req:0000000007", "res:0000000007"]);
        store.set("req:0000000008", "garbage").unwrap();
        assert!(matches!(book.request(8), Err(CmdError::Fail(_))));
    }
}
