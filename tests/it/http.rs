//! The tests' one HTTP client: reqwest's blocking client, as a user's tools would ask
//! (the tests run on threads, not in an async runtime).

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{HOST, HeaderMap};

/// What a server answered.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (`""` when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The shared client: redirects are answers to look at, not to follow; no proxy from
/// the environment (every server is on loopback or a Docker network); short timeouts.
fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds")
    })
}

fn send(request: reqwest::blocking::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = request.send()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text()?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url`, with the `Host` header `host` when given (a virtual host of nginx).
pub fn get(url: &str, host: Option<&str>) -> Result<Reply, reqwest::Error> {
    let mut request = client().get(url);
    if let Some(host) = host {
        request = request.header(HOST, host);
    }
    send(request)
}

/// POST `body` as JSON to `url` with `headers`.
pub fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, reqwest::Error> {
    let mut request = client()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request)
}

/// GET `https://{host}:{port}{path}` from a server on loopback, `host` resolved to
/// 127.0.0.1 and sent as SNI, any certificate accepted (a test's self-signed one): what
/// `curl -k --resolve` does.
pub fn get_https_on_loopback(host: &str, port: u16, path: &str) -> Result<Reply, reqwest::Error> {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?;
    send(client.get(format!("https://{host}:{port}{path}")))
}
