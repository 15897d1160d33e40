//! `plumcore pub` and `plumcore sub`: publish to and subscribe on a node's client
//! port from a shell, speaking the NATS core protocol over one blocking TCP
//! connection (no `nats` CLI needed, and no async runtime for a tool this small).

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde::Serialize;

use plumcore::client::proto::{self, Limits, ServerOp};
use plumcore::client::subject::{validate_subject, Filter};
use plumcore::node::client_port::{GAP_SUBJECT, LAGGED_SUBJECT};

/// A bad argument found before connecting: [`exit_code`] makes it 2, as clap does for
/// its own usage errors.
#[derive(Debug)]
pub struct BadArg(pub String);

impl std::fmt::Display for BadArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadArg {}

/// Exit code of `plumcore pub`/`sub`: 2 for an argument refused before connecting,
/// 1 for anything the server or the network did; the error printed in one line.
pub fn exit_code(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plumcore: {e}");
            ExitCode::from(if e.is::<BadArg>() { 2 } else { 1 })
        }
    }
}

/// Where the node is and how to prove who we are: shared by both commands.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The node's client port: IP:PORT, HOST:PORT or nats://HOST:PORT.
    #[arg(long, value_name = "ADDR|URL", default_value = "127.0.0.1:4222")]
    pub server: String,
    /// The node's admin token, sent as CONNECT `auth_token` (needed when the node
    /// has an admin token file).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from the first line of this file instead (keeps it out of `ps`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Flags of `plumcore pub`.
#[derive(clap::Args)]
pub struct PubArgs {
    /// The subject to publish to (no wildcards).
    pub subject: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Publish N generated messages instead of one per stdin line.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// With --count: messages per second (0 or absent: as fast as possible).
    #[arg(long, value_name = "R", requires = "count")]
    pub rate: Option<f64>,
    /// With --count: the payload of every message (default `msg <k>`).
    #[arg(long, value_name = "TEXT", requires = "count", conflicts_with = "size")]
    pub payload: Option<String>,
    /// With --count: payloads of exactly this many bytes (`msg <k> ` padded with `x`).
    #[arg(long, value_name = "BYTES", requires = "count")]
    pub size: Option<usize>,
}

/// How `plumcore sub` prints a message.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line: subject, size and the payload as text or base64.
    Ndjson,
    /// The payload bytes followed by a newline.
    Raw,
}

/// Flags of `plumcore sub`.
#[derive(clap::Args)]
pub struct SubArgs {
    /// The subject or filter (`orders.*`, `orders.>`).
    pub subject: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Join this queue group: each message goes to one member of the group.
    #[arg(long, value_name = "GROUP")]
    pub queue: Option<String>,
    /// Exit 0 after N messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// How each message is printed on stdout.
    #[arg(long, value_enum, default_value = "ndjson")]
    pub format: Format,
    /// Exit 0 when no message arrived for this many seconds.
    #[arg(long, value_name = "S")]
    pub timeout_secs: Option<f64>,
}

/// Generous bounds for what a node sends: a client must not buffer without limit,
/// but it should never refuse what the server chose to send either.
const READ_LIMITS: Limits = Limits {
    max_control_line: 64 * 1024,
    max_payload: 16 * 1024 * 1024,
};

/// How long connecting, the INFO greeting and the final flush may take.
const HANDSHAKE: Duration = Duration::from_secs(5);
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// `HOST:PORT` from `HOST:PORT` or `nats://HOST:PORT[/]`; TLS schemes are refused
/// (the client port is plain TCP).
pub fn server_addr(server: &str) -> Result<String> {
    let s = server.trim();
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => rest,
        Some((scheme, _)) => {
            return Err(BadArg(format!(
                "--server {s}: scheme `{scheme}` not supported (the client port is plain nats://)"
            ))
            .into())
        }
        None => s,
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || !host.contains(':') {
        return Err(BadArg(format!(
            "--server {s}: expected IP:PORT, HOST:PORT or nats://HOST:PORT"
        ))
        .into());
    }
    Ok(host.to_string())
}

fn token(a: &ServerArgs) -> Result<Option<String>> {
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("token file {}: {e}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").trim().to_string()));
    }
    Ok(a.token.clone())
}

