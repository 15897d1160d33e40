//! The NATS core client protocol as text on the wire: [`parse`] takes one client op
//! off the front of a receive buffer, the `encode_*` functions append server ops to a
//! send buffer. For tools that speak to a node (`plumcore pub`, `plumcore sub`),
//! [`parse_server`] reads server ops and `encode_pub`/`encode_sub` write client ones.
//! Framing, limits and error texts follow nats-server so stock clients (async-nats,
//! `nats` CLI) behave as they would against it. Headers (HPUB) are not spoken yet;
//! INFO says so (`headers: false`), so well-behaved clients never send them.

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::subject::{validate_subject, Filter, SubjectError};

/// Size bounds a connection is held to. Both are checked before the bytes they bound
/// have arrived, so a client cannot make the port buffer more than them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line (an op and its arguments, without the line end).
    pub max_control_line: usize,
    /// Largest PUB payload; the node sets it from what one broadcast can carry.
    pub max_payload: usize,
}

impl Default for Limits {
    /// nats-server's control line limit, and a payload that fits one datagram.
    fn default() -> Limits {
        Limits {
            max_control_line: 4096,
            max_payload: 1024,
        }
    }
}

/// One op a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`: the client's options; must come first when a token is set.
    Connect(ConnectOptions),
    /// `PUB <subject> [reply] <size>` and its payload: publish to `subject`.
    Pub {
        /// Where to publish: a valid subject, no wildcards (checked by the parser).
        subject: String,
        /// The subject a responder should answer on; the node does not route replies.
        reply: Option<String>,
        /// Exactly `size` bytes, the CRLF after them stripped.
        payload: Bytes,
    },
    /// `SUB <filter> [queue] <sid>`: deliver matching publications as MSG.
    Sub {
        /// The filter, wildcards allowed (checked by the parser).
        subject: String,
        /// Queue group: each message goes to one member of the group, not all.
        queue: Option<String>,
        /// The client's name for the subscription, echoed in every MSG.
        sid: String,
    },
    /// `UNSUB <sid> [max]`: drop the subscription now, or after `max` deliveries.
    Unsub {
        /// The subscription, as named by its SUB.
        sid: String,
        /// Deliveries in all (earlier ones included) before it goes; `None` is now.
        max: Option<u64>,
    },
    /// `PING`: the client checks the connection; answered with PONG.
    Ping,
    /// `PONG`: the answer to a server PING.
    Pong,
}

/// The CONNECT options this node reads; unknown fields are ignored, and a `null`
/// reads as the field's default (some clients send explicit nulls).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// Acknowledge every op with `+OK`.
    #[serde(deserialize_with = "null_as_default")]
    pub verbose: bool,
    /// Ask for stricter checks; read but not acted on (subjects are always checked).
    #[serde(deserialize_with = "null_as_default")]
    pub pedantic: bool,
    /// Whether the client gets its own publications back on its subscriptions.
    #[serde(deserialize_with = "null_as_true")]
    pub echo: bool,
    /// The secret checked against the node's admin token when one is set.
    pub auth_token: Option<String>,
    /// User name; read but not checked (only `auth_token` authenticates here).
    pub user: Option<String>,
    /// Password; read but not checked, and never logged.
    pub pass: Option<String>,
    /// The client's self-chosen name, for logs.
    pub name: Option<String>,
    /// The client library's language (`rust`, `go`, ...).
    pub lang: Option<String>,
    /// The client library's version.
    pub version: Option<String>,
    /// Client protocol level: 1 means the client understands async INFO.
    #[serde(deserialize_with = "null_as_default")]
    pub protocol: u32,
    /// The client wants to send HPUB; this node does not speak headers.
    #[serde(deserialize_with = "null_as_default")]
    pub headers: bool,
    /// The client wants a 503 status when a request has no responder; read but not
    /// acted on (the node routes no replies).
    #[serde(deserialize_with = "null_as_default")]
    pub no_responders: bool,
    /// The client requires TLS; the client port is plain TCP.
    #[serde(deserialize_with = "null_as_default")]
    pub tls_required: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            verbose: false,
            pedantic: false,
            echo: true,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            headers: false,
            no_responders: false,
            tls_required: false,
        }
    }
}

