//! The ACME driver: berth's own client (instant-acme) for Domains served by nginx. An
//! account per instance, whose key is a secret berth generates; orders for a Domain's
//! hosts, answered over HTTP-01 by the challenge location berth renders into the
//! Domain's proxy file (nginx answers `<token>.<thumbprint>` itself, so no file needs
//! writing and no reload is needed per challenge); the certificate chain and its new
//! key; and the renewal window a CA may offer (ACME Renewal Information, RFC 9773).
//! Every request goes through reqwest: the system's CA bundle, plus `caBundle`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::prelude::{BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD};
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, Key, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::state::certs::RenewalWindow;
use crate::state::secrets::Secret;

/// How long one issuance may take in all (account, order, challenges, certificate).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a CA's directory (whether it offers renewal information) is remembered.
const DIRECTORY_TTL: Duration = Duration::from_secs(3600);

/// Why talking to the CA failed, by the step that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcmeError {
    /// The HTTP client could not be built (an unreadable `caBundle`).
    #[error("failed to set up the ACME client: {0}")]
    Client(String),
    /// The account key in the secret store is not a PKCS#8 P-256 key.
    #[error("the ACME account key (secret {secret}) is not usable: {detail}")]
    Key {
        /// The secret.
        secret: String,
        /// Why.
        detail: String,
    },
    /// The CA could not be reached, or refused the account.
    #[error("failed to register with the ACME directory {directory}: {detail}")]
    Account {
        /// The directory.
        directory: String,
        /// Why.
        detail: String,
    },
    /// The order, a challenge or the certificate failed.
    #[error("failed to {step} for {hosts}: {detail}")]
    Order {
        /// What was being done: `order a certificate`, `validate the challenge`…
        step: &'static str,
        /// The hosts ordered.
        hosts: String,
        /// The CA's own words.
        detail: String,
    },
    /// It took longer than [`ISSUE_TIMEOUT`].
    #[error("the ACME order for {0} took longer than 3 minutes")]
    Timeout(String),
}

/// A certificate chain and the key made for it, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("chain_pem", &format!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A new ACME account key: ECDSA P-256, PKCS#8, PEM.
pub fn new_account_key() -> std::io::Result<String> {
    let (_, der) = Key::generate_pkcs8().map_err(std::io::Error::other)?;
    Ok(pem("PRIVATE KEY", der.secret_pkcs8_der()))
}

/// The RFC 7638 thumbprint of an account key's public part, base64url: the second
/// half of every HTTP-01 key authorization, so nginx can answer challenges alone.
pub fn thumbprint(key: &Secret) -> Result<String, AcmeError> {
    let der = pem_body(key.expose()).ok_or_else(|| key_error(key, "not a PEM private key"))?;
    let pair =
        rcgen::KeyPair::try_from(der.as_slice()).map_err(|e| key_error(key, &format!("{e}")))?;
    let point = pair.public_key_raw();
    if point.len() != 65 || point[0] != 4 {
        return Err(key_error(key, "not a P-256 key"));
    }
    let (x, y) = (&point[1..33], &point[33..]);
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let jwk = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        BASE64_URL_SAFE_NO_PAD.encode(x),
        BASE64_URL_SAFE_NO_PAD.encode(y)
    );
    Ok(BASE64_URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes())))
}

fn key_error(key: &Secret, detail: &str) -> AcmeError {
    AcmeError::Key {
        secret: key.name().to_owned(),
        detail: detail.to_owned(),
    }
}

/// The client of one CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The directory URL.
    pub directory: String,
    /// The contact address, if any.
    pub email: Option<String>,
    /// Extra CA certificates trusted for the directory's HTTPS.
    pub ca_bundle: Option<PathBuf>,
}

impl Acme {
    /// The client of the CA an account is kept at.
    pub fn of(account: &crate::desired::DesiredAcme) -> Acme {
        Acme {
            directory: account.directory.clone(),
            email: account.email.clone(),
            ca_bundle: account.ca_bundle.as_ref().map(PathBuf::from),
        }
    }