/// Reads server ops off a connection, keeping what is left of a partial op.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

/// What one read gave.
enum Next {
    Op(ServerOp),
    Eof,
    /// The read timeout passed with no complete op.
    Timeout,
}

impl Reader {
    fn next(&mut self) -> Result<Next> {
        loop {
            match proto::parse_server(&self.buf[self.start..], &READ_LIMITS) {
                Ok(Some((op, n))) => {
                    self.start += n;
                    return Ok(Next::Op(op));
                }
                Ok(None) => {}
                Err(e) => bail!("unreadable data from the server: {e}"),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Next::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Next::Timeout)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An open, greeted connection: the writing half and the reader.
struct Conn {
    server: String,
    out: TcpStream,
    reader: Reader,
    /// INFO's `max_payload`, checked before each PUB so an oversized message is a
    /// clear local error rather than a closed connection.
    max_payload: Option<usize>,
}

/// `-ERR` text as a one-line error, with a hint where the fix is known.
fn server_err(server: &str, text: &str) -> anyhow::Error {
    let hint = if text.contains("Authorization") {
        " (give the node's admin token with --token or --token-file)"
    } else {
        ""
    };
    anyhow!("server {server}: -ERR '{text}'{hint}")
}

/// Connects, reads INFO and sends CONNECT.
fn connect(a: &ServerArgs, name: &str) -> Result<Conn> {
    let server = server_addr(&a.server)?;
    let token = token(a)?;
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .map_err(|e| anyhow!("cannot resolve {server}: {e}"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, HANDSHAKE) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(stream) = stream else {
        let why = last.map_or("no address".to_string(), |e| e.to_string());
        bail!("cannot connect to {server}: {why}");
    };
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE))?;
    let mut reader = Reader {
        stream: stream.try_clone()?,
        buf: Vec::new(),
        start: 0,
    };
    let info = match reader.next()? {
        Next::Op(ServerOp::Info(json)) => json,
        Next::Op(ServerOp::Err(text)) => return Err(server_err(&server, &text)),
        Next::Op(op) => bail!("server {server}: expected INFO first, got {op:?}"),
        Next::Eof => bail!("server {server} closed the connection before its INFO"),
        Next::Timeout => bail!("server {server} sent no INFO within 5 s (is it a NATS port?)"),
    };
    let info: serde_json::Value = serde_json::from_str(&info)
        .map_err(|e| anyhow!("server {server}: INFO is not JSON: {e}"))?;
    let mut opts = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "name": name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
    });
    if let Some(t) = token {
        opts["auth_token"] = serde_json::Value::String(t);
    }
    let mut out = stream;
    out.write_all(format!("CONNECT {opts}\r\n").as_bytes())
        .with_context(|| format!("server {server}"))?;
    Ok(Conn {
        server,
        out,
        reader,
        max_payload: info["max_payload"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok()),
    })
}

/// What the publisher's main loop waits on: stdin lines and server ops, from two
/// threads, so a server PING is answered even while stdin is quiet.
enum Ev {
    Line(Vec<u8>),
    StdinEnd(Option<std::io::Error>),
    Server(ServerOp),
    ServerEnd(Option<String>),
}

/// The payload of generated message `k` (1-based).
fn generated(a: &PubArgs, k: u64) -> Vec<u8> {
    if let Some(p) = &a.payload {
        return p.clone().into_bytes();
    }
    let mut p = format!("msg {k}").into_bytes();
    if let Some(size) = a.size {
        if p.len() < size {
            p.push(b' ');
        }
        p.resize(size, b'x');
    }
    p
}

/// The publisher: sends buffered PUBs and answers PINGs; every server op goes
/// through [`Publisher::handle`].
struct Publisher {
    server: String,
    out: TcpStream,
    buf: Vec<u8>,
    rx: mpsc::Receiver<Ev>,
    max_payload: Option<usize>,
    got_pong: bool,
}