/// Hand-written so a logged CONNECT never shows the token or the password.
impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectOptions")
            .field("verbose", &self.verbose)
            .field("pedantic", &self.pedantic)
            .field("echo", &self.echo)
            .field("auth_token", &redact(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &redact(&self.pass))
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .field("headers", &self.headers)
            .field("no_responders", &self.no_responders)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_as_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// The INFO a connection is greeted with, under the field names nats-server uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    /// The node id, as [`NodeId`](crate::ids::NodeId) prints it.
    pub server_id: String,
    /// The configured node name, or the node id when none is set.
    pub server_name: String,
    /// This crate's version.
    pub version: String,
    /// Protocol level; 1 tells clients they may rely on async INFO updates.
    pub proto: u32,
    /// Where nats-server reports its Go version; names this implementation instead.
    pub go: String,
    /// The address the client port listens on.
    pub host: String,
    /// The client port's TCP port.
    pub port: u16,
    /// Whether HPUB/HMSG are spoken: always `false` for now.
    pub headers: bool,
    /// Largest PUB payload in bytes; a larger one closes the connection.
    pub max_payload: usize,
    /// CONNECT must carry an `auth_token` before any other op is accepted.
    pub auth_required: bool,
    /// The node's number for this connection, unique while the node runs.
    pub client_id: u64,
    /// The client's address as the node sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

impl Default for ServerInfo {
    fn default() -> ServerInfo {
        ServerInfo {
            server_id: String::new(),
            server_name: String::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            proto: 1,
            go: "plumcore".to_owned(),
            host: String::new(),
            port: 0,
            headers: false,
            max_payload: Limits::default().max_payload,
            auth_required: false,
            client_id: 0,
            client_ip: None,
        }
    }
}

/// Why the bytes from a client are not a protocol op.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ProtoError {
    /// No line end within the control line limit.
    #[error("control line longer than {max} bytes")]
    ControlLineTooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A verb this protocol does not have, or one of the other direction (MSG from a
    /// client, PUB from a server).
    #[error("unknown protocol operation {0:?}")]
    UnknownOp(String),
    /// A verb of the protocol this node does not speak yet (HPUB, HMSG).
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// Wrong number of arguments, a non-numeric size or a non-UTF-8 sid.
    #[error("malformed {op} arguments")]
    BadArgs {
        /// The verb whose arguments were wrong.
        op: &'static str,
    },
    /// A PUB subject or reply that is not a publish subject, or a SUB filter that is
    /// not a filter. The op was well framed: `consumed` bytes (payload included) may
    /// be skipped and the connection kept, as nats-server does.
    #[error("invalid subject in {op}: {source}")]
    InvalidSubject {
        /// `PUB` or `SUB`.
        op: &'static str,
        /// Bytes of the buffer the op took, to skip before parsing the next one.
        consumed: usize,
        /// What is wrong with the subject.
        source: SubjectError,
    },
    /// A PUB declaring more than the payload limit (known from its control line).
    #[error("payload of {size} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// The declared size in bytes (`usize::MAX` when it overflows).
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The declared payload is not followed by CRLF: the size was a lie.
    #[error("payload not followed by CRLF")]
    BadPayloadTerminator,
    /// CONNECT without JSON, or JSON that does not fit the options.
    #[error("bad CONNECT options: {0}")]
    BadConnect(String),
}

impl ProtoError {
    /// The text for `-ERR '...'`: nats-server's own where it has one (clients match
    /// on some of them), "Unknown Protocol Operation" for any malformed op as its
    /// parser says.
    pub fn nats_text(&self) -> String {
        match self {
            ProtoError::ControlLineTooLong { .. } => "Maximum Control Line Exceeded".into(),
            ProtoError::PayloadTooLarge { .. } => "Maximum Payload Violation".into(),
            ProtoError::InvalidSubject { op: "PUB", .. } => "Invalid Publish Subject".into(),
            ProtoError::InvalidSubject { .. } => "Invalid Subject".into(),
            ProtoError::Unsupported("HPUB" | "HMSG") => "Headers Not Supported".into(),
            ProtoError::Unsupported(op) => format!("{op} Not Supported"),
            ProtoError::UnknownOp(_)
            | ProtoError::BadArgs { .. }
            | ProtoError::BadPayloadTerminator
            | ProtoError::BadConnect(_) => "Unknown Protocol Operation".into(),
        }
    }

    /// Short, stable label for metrics (a counter per reason); never changes once
    /// shipped, unlike the `Display` text.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtoError::ControlLineTooLong { .. } => "control_line",
            ProtoError::UnknownOp(_) => "unknown_op",
            ProtoError::Unsupported(_) => "unsupported",
            ProtoError::BadArgs { .. } => "bad_args",
            ProtoError::InvalidSubject { .. } => "invalid_subject",
            ProtoError::PayloadTooLarge { .. } => "payload_too_large",
            ProtoError::BadPayloadTerminator => "bad_payload",
            ProtoError::BadConnect(_) => "bad_connect",
        }
    }

    /// Whether the connection must be closed after the `-ERR`. Like nats-server, only
    /// an invalid subject is survivable: every other error leaves the stream at an
    /// unknown position (or is a limit the client chose to break).
    pub fn closes(&self) -> bool {
        !matches!(self, ProtoError::InvalidSubject { .. })
    }

    /// Bytes to drop from the buffer to go on after an error that does not close.
    pub fn consumed(&self) -> Option<usize> {
        match self {
            ProtoError::InvalidSubject { consumed, .. } => Some(*consumed),
            _ => None,
        }
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Up to three blank-separated arguments and their count; `None` for more.
fn split_args(rest: &[u8]) -> Option<([&[u8]; 3], usize)> {
    let mut args: [&[u8]; 3] = [&[]; 3];
    let mut n = 0;
    for a in rest.split(|&b| is_blank(b)).filter(|a| !a.is_empty()) {
        *args.get_mut(n)? = a;
        n += 1;
    }
    Some((args, n))
}

/// A decimal size or count. Digits only (no sign, no blank); `Err(true)` when it
/// overflows, `Err(false)` when it is not a number.
fn parse_number(s: &[u8]) -> Result<u64, bool> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(false);
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(true)
    })
}

fn utf8(s: &[u8], op: &'static str) -> Result<String, ProtoError> {
    std::str::from_utf8(s)
        .map(str::to_owned)
        .map_err(|_| ProtoError::BadArgs { op })
}

fn subject_text(s: &[u8]) -> Result<&str, SubjectError> {
    std::str::from_utf8(s).map_err(|_| SubjectError::NotUtf8)
}

/// A control line: its verb, the arguments after it, and the offset just past its
/// line end.
type ControlLine<'a> = (&'a [u8], &'a [u8], usize);