    fn http(&self) -> Result<reqwest::Client, AcmeError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &self.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                AcmeError::Client(format!("failed to read caBundle {}: {e}", path.display()))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AcmeError::Client(format!(
                    "caBundle {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            for c in certificates {
                builder = builder.add_root_certificate(c);
            }
        }
        builder
            .build()
            .map_err(|e| AcmeError::Client(e.to_string()))
    }

    /// Orders a certificate for `hosts` with the account of `key`, answering HTTP-01
    /// challenges through the proxy (which must already serve the challenge location
    /// for these hosts), and returns the chain with the key made for it.
    pub async fn issue(&self, key: &Secret, hosts: &[String]) -> Result<Issued, AcmeError> {
        let shown = hosts.join(", ");
        match tokio::time::timeout(ISSUE_TIMEOUT, self.issue_inner(key, hosts)).await {
            Ok(result) => result,
            Err(_) => Err(AcmeError::Timeout(shown)),
        }
    }

    async fn issue_inner(&self, key: &Secret, hosts: &[String]) -> Result<Issued, AcmeError> {
        let shown = hosts.join(", ");
        let order_error = |step: &'static str| {
            let hosts = shown.clone();
            move |e: instant_acme::Error| AcmeError::Order {
                step,
                hosts: hosts.clone(),
                detail: acme_detail(&e),
            }
        };
        let account = self.account(key).await?;
        let identifiers: Vec<Identifier> =
            hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(order_error("order a certificate"))?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(order_error("read the order's authorizations"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order {
                        step: "validate the challenge",
                        hosts: shown.clone(),
                        detail: format!("the authorization is {other:?}"),
                    });
                }
            }
            let Some(mut challenge) = authz.challenge(ChallengeType::Http01) else {
                return Err(AcmeError::Order {
                    step: "validate the challenge",
                    hosts: shown.clone(),
                    detail: "the CA offers no HTTP-01 challenge".into(),
                });
            };
            challenge
                .set_ready()
                .await
                .map_err(order_error("start the HTTP-01 challenge"))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(order_error("validate the challenge"))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order {
                step: "validate the challenge",
                hosts: shown.clone(),
                detail: self.challenge_problem(&mut order, status).await,
            });
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(order_error("finalize the order"))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(order_error("download the certificate"))?;
        Ok(Issued { chain_pem, key_pem })
    }

    /// What the CA said about a failed challenge, in its own words.
    async fn challenge_problem(
        &self,
        order: &mut instant_acme::Order,
        status: OrderStatus,
    ) -> String {
        let mut out = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            for c in &authz.challenges {
                if let Some(e) = &c.error {
                    out.push(format!(
                        "{}: {}",
                        authz.identifier(),
                        e.detail.as_deref().unwrap_or("invalid")
                    ));
                }
            }
        }
        if out.is_empty() {
            format!("the order is {status:?}")
        } else {
            out.join("; ")
        }
    }

    /// The account of `key` at this CA: found, or registered (terms agreed).
    async fn account(&self, key: &Secret) -> Result<Account, AcmeError> {
        let der = pem_body(key.expose()).ok_or_else(|| key_error(key, "not a PEM private key"))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(der);
        let signing =
            Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|e| key_error(key, &e.to_string()))?;
        let http = Reqwest(self.http()?);
        let account_error = |e: instant_acme::Error| AcmeError::Account {
            directory: self.directory.clone(),
            detail: acme_detail(&e),
        };
        let (account, _) = Account::builder_with_http(Box::new(http))
            .create_from_key(
                (signing, PrivateKeyDer::Pkcs8(pkcs8)),
                self.directory.clone(),
            )
            .await
            .map_err(account_error)?;
        if let Some(email) = &self.email {
            let contact = format!("mailto:{email}");
            account
                .update_contacts(&[contact.as_str()])
                .await
                .map_err(account_error)?;
        }
        Ok(account)
    }

    /// The renewal window the CA suggests for the certificate `leaf_der`, when its
    /// directory offers renewal information; `None` when it does not. The directory is
    /// asked at most once an hour, a window as often as the CA's `Retry-After` allows.
    pub async fn renewal_window(
        &self,
        leaf_der: &[u8],
    ) -> Result<Option<RenewalWindow>, AcmeError> {
        let Some(base) = self.renewal_info_url().await? else {
            return Ok(None);
        };
        let der = rustls_pki_types::CertificateDer::from(leaf_der.to_vec());
        let id = instant_acme::CertificateIdentifier::try_from(&der).map_err(|e| {
            AcmeError::Client(format!("the certificate has no usable identifier: {e}"))
        })?;
        let url = format!("{base}/{id}");
        if let Some(hit) = cached(&WINDOWS, &url) {
            return Ok(hit);
        }
        let fail = |detail: String| AcmeError::Account {
            directory: self.directory.clone(),
            detail: format!("renewal information: {detail}"),
        };
        let rsp = self
            .http()?
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !rsp.status().is_success() {
            return Err(fail(format!("{} answered {}", url, rsp.status())));
        }
        let retry = rsp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(6 * 3600), Duration::from_secs)
            .clamp(Duration::from_secs(60), Duration::from_secs(24 * 3600));
        let body = rsp.bytes().await.map_err(|e| fail(e.to_string()))?;
        let info: instant_acme::RenewalInfo =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        let at = |t: time::OffsetDateTime| t.unix_timestamp().max(0) as u64;
        let window = Some(RenewalWindow {
            start: at(info.suggested_window.start),
            end: at(info.suggested_window.end),
        });
        remember(&WINDOWS, &url, window, retry);
        Ok(window)
    }

    /// The directory's `renewalInfo` URL, if it has one.
    async fn renewal_info_url(&self) -> Result<Option<String>, AcmeError> {
        if let Some(hit) = cached(&DIRECTORIES, &self.directory) {
            return Ok(hit);
        }
        let fail = |detail: String| AcmeError::Account {
            directory: self.directory.clone(),
            detail,
        };
        let rsp = self
            .http()?
            .get(&self.directory)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !rsp.status().is_success() {
            return Err(fail(format!("the directory answered {}", rsp.status())));
        }
        let body = rsp.bytes().await.map_err(|e| fail(e.to_string()))?;
        let directory: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        let url = directory["renewalInfo"]
            .as_str()
            .map(|u| u.trim_end_matches('/').to_owned());
        remember(&DIRECTORIES, &self.directory, url.clone(), DIRECTORY_TTL);
        Ok(url)
    }
}

