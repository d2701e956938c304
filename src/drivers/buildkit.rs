//! Builds with secrets, through the daemon's BuildKit. A secret reaches a build only as
//! a secret mount (`RUN --mount=type=secret,id=NAME`), which BuildKit asks the client
//! for over a session: berth opens the daemon's `/session` endpoint, upgrades it to
//! HTTP/2 and answers there, as a gRPC server, BuildKit's `Secrets.GetSecret` (and its
//! health checks); then it posts the build (`/build?version=2&session=…`) and turns the
//! progress BuildKit streams back (protobuf status messages) into plain lines. A
//! secret's value goes over the daemon's socket to the step that mounts it, never into
//! a build argument, the image's history, a command line or the log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::state::secrets::Secret;

const SECRETS: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// One build: what the Docker driver's build request holds.
pub(super) struct Build<'a> {
    /// The tag.
    pub tag: &'a str,
    /// The Dockerfile's path in the context.
    pub dockerfile: &'a str,
    /// The stage.
    pub target: Option<&'a str>,
    /// Build arguments.
    pub args: &'a BTreeMap<String, String>,
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The context, a tar archive.
    pub context: Vec<u8>,
    /// The secrets, by id.
    pub secrets: &'a BTreeMap<String, Secret>,
}

/// Where the daemon listens: `DOCKER_HOST` (`unix://` or plain `tcp://`), or the local
/// socket.
enum Daemon {
    Unix(PathBuf),
    Tcp(String),
}

fn daemon() -> Result<Daemon, String> {
    match std::env::var("DOCKER_HOST") {
        Err(_) => Ok(Daemon::Unix(PathBuf::from("/var/run/docker.sock"))),
        Ok(host) if host.is_empty() => Ok(Daemon::Unix(PathBuf::from("/var/run/docker.sock"))),
        Ok(host) => {
            if let Some(path) = host.strip_prefix("unix://") {
                Ok(Daemon::Unix(PathBuf::from(path)))
            } else if let Some(address) = host.strip_prefix("tcp://") {
                if std::env::var_os("DOCKER_TLS_VERIFY").is_some() {
                    return Err("a build with secrets needs the daemon's socket or plain \
                                tcp://; DOCKER_HOST over TLS is not supported for it yet"
                        .to_owned());
                }
                Ok(Daemon::Tcp(address.trim_end_matches('/').to_owned()))
            } else {
                Err(format!("DOCKER_HOST `{host}` is not unix:// or tcp://"))
            }
        }
    }
}

/// Sends one HTTP/1.1 request on a connection of its own (kept open for upgrades).
async fn send<B>(
    daemon: &Daemon,
    request: Request<B>,
) -> Result<Response<hyper::body::Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn on<S, B>(
        stream: S,
        request: Request<B>,
    ) -> Result<Response<hyper::body::Incoming>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    }
    match daemon {
        Daemon::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("cannot reach the daemon at {}: {e}", path.display()))?;
            on(stream, request).await
        }
        Daemon::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|e| format!("cannot reach the daemon at {address}: {e}"))?;
            on(stream, request).await
        }
    }
}