/// The control line at the front of `buf`; `Ok(None)` while its line end has not
/// arrived (and the limit is not yet exceeded). Shared by both directions.
fn control_line<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<ControlLine<'a>>, ProtoError> {
    let too_long = ProtoError::ControlLineTooLong {
        max: limits.max_control_line,
    };
    let window = limits.max_control_line.saturating_add(2);
    let Some(nl) = buf.iter().take(window).position(|&b| b == b'\n') else {
        return if buf.len() >= window {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    let end = nl + 1;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > limits.max_control_line {
        return Err(too_long);
    }
    let verb_len = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    let (verb, rest) = line.split_at(verb_len);
    Ok(Some((verb, rest.trim_ascii_start(), end)))
}

/// The `size` payload bytes starting at `end` and the offset past their CRLF;
/// `Ok(None)` until all have arrived. A wrong byte where the CRLF belongs is
/// reported as soon as it arrives.
fn framed_payload(
    buf: &[u8],
    end: usize,
    size: usize,
) -> Result<Option<(&[u8], usize)>, ProtoError> {
    let payload_end = end.saturating_add(size);
    let total = payload_end.saturating_add(2);
    if buf.get(payload_end).is_some_and(|&b| b != b'\r')
        || buf
            .get(payload_end.saturating_add(1))
            .is_some_and(|&b| b != b'\n')
    {
        return Err(ProtoError::BadPayloadTerminator);
    }
    let Some(payload) = buf.get(end..payload_end) else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((payload, total)))
}

/// Parses one op from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the op and how many bytes it took. Verbs are case-insensitive,
/// arguments are separated by spaces or tabs, lines end in CRLF or a bare LF; a PUB
/// payload must be followed by CRLF. Never waits for more than the limits allow, so a
/// receive buffer of `max_control_line + max_payload + 4` bytes always suffices.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(ClientOp, usize)>, ProtoError> {
    let Some((verb, rest, end)) = control_line(buf, limits)? else {
        return Ok(None);
    };
    let is = |v: &str| verb.eq_ignore_ascii_case(v.as_bytes());

    let op = if is("PUB") {
        return parse_pub(rest, buf, end, limits);
    } else if is("SUB") {
        let (args, n) = split_args(rest).ok_or(ProtoError::BadArgs { op: "SUB" })?;
        let (subject, queue, sid) = match n {
            2 => (args[0], None, args[1]),
            3 => (args[0], Some(args[1]), args[2]),
            _ => return Err(ProtoError::BadArgs { op: "SUB" }),
        };
        let invalid = |source| ProtoError::InvalidSubject {
            op: "SUB",
            consumed: end,
            source,
        };
        let subject = subject_text(subject).map_err(invalid)?;
        Filter::parse(subject).map_err(invalid)?;
        ClientOp::Sub {
            subject: subject.to_owned(),
            queue: queue.map(|q| utf8(q, "SUB")).transpose()?,
            sid: utf8(sid, "SUB")?,
        }
    } else if is("UNSUB") {
        let bad = ProtoError::BadArgs { op: "UNSUB" };
        let (args, n) = split_args(rest).ok_or(bad.clone())?;
        let max = match n {
            1 => None,
            2 => Some(parse_number(args[1]).map_err(|_| bad.clone())?),
            _ => return Err(bad),
        };
        ClientOp::Unsub {
            sid: utf8(args[0], "UNSUB")?,
            max,
        }
    } else if is("PING") || is("PONG") {
        let op = if is("PING") { "PING" } else { "PONG" };
        if !rest.is_empty() {
            return Err(ProtoError::BadArgs { op });
        }
        if op == "PING" {
            ClientOp::Ping
        } else {
            ClientOp::Pong
        }
    } else if is("CONNECT") {
        let json = rest.trim_ascii_end();
        if json.first() != Some(&b'{') {
            // serde would also take a JSON array as the struct's fields in order.
            return Err(ProtoError::BadConnect(
                "options are not a JSON object".into(),
            ));
        }
        let opts = serde_json::from_slice(json)
            .map_err(|e| ProtoError::BadConnect(e.to_string().replace(['\r', '\n'], " ")))?;
        ClientOp::Connect(opts)
    } else if is("HPUB") {
        return Err(ProtoError::Unsupported("HPUB"));
    } else if is("HMSG") {
        return Err(ProtoError::Unsupported("HMSG"));
    } else {
        let shown: String = String::from_utf8_lossy(verb).chars().take(32).collect();
        return Err(ProtoError::UnknownOp(shown));
    };
    Ok(Some((op, end)))
}

/// PUB: the control line is parsed (and the size checked against the limit) at once;
/// the payload and its CRLF are waited for; a wrong byte where the CRLF belongs is
/// reported as soon as it arrives.
fn parse_pub(
    rest: &[u8],
    buf: &[u8],
    end: usize,
    limits: &Limits,
) -> Result<Option<(ClientOp, usize)>, ProtoError> {
    let bad = ProtoError::BadArgs { op: "PUB" };
    let (args, n) = split_args(rest).ok_or(bad.clone())?;
    let (subject, reply, size) = match n {
        2 => (args[0], None, args[1]),
        3 => (args[0], Some(args[1]), args[2]),
        _ => return Err(bad),
    };
    let too_large = |size| ProtoError::PayloadTooLarge {
        size,
        max: limits.max_payload,
    };
    let size = match parse_number(size) {
        Ok(s) => usize::try_from(s).map_err(|_| too_large(usize::MAX))?,
        Err(true) => return Err(too_large(usize::MAX)),
        Err(false) => return Err(bad),
    };
    if size > limits.max_payload {
        return Err(too_large(size));
    }
    let Some((payload, total)) = framed_payload(buf, end, size)? else {
        return Ok(None);
    };
    let invalid = |source| ProtoError::InvalidSubject {
        op: "PUB",
        consumed: total,
        source,
    };
    let subject = subject_text(subject).map_err(invalid)?;
    validate_subject(subject).map_err(invalid)?;
    let reply = match reply {
        Some(r) => {
            let r = subject_text(r).map_err(invalid)?;
            validate_subject(r).map_err(invalid)?;
            Some(r.to_owned())
        }
        None => None,
    };
    let op = ClientOp::Pub {
        subject: subject.to_owned(),
        reply,
        payload: Bytes::copy_from_slice(payload),
    };
    Ok(Some((op, total)))
}

