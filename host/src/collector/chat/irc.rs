//! `kind: irc`: one connection to an IRC server (`irc://`, or `ircs://` over TLS).
//!
//! A session registers (optional `PASS`; optional SASL PLAIN through `CAP REQ :sasl`;
//! `NICK` with the fallbacks of [`fallback_nick`] while the server answers 433/437; `USER`),
//! joins its channels, then answers `PING`s, turns each `PRIVMSG` into a message (a
//! channel's, or a private one with the sender's nick as its `channel`), and posts replies:
//! each line of a reply is one `PRIVMSG`, cut to fit the 512-byte line, paced by
//! `replies:`. A reply goes only to a channel the bot is in or to a nick (`to`). CTCP
//! requests and `NOTICE`s are never answered. The server going quiet for
//! [`QUIET`] gets a `PING`; no answer in as long again ends the session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use irc_proto::{Command, Message, Prefix, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::time::{Instant, timeout};

use super::irc_wire::{LineReader, fallback_nick, irc_lower, split_reply, text_budget};
use super::{Incoming, Link, Outgoing, Platform, Target};
use crate::config::IrcSettings;
use crate::text::for_terminal;

/// Time to connect (TCP and TLS) and, separately, to register.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to write one line before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence from the server after which we send a `PING` (and end the session after as long again).
const QUIET: Duration = Duration::from_secs(120);
/// Longest wait for the server to answer the JOINs before replies are posted.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Nick length assumed when cutting fallbacks (RFC 2812's 9; servers announce more).
const NICK_LEN: usize = 9;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The IRC platform: its settings and the TLS configuration, built once.
pub(crate) struct Irc {
    settings: IrcSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One connection.
struct Conn {
    reader: BufReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    lines: LineReader,
    /// Our nick on this connection (after fallbacks and NICK changes).
    nick: String,
    /// Channels we are in, IRC-lowercased.
    joined: HashSet<String>,
    /// Channels asked to JOIN that answered neither with a JOIN nor with a refusal yet.
    unanswered_joins: HashSet<String>,
    /// Our USER name, for the length of the prefix the server adds to our lines.
    user: String,
    service: String,
}

impl Irc {
    pub(crate) fn new(settings: IrcSettings) -> anyhow::Result<Self> {
        let tls =
            if settings.tls { Some(Arc::new(super::tls::client_config(settings.ca_file.as_deref())?)) } else { None };
        Ok(Irc { settings, tls })
    }

    async fn connect(&self, service: &str) -> anyhow::Result<Conn> {
        let s = &self.settings;
        let tcp = timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .with_context(|| format!("connecting to {} timed out", s.server))?
            .with_context(|| format!("cannot connect to {}", s.server))?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                    .with_context(|| format!("`{}` is not a TLS server name", s.host))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp);
                let tls = timeout(CONNECT_TIMEOUT, tls)
                    .await
                    .with_context(|| format!("TLS handshake with {} timed out", s.server))?
                    .with_context(|| format!("TLS handshake with {} failed", s.server))?;
                Box::new(tls)
            }
        };
        let (read, writer) = tokio::io::split(stream);
        Ok(Conn {
            reader: BufReader::new(read),
            writer,
            lines: LineReader::default(),
            nick: s.nick.clone(),
            joined: HashSet::new(),
            unanswered_joins: HashSet::new(),
            user: s.user.clone(),
            service: service.to_owned(),
        })
    }
}

#[async_trait]
impl Platform for Irc {
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        let mut conn = self.connect(link.service()).await?;
        timeout(CONNECT_TIMEOUT, conn.register(&self.settings))
            .await
            .with_context(|| format!("registering with {} timed out", self.settings.server))??;
        for channel in &self.settings.channels {
            let (name, key) = match channel.split_once(' ') {
                Some((name, key)) => (name, Some(key.to_owned())),
                None => (channel.as_str(), None),
            };
            conn.unanswered_joins.insert(irc_lower(name));
            conn.send(Command::JOIN(name.to_owned(), key, None)).await?;
        }
        link.established();
        // Addressed by the nick it has or the one it wanted (`cannon:` reaches `cannon_`).
        link.identity(Vec::new(), vec![conn.nick.clone(), self.settings.nick.clone()]);
        tracing::info!(service = %link.service(), server = %self.settings.server, nick = %conn.nick, "irc: registered");
        conn.serve(link, &self.settings).await
    }
}

