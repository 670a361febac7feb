//! # iwant-core: the matchmaking logic of the `iwant` example
//!
//! "I want coffee with someone": `iwant coffee at 10:00 for 30m until 09:30` stores a
//! request whose result is PENDING. A compatible request (same server and activity,
//! overlapping windows, deadlines still ahead) makes both point to one MATCHED result and
//! tells both users who, what and when; a further compatible request joins the match
//! until it starts. The clock ([`tick`]) expires PENDING results whose deadline passed,
//! telling the user, and forgets everything whose window is over.
//!
//! Pure over a [`Store`] and the time `now` (Unix seconds), so it is tested natively; the
//! `iwant` shell and `iwant-clock` task are thin glue around it.
//!
//! ## Layout
//! - [`parse`]: the command line into a [`parse::Want`].
//! - [`book`]: requests, results and their kv records.
//! - [`notices`]: notices as direct taskbacks asking for receipts, and the channel
//!   fallback when a receipt says one could not be delivered.
//! - here: [`want`], [`list`], [`cancel`], [`tick`], and the [`Notice`]s they produce.
//!
//! Every change is one compare-and-swap of one kv key (an activity's [`book::Book`]), so
//! the service runs at any `workers.concurrency` and with several worker processes.

pub mod book;
pub mod notices;
pub mod parse;

use book::{book_key, server_prefix, Book, Books, Outcome, Request, Status, BOOK_PREFIX};
use cannon_guest::CmdError;
use example_shared::{time, Store};
use parse::Want;

/// The overlap two windows need to match: this much, or all of the shorter one.
pub const MIN_OVERLAP: u64 = 15 * time::MINUTE;

/// Most open requests one user may have at once.
pub const MAX_OPEN_PER_USER: usize = 10;

/// A message for one user, delivered as a taskback `{to, text, kind, match, activity,
/// with, when, status}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: String,
    pub text: String,
    /// `matched`, `joined`, `left` or `expired`.
    pub kind: &'static str,
    pub outcome: u64,
    pub activity: String,
    /// The other members, comma-separated.
    pub with: String,
    /// The window, as a person reads it.
    pub when: String,
    pub status: Status,
    /// Where the user asked (empty: nowhere known): the notice goes there when it cannot
    /// be delivered directly.
    pub channel: String,
    /// The user's chat server.
    pub server: String,
}

impl Notice {
    /// The taskback fields.
    pub fn fields(&self) -> Vec<(String, String)> {
        [
            ("to", self.to.as_str()),
            ("text", &self.text),
            ("kind", self.kind),
            ("match", &self.outcome.to_string()),
            ("activity", &self.activity),
            ("with", &self.with),
            ("when", &self.when),
            ("status", self.status.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }
}

/// The one line of usage that fits a refusal of `iwant FIRST ...`.
pub fn usage_line(first: Option<&str>) -> &'static str {
    match first {
        Some("list") => "iwant list",
        Some("cancel") => "iwant cancel ID|ACTIVITY|all",
        _ => "iwant ACTIVITY at TIME|+10m|now [for DURATION] [until TIME]",
    }
}

/// What a command answers: the reply to the sender and notices for other users.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub reply: String,
    pub notices: Vec<Notice>,
}

