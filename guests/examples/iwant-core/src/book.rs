//! The stored requests and matches, and the records they are kept as.
//!
//! kv keys: `seq` (the last id handed out) and `book:{server}:{activity}` (a [`Book`]:
//! every request of that activity on that server, one per user and ask, and the results
//! they point to: PENDING, MATCHED or EXPIRED). Only requests of one book can match, so
//! each change is one compare-and-swap of one key.

use cannon_guest::CmdError;
use example_shared::{get_all, key_part, Record, Store};

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
    /// Where it was asked (the message's `channel`; empty when none): a notice that
    /// cannot be delivered directly goes there.
    pub channel: String,
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
            .with("channel", &self.channel)
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
            channel: r.get("channel").unwrap_or_default().to_owned(),
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

/// Everything asked for one activity on one chat server: its requests and results, kept
/// as one kv value, so that every change to it (a match, a cancel, an expiry) is one
/// compare-and-swap and concurrent requests cannot miss or double-book each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    /// In id order.
    pub requests: Vec<Request>,
    /// In id order.
    pub outcomes: Vec<Outcome>,
}

/// The kv key of the book of `activity` on `server` (user text escaped).
pub fn book_key(server: &str, activity: &str) -> String {
    format!("{}{}", server_prefix(server), key_part(activity))
}

/// The prefix of every book of `server`.
pub fn server_prefix(server: &str) -> String {
    format!("{BOOK_PREFIX}{}:", key_part(server))
}

/// The prefix of every book.
pub const BOOK_PREFIX: &str = "book:";

/// How often a change is tried again when another worker changed the same book first.
/// Each round, one of the writers racing for a book wins, so this covers as many
/// concurrent writers; past it the message fails and the worker retries it.
pub const MAX_ATTEMPTS: u32 = 64;

impl Book {
    pub fn request(&self, id: u64) -> Option<&Request> {
        self.requests.iter().find(|r| r.id == id)
    }

    pub fn outcome(&self, id: u64) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.id == id)
    }

    /// The members of `res`, in joining order (a missing one is skipped).
    pub fn members(&self, res: &Outcome) -> Vec<Request> {
        res.members.iter().filter_map(|id| self.request(*id).cloned()).collect()
    }

    /// Adds or replaces a request, keeping id order.
    pub fn put_request(&mut self, req: Request) {
        self.requests.retain(|r| r.id != req.id);
        let at = self.requests.partition_point(|r| r.id < req.id);
        self.requests.insert(at, req);
    }

    /// Adds or replaces a result, keeping id order.
    pub fn put_outcome(&mut self, res: Outcome) {
        self.outcomes.retain(|o| o.id != res.id);
        let at = self.outcomes.partition_point(|o| o.id < res.id);
        self.outcomes.insert(at, res);
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.outcomes.is_empty()
    }

    /// One [`Record`] whose fields are the requests (`req`) and results (`res`), each
    /// itself an encoded record.
    pub fn encode(&self) -> String {
        let mut book = Record::new();
        let mut fields = Vec::new();
        for req in &self.requests {
            fields.push((format!("req:{}", req.id), req.record().encode()));
        }
        for res in &self.outcomes {
            fields.push((format!("res:{}", res.id), res.record().encode()));
        }
        for (k, v) in fields {
            book.set(&k, v);
        }
        book.encode()
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let outer = Record::decode(text)?;
        let mut book = Book::default();
        for (name, value) in outer.fields() {
            let inner = Record::decode(value)?;
            if name.starts_with("req:") {
                book.put_request(Request::from_record(&inner)?);
            } else if name.starts_with("res:") {
                book.put_outcome(Outcome::from_record(&inner)?);
            } else {
                return Err(format!("unknown entry {name:?}"));
            }
        }
        Ok(book)
    }
}

/// Typed access to the books in a [`Store`].
pub struct Books<'a, S: Store> {
    pub store: &'a S,
}

fn damaged(key: &str, err: String) -> CmdError {
    CmdError::fail(format!("stored value {key:?} is damaged: {err}"))
}