impl Conn {
    /// Writes one message (the codec's sanitizing keeps it one line).
    async fn send(&mut self, command: Command) -> anyhow::Result<()> {
        self.send_raw(&Message::from(command).to_string()).await
    }

    async fn send_raw(&mut self, line: &str) -> anyhow::Result<()> {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        timeout(WRITE_TIMEOUT, self.writer.write_all(&bytes)).await.context("writing to the server timed out")??;
        Ok(())
    }

    /// The next parsed message; `None` at end of stream. Unparsable lines are logged and skipped.
    async fn next(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            let Some(line) = self.lines.next(&mut self.reader).await.context("reading from the server")? else {
                return Ok(None);
            };
            if line.cut {
                tracing::warn!(service = %self.service, "irc: a line from the server was too long and was cut");
            }
            if line.text.is_empty() {
                continue;
            }
            match line.text.parse::<Message>() {
                Ok(message) => return Ok(Some(message)),
                Err(err) => {
                    tracing::warn!(service = %self.service, line = %for_terminal(&line.text), error = %err, "irc: unparsable line skipped");
                }
            }
        }
    }

    /// PASS, CAP/SASL, NICK (with fallbacks), USER; until RPL_WELCOME.
    async fn register(&mut self, s: &IrcSettings) -> anyhow::Result<()> {
        if s.sasl.is_some() {
            self.send_raw("CAP REQ :sasl").await?;
        }
        if let Some(password) = &s.password {
            self.send(Command::PASS(password.expose().to_owned())).await?;
        }
        let mut attempt = 0;
        self.send(Command::NICK(self.nick.clone())).await?;
        self.send(Command::USER(s.user.clone(), "0".to_owned(), s.realname.clone())).await?;
        loop {
            let Some(message) = self.next().await? else {
                bail!("{} closed the connection during registration", s.server);
            };
            match message.command {
                Command::PING(a, b) => self.send(Command::PONG(a, b)).await?,
                Command::CAP(_, irc_proto::CapSubCommand::ACK, _, _) => self.send_raw("AUTHENTICATE PLAIN").await?,
                Command::CAP(_, irc_proto::CapSubCommand::NAK, _, _) => {
                    bail!("{} does not offer SASL (CAP NAK sasl); remove `sasl:` or use another server", s.server)
                }
                Command::AUTHENTICATE(ref go) if go == "+" => {
                    if let Some((user, password)) = &s.sasl {
                        for chunk in sasl_plain(user, password.expose()) {
                            self.send_raw(&format!("AUTHENTICATE {chunk}")).await?;
                        }
                    }
                }
                Command::Response(Response::RPL_SASLSUCCESS, _) => self.send_raw("CAP END").await?,
                Command::Response(
                    code @ (Response::ERR_SASLFAIL | Response::ERR_SASLTOOLONG | Response::ERR_SASLABORT),
                    ref args,
                ) => {
                    bail!("SASL authentication with {} failed ({code:?}: {})", s.server, for_terminal(&args.join(" ")))
                }
                Command::Response(Response::ERR_NICKNAMEINUSE | Response::ERR_UNAVAILRESOURCE, _) => {
                    attempt += 1;
                    self.nick = fallback_nick(&s.nick, attempt, NICK_LEN.max(s.nick.len()));
                    tracing::info!(service = %self.service, nick = %self.nick, "irc: nick in use; trying another");
                    self.send(Command::NICK(self.nick.clone())).await?;
                }
                Command::Response(Response::ERR_ERRONEOUSNICKNAME, ref args) => {
                    bail!("{} refuses the nick `{}`: {}", s.server, self.nick, for_terminal(&args.join(" ")))
                }
                Command::Response(Response::RPL_WELCOME, ref args) => {
                    if let Some(nick) = args.first() {
                        self.nick.clone_from(nick);
                    }
                    return Ok(());
                }
                Command::ERROR(ref text) => bail!("{} refused us: {}", s.server, for_terminal(text)),
                _ => {}
            }
        }
    }

    /// Reads lines and posts replies until the connection ends.
    async fn serve(&mut self, link: &mut Link, s: &IrcSettings) -> anyhow::Result<()> {
        let mut current: Option<Outgoing> = None;
        let mut heard = Instant::now();
        let mut pinged = false;
        // Replies wait until every channel answered its JOIN (or JOIN_WAIT passed), so a
        // reply queued while disconnected is not refused as "not in channel".
        let joins_due = Instant::now() + JOIN_WAIT;
        loop {
            let quiet_until = heard + QUIET;
            let ready = self.unanswered_joins.is_empty() || Instant::now() >= joins_due;
            tokio::select! {
                message = self.next() => {
                    let Some(message) = message? else { return Ok(()) };
                    heard = Instant::now();
                    pinged = false;
                    self.handle(message, link, s).await?;
                }
                () = outbound(link, &mut current), if ready => {
                    if let Some(out) = current.take() {
                        current = self.post_part(out).await?;
                    }
                }
                () = tokio::time::sleep_until(joins_due), if !ready => {}
                () = tokio::time::sleep_until(quiet_until) => {
                    if pinged {
                        bail!("{} did not answer for {} s", s.server, 2 * QUIET.as_secs());
                    }
                    self.send(Command::PING(s.host.clone(), None)).await?;
                    pinged = true;
                    heard = Instant::now();
                }
            }
        }
    }

    /// Sends the next line of a reply (the pacing token is already taken); returns the reply
    /// while lines are left.
    async fn post_part(&mut self, out: Outgoing) -> anyhow::Result<Option<Outgoing>> {
        let (target, refused) = match &out.reply.target {
            // A private message's `channel` is the sender's nick: the reply goes back to them.
            Target::Channel { channel, .. } if is_channel(channel) => {
                let absent = !self.joined.contains(&irc_lower(channel));
                (channel.clone(), absent.then(|| format!("not in channel {}", for_terminal(channel))))
            }
            Target::User(nick) | Target::Channel { channel: nick, .. } => {
                let bad = crate::config::irc_nick_problem(nick).is_some();
                (nick.clone(), bad.then(|| format!("`{}` is not a nick", for_terminal(nick))))
            }
            Target::Guild { action, .. } => (String::new(), Some(format!("no `{action}` on irc"))),
        };
        if let Some(why) = refused {
            out.finish(Err(why));
            return Ok(None);
        }
        let parts = split_reply(&out.reply.text, text_budget(&self.nick, &self.user, &target));
        let Some(part) = parts.get(out.parts_sent()) else {
            out.finish(Ok(format!("posted {} line(s) to {}", parts.len(), for_terminal(&target))));
            return Ok(None);
        };
        // Dropping `out` on a write error re-queues it from this part.
        self.send(Command::PRIVMSG(target.clone(), part.clone())).await?;
        tracing::debug!(service = %self.service, target = %for_terminal(&target), bytes = part.len(), "irc: sent a line");
        out.part_sent();
        if out.parts_sent() >= parts.len() {
            out.finish(Ok(format!("posted {} line(s) to {}", parts.len(), for_terminal(&target))));
            return Ok(None);
        }
        Ok(Some(out))
    }

    async fn handle(&mut self, message: Message, link: &mut Link, s: &IrcSettings) -> anyhow::Result<()> {
        let (nick, user, host) = match &message.prefix {
            Some(Prefix::Nickname(nick, user, host)) => (nick.as_str(), user.as_str(), host.as_str()),
            _ => ("", "", ""),
        };
        let me = irc_lower(nick) == irc_lower(&self.nick);
        match &message.command {
            Command::PING(a, b) => self.send(Command::PONG(a.clone(), b.clone())).await?,
            Command::ERROR(text) => bail!("{} closed the link: {}", s.server, for_terminal(text)),
            Command::JOIN(channel, _, _) if me => {
                self.unanswered_joins.remove(&irc_lower(channel));
                self.joined.insert(irc_lower(channel));
                tracing::info!(service = %self.service, channel = %for_terminal(channel), "irc: joined");
            }
            Command::PART(channel, _) if me => {
                self.joined.remove(&irc_lower(channel));
            }
            Command::KICK(channel, who, _) if irc_lower(who) == irc_lower(&self.nick) => {
                self.joined.remove(&irc_lower(channel));
                tracing::warn!(service = %self.service, channel = %for_terminal(channel), by = %for_terminal(nick), "irc: kicked; joining again");
                let key = s.channels.iter().find_map(|c| {
                    c.split_once(' ').filter(|(n, _)| irc_lower(n) == irc_lower(channel)).map(|(_, k)| k.to_owned())
                });
                self.send(Command::JOIN(channel.clone(), key, None)).await?;
            }
            Command::NICK(new) if me => self.nick.clone_from(new),
            Command::Response(code, args) if is_join_failure(*code) => {
                if let Some(channel) = args.get(1) {
                    self.unanswered_joins.remove(&irc_lower(channel));
                }
                tracing::warn!(service = %self.service, code = ?code, detail = %for_terminal(&args.join(" ")), "irc: cannot join");
            }
            Command::Response(code, args)
                if *code == Response::ERR_CANNOTSENDTOCHAN || *code == Response::ERR_NOSUCHNICK =>
            {
                tracing::warn!(service = %self.service, code = ?code, detail = %for_terminal(&args.join(" ")), "irc: a reply was not delivered");
            }
            Command::PRIVMSG(target, text) if !me && !nick.is_empty() => {
                if text.starts_with('\x01') {
                    return Ok(()); // CTCP (VERSION, ACTION, ...): not a command
                }
                let direct = !is_channel(target);
                let line = Incoming {
                    user: nick.to_owned(),
                    user_id: format!("{nick}!{user}@{host}"),
                    text: text.clone(),
                    channel: if direct { nick.to_owned() } else { target.clone() },
                    thread: None,
                    message_id: None,
                    direct,
                    server: None,
                };
                link.deliver(&line).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Waits for the reply to post (taking the next one when none is in progress) and for
/// the pacing to allow one more line. Cancel-safe.
async fn outbound(link: &mut Link, current: &mut Option<Outgoing>) {
    if current.is_none() {
        *current = Some(link.reply().await);
    }
    link.pace().await;
}

/// Whether `target` names a channel (else a nick).
fn is_channel(target: &str) -> bool {
    target.starts_with(['#', '&', '+', '!'])
}

fn is_join_failure(code: Response) -> bool {
    matches!(
        code,
        Response::ERR_NOSUCHCHANNEL
            | Response::ERR_CHANNELISFULL
            | Response::ERR_INVITEONLYCHAN
            | Response::ERR_BANNEDFROMCHAN
            | Response::ERR_BADCHANNELKEY
    )
}

/// SASL PLAIN's `authzid \0 authcid \0 password` in base64, as the 400-byte chunks of
/// `AUTHENTICATE` (a last `+` when the final chunk is exactly 400 bytes).
fn sasl_plain(user: &str, password: &str) -> Vec<String> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}\0{user}\0{password}"));
    let mut chunks: Vec<String> =
        encoded.as_bytes().chunks(400).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    if chunks.last().is_none_or(|c| c.len() == 400) {
        chunks.push("+".to_owned());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_chunks() {
        assert_eq!(sasl_plain("bot", "pw"), ["Ym90AGJvdABwdw=="]);
        let long = sasl_plain("u", &"p".repeat(600));
        assert_eq!(long.len(), 3);
        assert_eq!(long[0].len(), 400);
    }
}