fn put_decimal<B: BufMut>(mut n: usize, out: &mut B) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// `INFO {json}\r\n`.
pub fn encode_info<B: BufMut>(info: &ServerInfo, out: &mut B) {
    // Serialising a struct of strings, numbers and bools cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_else(|_| b"{}".to_vec());
    out.put_slice(b"INFO ");
    out.put_slice(&json);
    out.put_slice(b"\r\n");
}

/// `MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n`: a delivery.
pub fn encode_msg<B: BufMut>(
    subject: &str,
    sid: &str,
    reply: Option<&str>,
    payload: &[u8],
    out: &mut B,
) {
    out.put_slice(b"MSG ");
    out.put_slice(subject.as_bytes());
    out.put_u8(b' ');
    out.put_slice(sid.as_bytes());
    out.put_u8(b' ');
    put_reply_and_payload(reply, payload, out);
}

/// `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`: what a client sends (tests, and
/// tools speaking to a node).
pub fn encode_pub<B: BufMut>(subject: &str, reply: Option<&str>, payload: &[u8], out: &mut B) {
    out.put_slice(b"PUB ");
    out.put_slice(subject.as_bytes());
    out.put_u8(b' ');
    put_reply_and_payload(reply, payload, out);
}

/// The common end of MSG and PUB: `[reply ]<#bytes>\r\n<payload>\r\n`.
fn put_reply_and_payload<B: BufMut>(reply: Option<&str>, payload: &[u8], out: &mut B) {
    if let Some(r) = reply {
        out.put_slice(r.as_bytes());
        out.put_u8(b' ');
    }
    put_decimal(payload.len(), out);
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// `+OK\r\n` (sent after each op to a verbose client).
pub fn encode_ok<B: BufMut>(out: &mut B) {
    out.put_slice(b"+OK\r\n");
}

/// `-ERR 'text'\r\n`. Quotes and line ends in `text` become spaces, so the line
/// always parses.
pub fn encode_err<B: BufMut>(text: &str, out: &mut B) {
    out.put_slice(b"-ERR '");
    for b in text.bytes() {
        out.put_u8(if matches!(b, b'\'' | b'\r' | b'\n') {
            b' '
        } else {
            b
        });
    }
    out.put_slice(b"'\r\n");
}

/// `PING\r\n`.
pub fn encode_ping<B: BufMut>(out: &mut B) {
    out.put_slice(b"PING\r\n");
}

/// `PONG\r\n`.
pub fn encode_pong<B: BufMut>(out: &mut B) {
    out.put_slice(b"PONG\r\n");
}

/// `SUB <filter> [queue] <sid>\r\n`: what a client sends to subscribe.
pub fn encode_sub<B: BufMut>(filter: &str, queue: Option<&str>, sid: &str, out: &mut B) {
    out.put_slice(b"SUB ");
    out.put_slice(filter.as_bytes());
    out.put_u8(b' ');
    if let Some(q) = queue {
        out.put_slice(q.as_bytes());
        out.put_u8(b' ');
    }
    out.put_slice(sid.as_bytes());
    out.put_slice(b"\r\n");
}

/// One op a server sent: what a client (`plumcore pub`, `plumcore sub`) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// INFO's JSON as text: a client reads only the fields it needs from it.
    Info(String),
    /// `MSG <subject> <sid> [reply] <size>` and its payload: a delivery.
    Msg {
        /// The subject it was published to.
        subject: String,
        /// The subscription it matched.
        sid: String,
        /// The publisher's reply subject, if it gave one.
        reply: Option<String>,
        /// Exactly `size` bytes, the CRLF after them stripped.
        payload: Bytes,
    },
    /// `PING`: the server checks the connection; answer with PONG.
    Ping,
    /// `PONG`: the answer to a client PING.
    Pong,
    /// `+OK`: a verbose connection's acknowledgement of an op.
    Ok,
    /// `-ERR`'s text, without the quotes around it.
    Err(String),
}