type Cache<T> = Mutex<Option<HashMap<String, (T, Instant)>>>;

/// Directories and whether they offer renewal information, with when to ask again.
static DIRECTORIES: Cache<Option<String>> = Mutex::new(None);
/// Renewal windows by URL, with when the CA allows asking again.
static WINDOWS: Cache<Option<RenewalWindow>> = Mutex::new(None);

fn cached<T: Clone>(cache: &Cache<T>, key: &str) -> Option<T> {
    let guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()?
        .get(key)
        .filter(|(_, until)| Instant::now() < *until)
        .map(|(v, _)| v.clone())
}

fn remember<T>(cache: &Cache<T>, key: &str, value: T, ttl: Duration) {
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    // Bounded: a host has a few certificates; drop everything expired first.
    map.retain(|_, (_, until)| Instant::now() < *until);
    if map.len() < 10_000 {
        map.insert(key.to_owned(), (value, Instant::now() + ttl));
    }
}

/// The CA's words for an error: a problem document's detail and its subproblems.
fn acme_detail(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let mut out = p.detail.clone().unwrap_or_else(|| {
                p.r#type
                    .clone()
                    .unwrap_or_else(|| "the CA refused the request".into())
            });
            for s in &p.subproblems {
                if let Some(d) = &s.detail {
                    out.push_str("; ");
                    out.push_str(d);
                }
            }
            out
        }
        other => {
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                out.push_str(": ");
                out.push_str(&s.to_string());
                source = s.source();
            }
            out
        }
    }
}