/// `a`, `a and b`, `a, b and c`.
fn names(users: &[&str]) -> String {
    match users {
        [] => "nobody".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> u64 {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

/// Recomputes `res`'s window from its members' own windows.
fn narrow(res: &mut Outcome, members: &[Request]) {
    if let Some(start) = members.iter().map(|m| m.start).max() {
        res.start = start;
    }
    if let Some(end) = members.iter().map(|m| m.end).min() {
        res.end = end;
    }
}

/// Whether `res` can take a request for `want` from `user` on `server` at `now`.
fn joinable(res: &Outcome, members: &[Request], user: &str, server: &str, want: &Want, now: u64) -> bool {
    let open = match res.status {
        Status::Pending => res.deadline > now,
        Status::Matched => res.start > now,
        Status::Expired => false,
    };
    open && res.server == server
        && res.activity == want.activity
        && enough_overlap((res.start, res.end), (want.start, want.end))
        && members.iter().all(|m| m.user != user)
}

/// Whether two windows overlap by [`MIN_OVERLAP`], or by all of the shorter one.
pub fn enough_overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    let shorter = a.1.saturating_sub(a.0).min(b.1.saturating_sub(b.0));
    let got = overlap(a, b);
    got > 0 && got >= MIN_OVERLAP.min(shorter)
}

/// Where a request comes from: the user, the chat server and the channel.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub user: &'a str,
    pub server: &'a str,
    /// The message's `channel` (empty when it has none).
    pub channel: &'a str,
}

/// A new request: matches it with a compatible result, or opens a PENDING one. The whole
/// change to the activity's book is one compare-and-swap, so requests handled at the same
/// time by several workers each see the others' effects: none is lost, none matched twice.
pub fn want(store: &impl Store, from: Asker<'_>, want: Want, now: u64) -> Result<Answer, CmdError> {
    let books = Books::new(store);
    let Asker { user, server, channel } = from;
    // The per-user bound counts the server's other books as they are now (a snapshot: a
    // user's own simultaneous requests for different activities may pass it together).
    let key = book_key(server, &want.activity);
    let open = books
        .books(&server_prefix(server))?
        .into_iter()
        .filter(|(k, _)| *k != key)
        .flat_map(|(_, b)| b.requests)
        .filter(|r| r.user == user && r.end > now)
        .count();
    let mut id = None;
    books.update(&key, |book| {
        let mine: Vec<&Request> = book.requests.iter().filter(|r| r.user == user).collect();
        if let Some(dup) = mine.iter().find(|r| {
            book.outcome(r.result).is_some_and(|res| res.status != Status::Expired)
                && overlap((r.start, r.end), (want.start, want.end)) > 0
        }) {
            return Err(CmdError::usage(format!(
                "you already asked for {} at {} (request #{}); `iwant cancel {}` first to change it",
                dup.activity,
                time::window(dup.start, dup.end, now),
                dup.id,
                dup.id
            )));
        }
        let open = open + mine.iter().filter(|r| r.end > now).count();
        if open >= MAX_OPEN_PER_USER {
            return Err(CmdError::usage(format!(
                "you have {open} requests open (at most {MAX_OPEN_PER_USER}); `iwant cancel ID` one first"
            )));
        }
        let mut best: Option<(&Outcome, Vec<Request>)> = None;
        for res in &book.outcomes {
            let members = book.members(res);
            if !joinable(res, &members, user, server, &want, now) {
                continue;
            }
            // Prefer joining a group, then the larger overlap, then the older result.
            let rank = |r: &Outcome| (r.status == Status::Matched, overlap((r.start, r.end), (want.start, want.end)));
            if best.as_ref().is_none_or(|(b, _)| rank(res) > rank(b)) {
                best = Some((res, members));
            }
        }
        let best = best.map(|(res, members)| (res.clone(), members));
        // One id per command, however often the change is tried again.
        let id = match id {
            Some(id) => id,
            None => *id.insert(books.next_id()?),
        };
        let mut req = Request {
            id,
            user: user.to_owned(),
            server: server.to_owned(),
            activity: want.activity.clone(),
            start: want.start,
            end: want.end,
            deadline: want.deadline,
            result: id,
            channel: channel.to_owned(),
        };
        let Some((mut res, mut members)) = best else {
            book.put_request(req);
            book.put_outcome(Outcome {
                id,
                status: Status::Pending,
                server: server.to_owned(),
                activity: want.activity.clone(),
                start: want.start,
                end: want.end,
                deadline: want.deadline,
                members: vec![id],
            });
            return Ok(Answer {
                reply: format!(
                    "request #{id}: looking for company for {} at {} until {} (PENDING)",
                    want.activity,
                    time::window(want.start, want.end, now),
                    time::when(want.deadline, now)
                ),
                notices: Vec::new(),
            });
        };
        req.result = res.id;
        let kind = if res.status == Status::Matched { "joined" } else { "matched" };
        res.status = Status::Matched;
        res.members.push(id);
        members.push(req.clone());
        narrow(&mut res, &members);
        book.put_request(req);
        book.put_outcome(res.clone());
        let when = time::window(res.start, res.end, now);
        let everyone: Vec<&str> = members.iter().map(|m| m.user.as_str()).collect();
        let others = |me: &str| -> Vec<&str> { everyone.iter().copied().filter(|u| *u != me).collect() };
        let notices = members
            .iter()
            .filter(|m| m.user != user)
            .map(|m| {
                let with = others(&m.user);
                let news = if kind == "joined" { format!(" ({user} joined)") } else { String::new() };
                Notice {
                    to: m.user.clone(),
                    text: format!(
                        "@{}: match #{}: {} with {} at {when}{news}",
                        m.user,
                        res.id,
                        res.activity,
                        names(&with)
                    ),
                    kind,
                    outcome: res.id,
                    activity: res.activity.clone(),
                    with: with.join(","),
                    when: when.clone(),
                    status: Status::Matched,
                    channel: m.channel.clone(),
                    server: m.server.clone(),
                }
            })
            .collect();
        Ok(Answer {
            reply: format!(
                "request #{id}: match #{}: {} with {} at {when} (MATCHED)",
                res.id,
                res.activity,
                names(&others(user))
            ),
            notices,
        })
    })
}

/// `iwant list`: the sender's requests, and what others on the server are looking for.
pub fn list(store: &impl Store, user: &str, server: &str, now: u64) -> Result<String, CmdError> {
    let books = Books::new(store).books(&server_prefix(server))?;
    let mut requests: Vec<(&Request, &Outcome, &Book)> = books
        .iter()
        .flat_map(|(_, book)| book.requests.iter().filter_map(move |r| Some((r, book.outcome(r.result)?, book))))
        .collect();
    requests.sort_by_key(|(r, _, _)| r.id);
    let mut lines = Vec::new();
    let mut others = Vec::new();
    for (req, res, book) in requests {
        if req.user == user {
            let members = book.members(res);
            let with: Vec<&str> = members.iter().filter(|r| r.user != user).map(|r| r.user.as_str()).collect();
            let state = match res.status {
                Status::Pending => format!("PENDING until {}", time::when(req.deadline, now)),
                Status::Matched => {
                    format!(
                        "MATCHED (match #{}) with {} at {}",
                        res.id,
                        names(&with),
                        time::window(res.start, res.end, now)
                    )
                }
                Status::Expired => "EXPIRED: nobody joined in time".to_owned(),
            };
            lines.push(format!("#{} {} at {}: {state}", req.id, req.activity, time::window(req.start, req.end, now)));
        } else if res.status == Status::Pending && res.deadline > now {
            others.push(format!(
                "#{} {}: {} at {} (until {})",
                req.id,
                req.user,
                req.activity,
                time::window(req.start, req.end, now),
                time::when(req.deadline, now)
            ));
        }
    }
    let mut out = if lines.is_empty() {
        "you have no requests; try `iwant coffee at 10:00 for 30m until 09:30`".to_owned()
    } else {
        format!("your requests:\n{}", lines.join("\n"))
    };
    if !others.is_empty() {
        out.push_str(&format!("\nothers are looking for company:\n{}", others.join("\n")));
    }
    Ok(out)
}

/// `iwant cancel ID|ACTIVITY|all`: withdraws the sender's matching requests; the other
/// members of a match are told, and a match left with one member is PENDING again. Each
/// book is changed in one compare-and-swap.
pub fn cancel(store: &impl Store, user: &str, server: &str, what: &str, now: u64) -> Result<Answer, CmdError> {
    let books = Books::new(store);
    let id: Option<u64> = what.trim_start_matches('#').parse().ok();
    let what = what.to_lowercase();
    let chosen = |r: &Request| r.user == user && (what == "all" || Some(r.id) == id || r.activity == what);
    let keys: Vec<String> = books
        .books(&server_prefix(server))?
        .into_iter()
        .filter(|(_, book)| book.requests.iter().any(chosen))
        .map(|(key, _)| key)
        .collect();
    let mut answer = Answer::default();
    let mut done = Vec::new();
    for key in keys {
        let (cancelled, notices) = books.update(&key, |book| {
            let mut cancelled = Vec::new();
            let mut notices = Vec::new();
            let gone: Vec<Request> = book.requests.iter().filter(|r| chosen(r)).cloned().collect();
            for req in gone {
                book.requests.retain(|r| r.id != req.id);
                cancelled.push((req.id, format!("#{} {}", req.id, req.activity)));
                let Some(mut res) = book.outcome(req.result).cloned() else { continue };
                res.members.retain(|m| *m != req.id);
                let members = book.members(&res);
                if members.is_empty() {
                    book.outcomes.retain(|o| o.id != res.id);
                    continue;
                }
                narrow(&mut res, &members);
                if members.len() == 1 && res.status == Status::Matched {
                    res.status = Status::Pending;
                    res.deadline = members[0].deadline;
                }
                book.put_outcome(res.clone());
                let when = time::window(res.start, res.end, now);
                let everyone: Vec<&str> = members.iter().map(|m| m.user.as_str()).collect();
                for m in &members {
                    let with: Vec<&str> = everyone.iter().copied().filter(|u| *u != m.user).collect();
                    let next = match res.status {
                        Status::Matched => format!("still on with {} at {when}", names(&with)),
                        _ => format!("looking for company again until {}", time::when(res.deadline, now)),
                    };
                    notices.push(Notice {
                        to: m.user.clone(),
                        text: format!("@{}: {user} left {} (match #{}); {next}", m.user, res.activity, res.id),
                        kind: "left",
                        outcome: res.id,
                        activity: res.activity.clone(),
                        with: with.join(","),
                        when: when.clone(),
                        status: res.status,
                        channel: m.channel.clone(),
                        server: m.server.clone(),
                    });
                }
            }
            Ok((cancelled, notices))
        })?;
        done.extend(cancelled);
        answer.notices.extend(notices);
    }
    if done.is_empty() {
        return Err(CmdError::usage(format!("you have no request {what:?}; `iwant list` shows yours")));
    }
    done.sort();
    let done: Vec<String> = done.into_iter().map(|(_, text)| text).collect();
    answer.reply = format!("cancelled {}", done.join(", "));
    Ok(answer)
}

/// What one clock tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tock {
    pub notices: Vec<Notice>,
    pub expired: usize,
    /// Results (with their requests) forgotten because their window is over.
    pub forgotten: usize,
}