impl Publisher {
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.out.write_all(&self.buf) {
            // A refused connection usually said why first: prefer its -ERR.
            let until = Instant::now() + Duration::from_secs(2);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok(Ev::Server(ServerOp::Err(t))) => return Err(server_err(&self.server, &t)),
                    Ok(Ev::ServerEnd(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            return Err(anyhow!("server {}: {e}", self.server));
        }
        self.buf.clear();
        Ok(())
    }

    /// Handles one event that is not a stdin line.
    fn handle(&mut self, ev: Ev) -> Result<()> {
        match ev {
            Ev::Server(ServerOp::Ping) => {
                proto::encode_pong(&mut self.buf);
                self.flush()
            }
            Ev::Server(ServerOp::Pong) => {
                self.got_pong = true;
                Ok(())
            }
            Ev::Server(ServerOp::Err(t)) => Err(server_err(&self.server, &t)),
            Ev::Server(_) => Ok(()),
            Ev::ServerEnd(why) => Err(anyhow!(
                "server {} closed the connection{}",
                self.server,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )),
            Ev::Line(_) | Ev::StdinEnd(_) => Ok(()),
        }
    }

    /// Handles whatever arrived without waiting.
    fn poll(&mut self) -> Result<()> {
        while let Ok(ev) = self.rx.try_recv() {
            self.handle(ev)?;
        }
        Ok(())
    }

    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<()> {
        if let Some(max) = self.max_payload.filter(|&m| payload.len() > m) {
            bail!(
                "a payload of {} bytes exceeds the server's max_payload of {max}",
                payload.len()
            );
        }
        proto::encode_pub(subject, None, payload, &mut self.buf);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }
}

/// `plumcore pub`: publishes stdin lines or `--count` generated messages, then
/// flushes (PING/PONG) so that exit 0 means the node has taken every one.
pub fn run_pub(a: &PubArgs) -> Result<()> {
    if let Err(e) = validate_subject(&a.subject) {
        return Err(BadArg(format!("invalid subject `{}`: {e}", a.subject)).into());
    }
    if a.rate.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
        return Err(BadArg("--rate must be a number >= 0".into()).into());
    }
    let conn = connect(&a.server, "plumcore-pub")?;
    // The reader thread blocks for as long as the server is quiet; the handshake's
    // timeout is on the socket both halves share, so it is lifted here.
    conn.out.set_read_timeout(None)?;
    let (tx, rx) = mpsc::sync_channel(4096);
    let server_tx = tx.clone();
    let mut reader = conn.reader;
    std::thread::spawn(move || loop {
        let ev = match reader.next() {
            Ok(Next::Op(op)) => Ev::Server(op),
            Ok(Next::Timeout) => continue,
            Ok(Next::Eof) => Ev::ServerEnd(None),
            Err(e) => Ev::ServerEnd(Some(e.to_string())),
        };
        let end = matches!(ev, Ev::ServerEnd(_));
        if server_tx.send(ev).is_err() || end {
            return;
        }
    });
    let mut p = Publisher {
        server: conn.server,
        out: conn.out,
        buf: Vec::new(),
        rx,
        max_payload: conn.max_payload,
        got_pong: false,
    };
    let started = Instant::now();
    let mut sent = 0u64;
    if let Some(n) = a.count {
        drop(tx);
        let interval = a
            .rate
            .filter(|&r| r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        for k in 1..=n {
            if let Some(iv) = interval {
                let due = started + iv.mul_f64((k - 1) as f64);
                p.flush()?;
                while let Some(left) = due.checked_duration_since(Instant::now()) {
                    match p.rx.recv_timeout(left) {
                        Ok(ev) => p.handle(ev)?,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(left);
                        }
                    }
                }
            }
            p.poll()?;
            p.publish(&a.subject, &generated(a, k))?;
            sent += 1;
        }
    } else {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = Vec::new();
                let ev = match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => Ev::StdinEnd(None),
                    Ok(_) => {
                        if line.ends_with(b"\n") {
                            line.pop();
                            if line.ends_with(b"\r") {
                                line.pop();
                            }
                        }
                        Ev::Line(line)
                    }
                    Err(e) => Ev::StdinEnd(Some(e)),
                };
                let end = matches!(ev, Ev::StdinEnd(_));
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        });
        loop {
            // Nothing queued: what is buffered goes out before waiting on stdin.
            let ev = match p.rx.try_recv() {
                Ok(ev) => ev,
                Err(_) => {
                    p.flush()?;
                    p.rx.recv().map_err(|_| anyhow!("stdin reader stopped"))?
                }
            };
            match ev {
                Ev::Line(line) => {
                    p.publish(&a.subject, &line)?;
                    sent += 1;
                }
                Ev::StdinEnd(None) => break,
                Ev::StdinEnd(Some(e)) => bail!("reading stdin: {e}"),
                other => p.handle(other)?,
            }
        }
    }
    proto::encode_ping(&mut p.buf);
    p.flush()?;
    let until = Instant::now() + FLUSH_WAIT;
    while !p.got_pong {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            bail!(
                "server {}: no PONG within {} s after publishing",
                p.server,
                FLUSH_WAIT.as_secs()
            );
        };
        match p.rx.recv_timeout(left) {
            Ok(ev) => p.handle(ev)?,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("server {} closed the connection", p.server)
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {sent} messages to {} in {secs:.2} s ({:.0}/s)",
        a.subject,
        sent as f64 / secs.max(1e-6)
    );
    Ok(())
}