/// PEM text of `der` under `label`, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let body = BASE64_STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER bytes of the first PEM block of `text`.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start..];
    let body_start = rest.find('\n')? + 1;
    let end = rest.find("-----END ")?;
    let body: String = rest[body_start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    BASE64_STANDARD.decode(body).ok()
}

/// instant-acme's HTTP through reqwest.
struct Reqwest(reqwest::Client);

impl HttpClient for Reqwest {
    fn request(
        &self,
        req: http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            use http_body_util::BodyExt;
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut builder = http::Response::builder().status(rsp.status());
            for (name, value) in rsp.headers() {
                builder = builder.header(name, value);
            }
            let bytes = rsp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, ()) = builder.body(())?.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_account_key_has_a_stable_thumbprint_and_never_shows() {
        let key = Secret::new("acme-account-default", &new_account_key().unwrap());
        assert!(key.expose().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let one = thumbprint(&key).unwrap();
        assert_eq!(one, thumbprint(&key).unwrap());
        assert_eq!(one.len(), 43, "{one}");
        assert!(
            one.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let other = Secret::new("acme-account-default", &new_account_key().unwrap());
        assert_ne!(one, thumbprint(&other).unwrap());
        let err = thumbprint(&Secret::new("acme-account-default", "not a key")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ACME account key (secret acme-account-default) is not usable: not a PEM private key"
        );
    }

    /// Pebble 2.4 (Debian's) offers no renewal information: this stands in for a CA that
    /// does (RFC 9773), over real HTTP on loopback, to check the certificate identifier
    /// berth sends, the window it reads and that the CA is asked no more often than its
    /// `Retry-After` allows.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_renewal_window_is_read_from_the_ca_and_asked_again_only_after_retry_after() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let asked = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let log = asked.clone();
        let directory = format!(r#"{{"renewalInfo": "{base}/ari/"}}"#);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = server.accept().await.unwrap();
                let mut buf = vec![0; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(path.clone());
                let body = if path == "/dir" {
                    directory.clone()
                } else {
                    r#"{"suggestedWindow": {"start": "2027-01-01T00:00:00Z", "end": "2027-01-03T00:00:00Z"}}"#
                        .to_owned()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 3600\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        // A leaf issued by a CA, with the authority key identifier ARI names it by.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let acme = Acme {
            directory: format!("{base}/dir"),
            email: None,
            ca_bundle: None,
        };
        let window = acme.renewal_window(cert.der()).await.unwrap();
        assert_eq!(
            window,
            Some(RenewalWindow {
                start: 1_798_761_600,
                end: 1_798_934_400
            })
        );
        let id = instant_acme::CertificateIdentifier::try_from(cert.der()).unwrap();
        assert_eq!(
            asked.lock().unwrap().as_slice(),
            ["/dir".to_owned(), format!("/ari/{id}")]
        );
        // Within the hour the CA allowed, neither the directory nor the window is asked.
        assert_eq!(acme.renewal_window(cert.der()).await.unwrap(), window);
        assert_eq!(asked.lock().unwrap().len(), 2);
    }

    /// RFC 7638 with the EC members: checked against a thumbprint computed apart from
    /// berth (openssl's public point, Python's JSON and SHA-256) for a fixed key.
    #[test]
    fn the_thumbprint_follows_rfc_7638() {
        let key = Secret::new(
            "k",
            "-----BEGIN PRIVATE KEY-----\n\
             MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKND4GGKWUeqqYUWO\n\
             dvf+oUSLkCPITJ+AbQVnJaMpJ2ChRANCAASLk/Qkwy4bGN1XlJpZwQyJTj7ViQ9U\n\
             JcqtXEeC1Ad2skRrd07e8xQsHene0lZaeI4eIedRTxT3V7s8Y5TbP80B\n\
             -----END PRIVATE KEY-----\n",
        );
        assert_eq!(
            thumbprint(&key).unwrap(),
            "JplUcCN2NFzNRnys2B8OawNGA2V8mKT28KSBzIgBV_E"
        );
    }
}