/// The clock: PENDING results past their deadline become EXPIRED (the user is told);
/// results whose window is over are forgotten with their requests. Each book is changed
/// in one compare-and-swap.
pub fn tick(store: &impl Store, now: u64) -> Result<Tock, CmdError> {
    let books = Books::new(store);
    let mut tock = Tock::default();
    for (key, book) in books.books(BOOK_PREFIX)? {
        let due = book.outcomes.iter().any(|r| r.end <= now || (r.status == Status::Pending && r.deadline <= now));
        if !due {
            continue;
        }
        let one = books.update(&key, |book| {
            let mut tock = Tock::default();
            for mut res in book.outcomes.clone() {
                if res.end <= now {
                    book.requests.retain(|r| !res.members.contains(&r.id));
                    book.outcomes.retain(|o| o.id != res.id);
                    tock.forgotten += 1;
                    continue;
                }
                if res.status != Status::Pending || res.deadline > now {
                    continue;
                }
                res.status = Status::Expired;
                book.put_outcome(res.clone());
                tock.expired += 1;
                let when = time::window(res.start, res.end, now);
                for m in book.members(&res) {
                    tock.notices.push(Notice {
                        to: m.user.clone(),
                        text: format!(
                            "@{}: nobody joined you for {} at {when} by {}; request #{} EXPIRED",
                            m.user,
                            res.activity,
                            time::when(res.deadline, now),
                            m.id
                        ),
                        kind: "expired",
                        outcome: res.id,
                        activity: res.activity.clone(),
                        with: String::new(),
                        when: when.clone(),
                        status: Status::Expired,
                        channel: m.channel.clone(),
                        server: m.server.clone(),
                    });
                }
            }
            Ok(tock)
        })?;
        tock.notices.extend(one.notices);
        tock.expired += one.expired;
        tock.forgotten += one.forgotten;
    }
    Ok(tock)
}

#[cfg(test)]
mod tests;