/// Parses one server op from the front of `buf`, as [`parse`] does client ops:
/// `Ok(None)` when more bytes are needed, otherwise the op and how many bytes it
/// took. Subjects are not checked (the server is trusted to route only what it
/// accepted); `limits.max_payload` bounds a MSG as it bounds a PUB.
pub fn parse_server(buf: &[u8], limits: &Limits) -> Result<Option<(ServerOp, usize)>, ProtoError> {
    let Some((verb, rest, end)) = control_line(buf, limits)? else {
        return Ok(None);
    };
    let is = |v: &str| verb.eq_ignore_ascii_case(v.as_bytes());
    let no_args = |op: &'static str, v: ServerOp| {
        if rest.trim_ascii_end().is_empty() {
            Ok(Some((v, end)))
        } else {
            Err(ProtoError::BadArgs { op })
        }
    };
    if is("MSG") {
        let bad = ProtoError::BadArgs { op: "MSG" };
        let mut args: Vec<&[u8]> = rest
            .split(|&b| is_blank(b))
            .filter(|a| !a.is_empty())
            .take(5)
            .collect();
        let size = match args.len() {
            3 | 4 => args.pop().unwrap_or_default(),
            _ => return Err(bad),
        };
        let size = match parse_number(size) {
            Ok(s) => usize::try_from(s).unwrap_or(usize::MAX),
            Err(true) => usize::MAX,
            Err(false) => return Err(bad),
        };
        if size > limits.max_payload {
            return Err(ProtoError::PayloadTooLarge {
                size,
                max: limits.max_payload,
            });
        }
        let Some((payload, total)) = framed_payload(buf, end, size)? else {
            return Ok(None);
        };
        let op = ServerOp::Msg {
            subject: utf8(args[0], "MSG")?,
            sid: utf8(args[1], "MSG")?,
            reply: args.get(2).map(|r| utf8(r, "MSG")).transpose()?,
            payload: Bytes::copy_from_slice(payload),
        };
        Ok(Some((op, total)))
    } else if is("PING") {
        no_args("PING", ServerOp::Ping)
    } else if is("PONG") {
        no_args("PONG", ServerOp::Pong)
    } else if is("+OK") {
        no_args("+OK", ServerOp::Ok)
    } else if is("-ERR") {
        let text = String::from_utf8_lossy(rest.trim_ascii_end());
        let text = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(&text);
        Ok(Some((ServerOp::Err(text.trim().to_owned()), end)))
    } else if is("INFO") {
        let json = utf8(rest.trim_ascii_end(), "INFO")?;
        Ok(Some((ServerOp::Info(json), end)))
    } else if is("HMSG") {
        Err(ProtoError::Unsupported("HMSG"))
    } else {
        let shown: String = String::from_utf8_lossy(verb).chars().take(32).collect();
        Err(ProtoError::UnknownOp(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(input: &[u8]) -> Result<Option<(ClientOp, usize)>, ProtoError> {
        parse(input, &Limits::default())
    }

    fn op(input: &[u8]) -> ClientOp {
        match one(input) {
            Ok(Some((op, n))) => {
                assert_eq!(n, input.len(), "whole input consumed");
                op
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn err(input: &[u8]) -> ProtoError {
        match one(input) {
            Err(e) => e,
            other => panic!("{input:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn ping_pong_any_case_and_line_end() {
        assert_eq!(op(b"PING\r\n"), ClientOp::Ping);
        assert_eq!(op(b"ping\n"), ClientOp::Ping);
        assert_eq!(op(b"PoNg\r\n"), ClientOp::Pong);
        assert_eq!(op(b"PING  \r\n"), ClientOp::Ping, "trailing blanks");
        assert_eq!(err(b"PING x\r\n"), ProtoError::BadArgs { op: "PING" });
    }

    #[test]
    fn pub_with_and_without_reply() {
        assert_eq!(
            op(b"PUB foo.bar 5\r\nhello\r\n"),
            ClientOp::Pub {
                subject: "foo.bar".into(),
                reply: None,
                payload: Bytes::from_static(b"hello"),
            }
        );
        assert_eq!(
            op(b"pub\tfoo  _INBOX.1 \t 2\r\nhi\r\n"),
            ClientOp::Pub {
                subject: "foo".into(),
                reply: Some("_INBOX.1".into()),
                payload: Bytes::from_static(b"hi"),
            }
        );
        assert_eq!(
            op(b"PUB foo 0\r\n\r\n"),
            ClientOp::Pub {
                subject: "foo".into(),
                reply: None,
                payload: Bytes::new(),
            }
        );
        // The payload may hold line ends: only the size frames it.
        let ClientOp::Pub { payload, .. } = op(b"PUB foo 4\r\n\r\n\r\n\r\n") else {
            panic!("not a PUB");
        };
        assert_eq!(&payload[..], b"\r\n\r\n");
    }

    #[test]
    fn sub_and_unsub() {
        assert_eq!(
            op(b"SUB foo.* 1\r\n"),
            ClientOp::Sub {
                subject: "foo.*".into(),
                queue: None,
                sid: "1".into(),
            }
        );
        assert_eq!(
            op(b"sub foo.> workers abc\n"),
            ClientOp::Sub {
                subject: "foo.>".into(),
                queue: Some("workers".into()),
                sid: "abc".into(),
            }
        );
        assert_eq!(
            op(b"UNSUB 1\r\n"),
            ClientOp::Unsub {
                sid: "1".into(),
                max: None,
            }
        );
        assert_eq!(
            op(b"unsub 1 10\r\n"),
            ClientOp::Unsub {
                sid: "1".into(),
                max: Some(10),
            }
        );
    }

    #[test]
    fn connect_options() {
        let ClientOp::Connect(o) = op(b"CONNECT {}\r\n") else {
            panic!("not a CONNECT");
        };
        assert_eq!(o, ConnectOptions::default());
        assert!(o.echo, "echo defaults to true");
        let line = br#"CONNECT {"verbose":true,"pedantic":false,"echo":false,"user":"u","pass":"secret","name":"cli","lang":"rust","version":"0.33","protocol":1,"headers":true,"no_responders":true,"tls_required":false,"auth_token":null,"sig":"x","future":{"a":1}}"#;
        let mut input = line.to_vec();
        input.extend_from_slice(b"\r\n");
        let ClientOp::Connect(o) = op(&input) else {
            panic!("not a CONNECT");
        };
        assert!(o.verbose && !o.echo && o.headers && o.no_responders);
        assert_eq!(o.user.as_deref(), Some("u"));
        assert_eq!(o.pass.as_deref(), Some("secret"));
        assert_eq!(o.protocol, 1);
        assert_eq!(o.auth_token, None);
        assert!(!format!("{o:?}").contains("secret"), "Debug redacts");
        let ClientOp::Connect(o) = op(b"CONNECT {\"echo\":null,\"verbose\":null}\r\n") else {
            panic!("not a CONNECT");
        };
        assert!(o.echo && !o.verbose, "nulls read as defaults");
        assert!(matches!(err(b"CONNECT\r\n"), ProtoError::BadConnect(_)));
        assert!(matches!(err(b"CONNECT {\r\n"), ProtoError::BadConnect(_)));
        assert!(matches!(
            err(b"CONNECT {\"verbose\":3}\r\n"),
            ProtoError::BadConnect(_)
        ));
        assert!(matches!(err(b"CONNECT []\r\n"), ProtoError::BadConnect(_)));
    }

    #[test]
    fn unknown_and_unsupported_ops() {
        assert_eq!(err(b"FOO bar\r\n"), ProtoError::UnknownOp("FOO".into()));
        assert_eq!(err(b"MSG a 1 0\r\n"), ProtoError::UnknownOp("MSG".into()));
        assert_eq!(err(b"\r\n"), ProtoError::UnknownOp(String::new()));
        assert_eq!(err(b"HPUB a 2 2\r\n"), ProtoError::Unsupported("HPUB"));
        assert_eq!(err(b"hmsg a 1 2 2\r\n"), ProtoError::Unsupported("HMSG"));
        assert_eq!(err(b"HPUB a 2 2\r\n").nats_text(), "Headers Not Supported");
        let long_verb = [b'X'; 100];
        let mut input = long_verb.to_vec();
        input.push(b'\n');
        assert!(matches!(err(&input), ProtoError::UnknownOp(v) if v.len() == 32));
    }

    #[test]
    fn bad_arguments() {
        for input in [
            &b"PUB foo\r\n"[..],
            b"PUB\r\n",
            b"PUB a b c 1\r\n",
            b"PUB foo x\r\n",
            b"PUB foo -1\r\n",
            b"PUB foo +1\r\n",
        ] {
            assert_eq!(err(input), ProtoError::BadArgs { op: "PUB" }, "{input:?}");
        }
        for input in [&b"SUB foo\r\n"[..], b"SUB a b c d\r\n", b"SUB a \xff\r\n"] {
            assert_eq!(err(input), ProtoError::BadArgs { op: "SUB" }, "{input:?}");
        }
        for input in [&b"UNSUB\r\n"[..], b"UNSUB 1 x\r\n", b"UNSUB 1 2 3\r\n"] {
            assert_eq!(err(input), ProtoError::BadArgs { op: "UNSUB" }, "{input:?}");
        }
    }

    #[test]
    fn invalid_subjects_are_survivable() {
        let e = err(b"SUB foo..bar 1\r\nPING\r\n");
        assert_eq!(
            e,
            ProtoError::InvalidSubject {
                op: "SUB",
                consumed: 16,
                source: SubjectError::EmptyToken,
            }
        );
        assert!(!e.closes());
        assert_eq!(e.consumed(), Some(16));
        assert_eq!(e.nats_text(), "Invalid Subject");
        let input = b"PUB foo.* 2\r\nhi\r\nPING\r\n";
        let e = err(input);
        assert_eq!(e.consumed(), Some(17), "payload included");
        assert_eq!(e.nats_text(), "Invalid Publish Subject");
        assert_eq!(
            one(&input[17..]).ok().flatten().map(|(o, _)| o),
            Some(ClientOp::Ping)
        );
        assert!(matches!(
            err(b"PUB a b.> 0\r\n\r\n"),
            ProtoError::InvalidSubject { op: "PUB", .. }
        ));
        assert!(matches!(
            err(b"SUB a.>.b 1\r\n"),
            ProtoError::InvalidSubject {
                source: SubjectError::MisplacedFullWildcard,
                ..
            }
        ));
        assert!(matches!(
            err(b"SUB \xff 1\r\n"),
            ProtoError::InvalidSubject {
                source: SubjectError::NotUtf8,
                ..
            }
        ));
        // Not yet complete: the PUB error waits for its payload.
        assert_eq!(one(b"PUB foo.* 2\r\nh"), Ok(None));
    }

    #[test]
    fn payload_limit_checked_from_the_control_line() {
        let limits = Limits {
            max_control_line: 4096,
            max_payload: 8,
        };
        assert_eq!(
            parse(b"PUB foo 9\r\n", &limits),
            Err(ProtoError::PayloadTooLarge { size: 9, max: 8 })
        );
        assert!(parse(b"PUB foo 8\r\n12345678\r\n", &limits).is_ok_and(|r| r.is_some()));
        assert_eq!(
            parse(b"PUB foo 99999999999999999999999\r\n", &limits),
            Err(ProtoError::PayloadTooLarge {
                size: usize::MAX,
                max: 8,
            })
        );
        let e = ProtoError::PayloadTooLarge { size: 9, max: 8 };
        assert_eq!(e.nats_text(), "Maximum Payload Violation");
        assert!(e.closes());
    }

    #[test]
    fn payload_terminator_required() {
        assert_eq!(
            err(b"PUB foo 2\r\nhix\r\n"),
            ProtoError::BadPayloadTerminator
        );
        assert_eq!(err(b"PUB foo 2\r\nhi\rx"), ProtoError::BadPayloadTerminator);
        assert_eq!(err(b"PUB foo 2\r\nhi\n"), ProtoError::BadPayloadTerminator);
        // Detected as soon as the wrong byte is there, before the rest arrives.
        assert_eq!(err(b"PUB foo 2\r\nhix"), ProtoError::BadPayloadTerminator);
    }

    #[test]
    fn control_line_limit() {
        let limits = Limits {
            max_control_line: 10,
            max_payload: 64,
        };
        assert!(parse(b"SUB abc 12\r\n", &limits).is_ok_and(|r| r.is_some()));
        assert_eq!(
            parse(b"SUB abcd 12\r\n", &limits),
            Err(ProtoError::ControlLineTooLong { max: 10 })
        );
        assert_eq!(
            parse(b"SUB abcd 12\n", &limits),
            Err(ProtoError::ControlLineTooLong { max: 10 })
        );
        assert_eq!(parse(b"SUB abc 12\r", &limits), Ok(None));
        assert_eq!(
            parse(b"SUB abcd 1234", &limits),
            Err(ProtoError::ControlLineTooLong { max: 10 }),
            "no line end in sight"
        );
        assert_eq!(parse(&[b'x'; 11], &limits), Ok(None));
        assert_eq!(
            parse(&[b'x'; 12], &limits),
            Err(ProtoError::ControlLineTooLong { max: 10 })
        );
        assert_eq!(
            ProtoError::ControlLineTooLong { max: 10 }.nats_text(),
            "Maximum Control Line Exceeded"
        );
    }

    const STREAM: &[u8] = b"CONNECT {\"verbose\":false,\"name\":\"t\"}\r\nPING\r\nSUB a.* q 1\r\nPUB a.b _INBOX.x 5\r\nhello\r\nPUB a.c 0\r\n\r\nUNSUB 1 3\nPONG\r\n";

    fn parse_all(mut input: &[u8]) -> Vec<ClientOp> {
        let mut ops = Vec::new();
        while !input.is_empty() {
            let (op, n) = one(input).expect("valid").expect("complete");
            ops.push(op);
            input = &input[n..];
        }
        ops
    }

    #[test]
    fn every_prefix_is_incomplete_or_the_first_op() {
        let ops = parse_all(STREAM);
        assert_eq!(ops.len(), 7);
        let mut start = 0;
        for expected in &ops {
            let rest = &STREAM[start..];
            let mut took = None;
            for cut in 0..=rest.len() {
                match one(&rest[..cut]) {
                    Ok(None) => assert!(took.is_none(), "None after complete at {cut}"),
                    Ok(Some((op, n))) => {
                        assert_eq!(&op, expected);
                        assert!(n <= cut);
                        took.get_or_insert(n);
                    }
                    Err(e) => panic!("prefix {:?}: {e}", &rest[..cut]),
                }
            }
            start += took.expect("op parsed");
        }
        assert_eq!(start, STREAM.len());
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        encode_msg("a.b", "7", None, b"hi", &mut out);
        encode_msg("a.b", "7", Some("r.1"), b"", &mut out);
        assert_eq!(out, b"MSG a.b 7 2\r\nhi\r\nMSG a.b 7 r.1 0\r\n\r\n");
        let mut out = bytes::BytesMut::new();
        encode_ok(&mut out);
        encode_ping(&mut out);
        encode_pong(&mut out);
        encode_err("Invalid 'Subject'\r\n", &mut out);
        assert_eq!(
            &out[..],
            b"+OK\r\nPING\r\nPONG\r\n-ERR 'Invalid  Subject   '\r\n"
        );
        let mut out = Vec::new();
        let info = ServerInfo {
            server_id: "N1".into(),
            max_payload: 1000,
            client_id: 42,
            ..ServerInfo::default()
        };
        encode_info(&info, &mut out);
        assert!(out.starts_with(b"INFO {") && out.ends_with(b"}\r\n"));
        let json: serde_json::Value =
            serde_json::from_slice(&out[5..out.len() - 2]).expect("INFO carries JSON");
        assert_eq!(json["server_id"], "N1");
        assert_eq!(json["proto"], 1);
        assert_eq!(json["max_payload"], 1000);
        assert_eq!(json["headers"], false);
        assert_eq!(json["client_id"], 42);
        assert_eq!(json["go"], "plumcore");
        assert!(json.get("client_ip").is_none());
    }

    fn server_op(input: &[u8]) -> ServerOp {
        match parse_server(input, &Limits::default()) {
            Ok(Some((op, n))) => {
                assert_eq!(n, input.len(), "whole input consumed");
                op
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn server_ops() {
        assert_eq!(server_op(b"PING\r\n"), ServerOp::Ping);
        assert_eq!(server_op(b"pong\n"), ServerOp::Pong);
        assert_eq!(server_op(b"+OK\r\n"), ServerOp::Ok);
        assert_eq!(
            server_op(b"-ERR 'Slow Consumer'\r\n"),
            ServerOp::Err("Slow Consumer".into())
        );
        assert_eq!(
            server_op(b"-ERR Unquoted text \r\n"),
            ServerOp::Err("Unquoted text".into())
        );
        assert_eq!(
            server_op(b"INFO {\"max_payload\":1024}\r\n"),
            ServerOp::Info("{\"max_payload\":1024}".into())
        );
        assert_eq!(
            server_op(b"MSG a.b 7 2\r\nhi\r\n"),
            ServerOp::Msg {
                subject: "a.b".into(),
                sid: "7".into(),
                reply: None,
                payload: Bytes::from_static(b"hi"),
            }
        );
        assert_eq!(
            server_op(b"MSG a.b 7 r.1 4\r\n\r\n\r\n\r\n"),
            ServerOp::Msg {
                subject: "a.b".into(),
                sid: "7".into(),
                reply: Some("r.1".into()),
                payload: Bytes::from_static(b"\r\n\r\n"),
            }
        );
        let srv = |b: &[u8]| parse_server(b, &Limits::default());
        assert_eq!(srv(b"MSG a.b 7 2\r\nh"), Ok(None), "payload still coming");
        assert_eq!(srv(b"MSG a.b 7"), Ok(None), "line still coming");
        assert_eq!(
            srv(b"MSG a.b 2\r\n"),
            Err(ProtoError::BadArgs { op: "MSG" })
        );
        assert_eq!(
            srv(b"MSG a 1 x 2 3\r\n"),
            Err(ProtoError::BadArgs { op: "MSG" })
        );
        assert_eq!(
            srv(b"MSG a 1 x\r\n"),
            Err(ProtoError::BadArgs { op: "MSG" })
        );
        assert_eq!(
            srv(b"MSG a 1 2\r\nhix"),
            Err(ProtoError::BadPayloadTerminator)
        );
        assert_eq!(srv(b"PING x\r\n"), Err(ProtoError::BadArgs { op: "PING" }));
        assert_eq!(
            srv(b"PUB a 0\r\n\r\n"),
            Err(ProtoError::UnknownOp("PUB".into()))
        );
        assert_eq!(
            srv(b"HMSG a 1 2 2\r\n"),
            Err(ProtoError::Unsupported("HMSG"))
        );
        assert!(matches!(
            srv(b"MSG a 1 99999999999999999999999\r\n"),
            Err(ProtoError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn what_the_port_encodes_a_client_parses() {
        let mut out = Vec::new();
        encode_info(&ServerInfo::default(), &mut out);
        encode_msg("a.b", "1", None, b"x", &mut out);
        encode_msg("a.b", "1", Some("r"), b"", &mut out);
        encode_ping(&mut out);
        encode_pong(&mut out);
        encode_ok(&mut out);
        encode_err("Slow Consumer", &mut out);
        let mut rest = &out[..];
        let mut ops = Vec::new();
        while !rest.is_empty() {
            let (op, n) = parse_server(rest, &Limits::default())
                .expect("valid")
                .expect("complete");
            ops.push(op);
            rest = &rest[n..];
        }
        assert!(matches!(&ops[0], ServerOp::Info(j) if j.starts_with('{')));
        assert_eq!(
            ops[1..],
            [
                ServerOp::Msg {
                    subject: "a.b".into(),
                    sid: "1".into(),
                    reply: None,
                    payload: Bytes::from_static(b"x"),
                },
                ServerOp::Msg {
                    subject: "a.b".into(),
                    sid: "1".into(),
                    reply: Some("r".into()),
                    payload: Bytes::new(),
                },
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Err("Slow Consumer".into()),
            ]
        );
        let mut out = Vec::new();
        encode_sub("a.>", Some("q"), "3", &mut out);
        encode_sub("a.*", None, "4", &mut out);
        assert_eq!(out, b"SUB a.> q 3\r\nSUB a.* 4\r\n");
        let (op, n) = one(&out).expect("valid").expect("complete");
        assert_eq!(n, 13);
        assert_eq!(
            op,
            ClientOp::Sub {
                subject: "a.>".into(),
                queue: Some("q".into()),
                sid: "3".into(),
            }
        );
    }

    #[test]
    fn reasons_are_distinct_snake_case_labels() {
        let all = [
            ProtoError::ControlLineTooLong { max: 1 },
            ProtoError::UnknownOp("X".into()),
            ProtoError::Unsupported("HPUB"),
            ProtoError::BadArgs { op: "PUB" },
            ProtoError::InvalidSubject {
                op: "SUB",
                consumed: 1,
                source: SubjectError::Empty,
            },
            ProtoError::PayloadTooLarge { size: 2, max: 1 },
            ProtoError::BadPayloadTerminator,
            ProtoError::BadConnect("x".into()),
        ];
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            let r = e.reason();
            assert!(
                r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{r}"
            );
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(!e.nats_text().contains(['\'', '\n']));
            assert!(!e.to_string().contains('\n'));
            assert_eq!(e.closes(), e.consumed().is_none());
        }
    }

    /// Random bytes, or pieces of the protocol glued at random so that most inputs
    /// get past the verb.
    fn protocol_ish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "PUB ",
                "SUB ",
                "UNSUB ",
                "PING",
                "PONG",
                "CONNECT ",
                "HPUB ",
                "pub ",
                "a",
                ".",
                "*",
                ">",
                " ",
                "\t",
                "\r\n",
                "\n",
                "\r",
                "0",
                "3",
                "12",
                "{}",
                "{\"echo\":",
                "null",
                "}",
                "q",
                "99999999999999999999",
            ])
            .prop_map(|p| p.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(piece, 0..40).prop_map(|v| v.concat()),
        ]
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(data in protocol_ish(), small in any::<bool>()) {
            let limits = if small {
                Limits { max_control_line: 16, max_payload: 8 }
            } else {
                Limits::default()
            };
            let mut rest = &data[..];
            while let Ok(Some((op, n))) = parse(rest, &limits) {
                prop_assert!(n > 0 && n <= rest.len());
                if let ClientOp::Pub { payload, .. } = op {
                    prop_assert!(payload.len() <= limits.max_payload);
                }
                rest = &rest[n..];
            }
        }

        #[test]
        fn encoded_pub_round_trips(
            subject in "[a-z0-9_]{1,8}(\\.[a-z0-9_*>]{1,8}){0,4}",
            reply in proptest::option::of("_INBOX\\.[A-Za-z0-9]{1,12}"),
            payload in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            prop_assume!(validate_subject(&subject).is_ok());
            let mut out = Vec::new();
            encode_pub(&subject, reply.as_deref(), &payload, &mut out);
            let (op, n) = one(&out).expect("valid").expect("complete");
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(op, ClientOp::Pub {
                subject,
                reply,
                payload: Bytes::from(payload),
            });
        }
    }
}