/// Builds `request` through BuildKit, serving its secrets over a session.
pub(super) async fn build(
    api_version: &str,
    request: Build<'_>,
    output: &(dyn for<'b> Fn(&'b str) + Send + Sync),
) -> Result<(), String> {
    let daemon = daemon()?;
    let session = session_id();
    let opened = Request::post(format!("/v{api_version}/session"))
        .header(http::header::HOST, "docker")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", &session)
        .header("X-Docker-Expose-Session-Name", "berth")
        .header("X-Docker-Expose-Session-Sharedkey", "")
        .header("X-Docker-Expose-Session-Grpc-Method", SECRETS)
        .header("X-Docker-Expose-Session-Grpc-Method", HEALTH)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = send(&daemon, opened)
        .await
        .map_err(|e| format!("failed to open a build session: {e}"))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!(
            "the daemon refused a build session ({}); BuildKit is needed for secretArgs",
            response.status()
        ));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| format!("failed to open a build session: {e}"))?;
    let secrets = request.secrets.clone();
    let served = tokio::spawn(serve(TokioIo::new(upgraded), secrets));
    // The session ends with this function, whichever way it returns.
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _session = Abort(served);

    let mut query = vec![
        ("version", "2".to_owned()),
        ("session", session.clone()),
        ("t", request.tag.to_owned()),
        ("dockerfile", request.dockerfile.to_owned()),
        ("rm", "1".to_owned()),
        ("forcerm", "1".to_owned()),
        (
            "buildargs",
            serde_json::to_string(request.args).unwrap_or_default(),
        ),
        (
            "labels",
            serde_json::to_string(request.labels).unwrap_or_default(),
        ),
    ];
    if let Some(target) = request.target {
        query.push(("target", target.to_owned()));
    }
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let post = Request::post(format!("/v{api_version}/build?{}", query.join("&")))
        .header(http::header::HOST, "docker")
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(Full::new(Bytes::from(request.context)))
        .map_err(|e| e.to_string())?;
    let response = send(&daemon, post).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut progress = Progress::default();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        let mut stream =
            serde_json::Deserializer::from_slice(&pending).into_iter::<serde_json::Value>();
        let mut used = 0;
        while let Some(Ok(message)) = stream.next() {
            used = stream.byte_offset();
            if let Some(e) = message["errorDetail"]["message"]
                .as_str()
                .or(message["error"].as_str())
                .or(message["message"].as_str().filter(|_| !status.is_success()))
            {
                error = Some(e.to_owned());
            } else if message["id"] == "moby.buildkit.trace" {
                if let Some(aux) = message["aux"].as_str().and_then(base64_decode) {
                    let text = progress.render(&aux);
                    if !text.is_empty() {
                        output(&text);
                    }
                }
            } else if let Some(text) = message["stream"].as_str() {
                output(text);
            }
        }
        pending.drain(..used);
    }
    match error {
        None if status.is_success() => Ok(()),
        None => Err(format!("the daemon answered {status}")),
        Some(e) => {
            if let Some(step) = progress.failed_step() {
                // The failing step's header comes last: the log's last step is that one.
                output(&format!("{step}\n"));
            }
            Err(e)
        }
    }
}