/// One message as an ndjson line: `payload` when it is UTF-8 text, `payload_b64`
/// otherwise (never both), so text stays readable and binary survives.
#[derive(Serialize)]
struct MsgLine<'a> {
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<&'a str>,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

fn msg_line(subject: &str, reply: Option<&str>, payload: &[u8]) -> String {
    let text = std::str::from_utf8(payload).ok();
    let line = MsgLine {
        subject,
        reply,
        size: payload.len(),
        payload: text,
        payload_b64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(payload)),
    };
    // A struct of strings and a number always serialises.
    serde_json::to_string(&line).unwrap_or_default()
}

/// The sids `plumcore sub` uses: the user's filter and the two notice subjects.
const SID_MAIN: &str = "1";
const SID_LAGGED: &str = "2";
const SID_GAP: &str = "3";

/// Writes one line to stdout and flushes it (for pipes). `false` when stdout is
/// closed (`| head`): the reader is gone, so the subscriber stops quietly.
fn emit(bytes: &[u8]) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(bytes)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("writing stdout: {e}")),
    }
}

/// `plumcore sub`: prints messages until `--count`, `--timeout-secs` of silence, or
/// the server going away; losses the node reports are shown, never hidden.
pub fn run_sub(a: &SubArgs) -> Result<()> {
    if let Err(e) = Filter::parse(&a.subject) {
        return Err(BadArg(format!("invalid subject `{}`: {e}", a.subject)).into());
    }
    let idle = match a.timeout_secs {
        Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        Some(_) => return Err(BadArg("--timeout-secs must be a number > 0".into()).into()),
        None => None,
    };
    if a.count == Some(0) {
        return Ok(());
    }
    let mut conn = connect(&a.server, "plumcore-sub")?;
    let mut buf = Vec::new();
    proto::encode_sub(&a.subject, a.queue.as_deref(), SID_MAIN, &mut buf);
    proto::encode_sub(LAGGED_SUBJECT, None, SID_LAGGED, &mut buf);
    proto::encode_sub(GAP_SUBJECT, None, SID_GAP, &mut buf);
    // The PONG to this PING says the SUBs are in place: then (and only then) a
    // script may start publishing, so it is announced on stderr.
    proto::encode_ping(&mut buf);
    let mut subscribed = false;
    let server = conn.server.clone();
    conn.out
        .write_all(&buf)
        .map_err(|e| anyhow!("server {server}: {e}"))?;
    let ndjson = a.format == Format::Ndjson;
    let mut got = 0u64;
    let mut last = Instant::now();
    loop {
        let wait = idle.map(|d| d.saturating_sub(last.elapsed()));
        if wait == Some(Duration::ZERO) {
            eprintln!(
                "plumcore sub: no message for {} s; stopping after {got} messages",
                a.timeout_secs.unwrap_or_default()
            );
            return Ok(());
        }
        // `None` blocks; a zero timeout is refused by std, hence the check above.
        conn.reader.stream.set_read_timeout(wait)?;
        let op = match conn.reader.next()? {
            Next::Op(op) => op,
            Next::Timeout => continue,
            Next::Eof => bail!("server {server} closed the connection"),
        };
        match op {
            ServerOp::Msg {
                subject,
                sid,
                reply,
                payload,
            } => {
                if sid == SID_LAGGED {
                    let missed = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v["missed"].as_u64())
                        .unwrap_or(0);
                    eprintln!("plumcore sub: lagged: {missed} messages missed");
                    if ndjson && !emit(format!("{{\"lagged\":{missed}}}").as_bytes())? {
                        return Ok(());
                    }
                } else if sid == SID_GAP {
                    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                    eprintln!(
                        "plumcore sub: gap: {} messages from origin {} will never arrive",
                        v["missed"].as_u64().unwrap_or(0),
                        v["origin"].as_str().unwrap_or("?")
                    );
                    let line = serde_json::json!({ "gap": v }).to_string();
                    if ndjson && !emit(line.as_bytes())? {
                        return Ok(());
                    }
                } else if subject == LAGGED_SUBJECT || subject == GAP_SUBJECT {
                    // A wide filter (`>`) matches the notices too; they were
                    // shown once already, on their own sids.
                } else {
                    let open = if ndjson {
                        emit(msg_line(&subject, reply.as_deref(), &payload).as_bytes())?
                    } else {
                        emit(&payload)?
                    };
                    if !open {
                        return Ok(());
                    }
                    got += 1;
                    last = Instant::now();
                    if a.count.is_some_and(|n| got >= n) {
                        return Ok(());
                    }
                }
            }
            ServerOp::Ping => {
                let mut b = Vec::new();
                proto::encode_pong(&mut b);
                conn.out
                    .write_all(&b)
                    .map_err(|e| anyhow!("server {server}: {e}"))?;
            }
            ServerOp::Err(t) if t.eq_ignore_ascii_case("Slow Consumer") => {
                eprintln!(
                    "plumcore sub: server {server}: -ERR 'Slow Consumer' (this subscriber fell behind)"
                );
            }
            ServerOp::Err(t) => return Err(server_err(&server, &t)),
            ServerOp::Pong if !subscribed => {
                subscribed = true;
                eprintln!("plumcore sub: subscribed to {} at {server}", a.subject);
            }
            ServerOp::Info(_) | ServerOp::Pong | ServerOp::Ok => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_accepts_addresses_and_nats_urls() {
        for s in [
            "127.0.0.1:4222",
            "nats://127.0.0.1:4222",
            "NATS://127.0.0.1:4222/",
        ] {
            assert_eq!(server_addr(s).unwrap(), "127.0.0.1:4222", "{s}");
        }
        assert_eq!(server_addr("localhost:9").unwrap(), "localhost:9");
        let e = server_addr("tls://x:1").unwrap_err();
        assert!(e.is::<BadArg>() && e.to_string().contains("tls"), "{e}");
        assert!(server_addr("nats://x:1/a").is_err());
        assert!(server_addr("justahost").is_err());
    }

    #[test]
    fn ndjson_lines_carry_text_or_base64() {
        let v: serde_json::Value = serde_json::from_str(&msg_line("a.b", None, b"hi")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"subject": "a.b", "size": 2, "payload": "hi"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&msg_line("a.b", Some("r"), &[0xff, 0])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"subject": "a.b", "reply": "r", "size": 2, "payload_b64": "/wA="})
        );
    }

    #[test]
    fn generated_payloads() {
        let args = |payload: Option<&str>, size| PubArgs {
            subject: "s".into(),
            server: ServerArgs {
                server: String::new(),
                token: None,
                token_file: None,
            },
            count: Some(1),
            rate: None,
            payload: payload.map(str::to_string),
            size,
        };
        assert_eq!(generated(&args(None, None), 7), b"msg 7");
        assert_eq!(generated(&args(Some("x y"), None), 7), b"x y");
        assert_eq!(generated(&args(None, Some(10)), 7), b"msg 7 xxxx");
        assert_eq!(generated(&args(None, Some(3)), 7), b"msg");
        assert_eq!(generated(&args(None, Some(0)), 7), b"");
    }
}