fn decode(key: &str, raw: Option<&str>) -> Result<Book, CmdError> {
    raw.map(Book::decode).transpose().map_err(|e| damaged(key, e)).map(Option::unwrap_or_default)
}

impl<'a, S: Store> Books<'a, S> {
    pub fn new(store: &'a S) -> Self {
        Books { store }
    }

    pub fn next_id(&self) -> Result<u64, CmdError> {
        let id = self.store.increment("seq", 1)?;
        u64::try_from(id).map_err(|_| CmdError::fail(format!("kv key seq holds {id}")))
    }

    /// The book under `key` (empty when there is none).
    pub fn book(&self, key: &str) -> Result<Book, CmdError> {
        decode(key, self.store.get(key)?.as_deref())
    }

    /// Every book whose key starts with `prefix` (a server's, or all), with its key.
    pub fn books(&self, prefix: &str) -> Result<Vec<(String, Book)>, CmdError> {
        let keys = self.store.list(prefix, LIST_LIMIT)?;
        let values = get_all(self.store, &keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, raw) in keys.into_iter().zip(values) {
            // A book deleted between the listing and the read is simply gone.
            if raw.is_some() {
                let book = decode(&key, raw.as_deref())?;
                out.push((key, book));
            }
        }
        Ok(out)
    }

    /// Changes the book under `key` with `change`, in one compare-and-swap: `change` gets the
    /// book as stored and edits it; when another writer changed the book in between, it
    /// runs again on the new one (so it must have no other effect than on the book and
    /// its own return value). An emptied book is deleted; an unchanged one is not written.
    pub fn update<T>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut Book) -> Result<T, CmdError>,
    ) -> Result<T, CmdError> {
        for _ in 0..MAX_ATTEMPTS {
            let raw = self.store.get(key)?;
            let mut book = decode(key, raw.as_deref())?;
            let before = book.clone();
            let out = change(&mut book)?;
            if book == before {
                return Ok(out);
            }
            let new = if book.is_empty() { None } else { Some(book.encode()) };
            if self.store.compare_and_swap(key, raw.as_deref(), new.as_deref())? {
                return Ok(out);
            }
        }
        Err(CmdError::fail(format!("{key:?} changed {MAX_ATTEMPTS} times while this was being done; try again")))
    }

    /// Request `id`, wherever it is (tests and tools; a scan of every book).
    pub fn request(&self, id: u64) -> Result<Option<Request>, CmdError> {
        Ok(self.books(BOOK_PREFIX)?.into_iter().find_map(|(_, b)| b.request(id).cloned()))
    }

    /// Result `id`, wherever it is (tests and tools; a scan of every book).
    pub fn outcome(&self, id: u64) -> Result<Option<Outcome>, CmdError> {
        Ok(self.books(BOOK_PREFIX)?.into_iter().find_map(|(_, b)| b.outcome(id).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_shared::MemStore;

    #[test]
    fn books_round_trip() {
        let store = MemStore::new();
        let books = Books::new(&store);
        let req = Request {
            id: 7,
            user: "a:b".to_owned(),
            server: "s".to_owned(),
            activity: "coffee".to_owned(),
            start: 10,
            end: 20,
            deadline: 5,
            result: 7,
            channel: "#x\ny".to_owned(),
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
        let key = book_key("s", "coffee");
        books
            .update(&key, |b| {
                b.put_request(req.clone());
                b.put_outcome(res.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(books.request(7).unwrap(), Some(req.clone()));
        assert_eq!(books.outcome(7).unwrap(), Some(res));
        assert_eq!(store.keys(), ["book:s:coffee"]);
        assert_eq!(books.books("book:s:").unwrap()[0].1.requests, vec![req]);
        books
            .update(&key, |b| {
                *b = Book::default();
                Ok(())
            })
            .unwrap();
        assert!(store.keys().is_empty(), "an emptied book is deleted");
        store.set("book:s:tea", "garbage").unwrap();
        assert!(matches!(books.book("book:s:tea"), Err(CmdError::Fail(_))));
        assert_eq!(book_key("a:b", "x:y"), "book:a%3Ab:x%3Ay");
    }
}