fn session_id() -> String {
    use rand_like::next;
    (0..25)
        .map(|_| {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
            alphabet[(next() % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

/// Session ids need only be unique: the time, the process and a counter, mixed.
mod rand_like {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);

    pub fn next() -> u64 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ seed;
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

/// The session's gRPC server: secrets by id, and health.
async fn serve<S>(io: S, secrets: BTreeMap<String, Secret>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        let secrets = secrets.clone();
        tokio::spawn(async move {
            let _ = answer(request, respond, &secrets).await;
        });
    }
}

async fn answer(
    request: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<(), h2::Error> {
    let path = request.uri().path().to_owned();
    let mut body = request.into_body();
    let mut buffer = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
        if buffer.len() > 1 << 20 {
            return reply(respond, Err((8, "request too large".into())));
        }
    }
    let message = buffer.get(5..).unwrap_or_default();
    match path.as_str() {
        // SERVING
        HEALTH => reply(respond, Ok(vec![0x08, 0x01])),
        SECRETS => {
            let id = proto::fields(message)
                .find(|(n, _)| *n == 1)
                .and_then(|(_, v)| match v {
                    proto::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    proto::Value::Varint(_) => None,
                })
                .unwrap_or_default();
            match secrets.get(&id) {
                Some(secret) => reply(
                    respond,
                    Ok(proto::bytes_field(1, secret.expose().as_bytes())),
                ),
                // NOT_FOUND
                None => reply(respond, Err((5, format!("secret {id} not found")))),
            }
        }
        // UNIMPLEMENTED
        _ => reply(respond, Err((12, format!("{path} is not served")))),
    }
}

fn reply(
    mut respond: h2::server::SendResponse<Bytes>,
    result: Result<Vec<u8>, (u32, String)>,
) -> Result<(), h2::Error> {
    let mut response = Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    match result {
        Ok(message) => {
            let mut stream = respond.send_response(response, false)?;
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            stream.send_data(Bytes::from(frame), false)?;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            stream.send_trailers(trailers)
        }
        Err((code, text)) => {
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from(code));
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&text)) {
                headers.insert("grpc-message", v);
            }
            respond.send_response(response, true).map(|_| ())
        }
    }
}

/// The little protobuf berth reads and writes.
mod proto {
    /// A field's value: a varint or length-delimited bytes (others are skipped).
    pub enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*at)?;
            *at += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    /// The fields of a message, in order; a malformed rest ends it.
    pub fn fields(buf: &[u8]) -> impl Iterator<Item = (u64, Value<'_>)> {
        let mut at = 0;
        std::iter::from_fn(move || {
            loop {
                let key = varint(buf, &mut at)?;
                let value = match key & 7 {
                    0 => Value::Varint(varint(buf, &mut at)?),
                    2 => {
                        let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                        let end = at.checked_add(len).filter(|e| *e <= buf.len())?;
                        let v = Value::Bytes(&buf[at..end]);
                        at = end;
                        v
                    }
                    1 => {
                        at += 8;
                        continue;
                    }
                    5 => {
                        at += 4;
                        continue;
                    }
                    _ => return None,
                };
                return Some((key >> 3, value));
            }
        })
    }

    /// Field `n` as length-delimited bytes.
    pub fn bytes_field(n: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |mut v: u64| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        };
        put(n << 3 | 2);
        put(data.len() as u64);
        out.extend_from_slice(data);
        out
    }

    /// A string field of a message.
    pub fn string(buf: &[u8], n: u64) -> Option<String> {
        fields(buf).find_map(|(k, v)| match v {
            Value::Bytes(b) if k == n => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
    }
}

/// BuildKit's progress as plain lines: `#N name` when a step starts, its output as
/// `#N …`, then `#N DONE`, `#N CACHED` or `#N ERROR: …`.
#[derive(Default)]
struct Progress {
    numbers: BTreeMap<String, usize>,
    names: BTreeMap<String, String>,
    started: std::collections::BTreeSet<String>,
    completed: std::collections::BTreeSet<String>,
    failed: Option<String>,
}

impl Progress {
    fn number(&mut self, digest: &str) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(digest.to_owned()).or_insert(next)
    }

    /// Renders one `StatusResponse` (vertexes = 1, logs = 3).
    fn render(&mut self, status: &[u8]) -> String {
        let mut out = String::new();
        for (field, value) in proto::fields(status) {
            let proto::Value::Bytes(message) = value else {
                continue;
            };
            match field {
                1 => {
                    let digest = proto::string(message, 1).unwrap_or_default();
                    let name = proto::string(message, 3).unwrap_or_default();
                    let n = self.number(&digest);
                    let mut cached = false;
                    let (mut started, mut completed) = (false, false);
                    for (k, v) in proto::fields(message) {
                        match (k, v) {
                            (4, proto::Value::Varint(1)) => cached = true,
                            (5, _) => started = true,
                            (6, _) => completed = true,
                            _ => {}
                        }
                    }
                    let error = proto::string(message, 7).filter(|e| !e.is_empty());
                    self.names.insert(digest.clone(), name.clone());
                    if (started || cached) && self.started.insert(digest.clone()) {
                        out.push_str(&format!("#{n} {name}\n"));
                    }
                    if cached && self.completed.insert(digest.clone()) {
                        out.push_str(&format!("#{n} CACHED\n"));
                    } else if completed && self.completed.insert(digest.clone()) {
                        match error {
                            Some(e) => {
                                out.push_str(&format!("#{n} ERROR: {e}\n"));
                                if self.failed.is_none() && !name.starts_with("[internal]") {
                                    self.failed = Some(format!("#{n} {name}"));
                                }
                            }
                            None => out.push_str(&format!("#{n} DONE\n")),
                        }
                    }
                }
                3 => {
                    let digest = proto::string(message, 1).unwrap_or_default();
                    let n = self.number(&digest);
                    let text = proto::fields(message)
                        .find_map(|(k, v)| match v {
                            proto::Value::Bytes(b) if k == 4 => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            _ => None,
                        })
                        .unwrap_or_default();
                    for line in text.lines() {
                        out.push_str(&format!("#{n} {line}\n"));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The header line of the step that failed.
    fn failed_step(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_render_as_plain_lines_and_base64_decodes() {
        // A vertex that started and failed, and a log line of it.
        let mut vertex = proto::bytes_field(1, b"sha256:aa");
        vertex.extend(proto::bytes_field(3, b"[2/2] RUN false"));
        vertex.extend(proto::bytes_field(5, b""));
        vertex.extend(proto::bytes_field(6, b""));
        vertex.extend(proto::bytes_field(7, b"exit code: 1"));
        let mut log = proto::bytes_field(1, b"sha256:aa");
        log.extend(proto::bytes_field(4, b"about to fail\n"));
        let mut status = proto::bytes_field(1, &vertex);
        status.extend(proto::bytes_field(3, &log));
        let mut p = Progress::default();
        assert_eq!(
            p.render(&status),
            "#1 [2/2] RUN false\n#1 ERROR: exit code: 1\n#1 about to fail\n"
        );
        assert_eq!(p.failed_step(), Some("#1 [2/2] RUN false"));
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert_eq!(
            percent_encode("{\"A\":\"b c\"}"),
            "%7B%22A%22%3A%22b%20c%22%7D"
        );
    }
}
