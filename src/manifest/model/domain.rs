//! Domain: reverse-proxy routes from host names to an app, and their TLS.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::manifest::units::Size;

/// Reverse-proxy routes from host names to an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSpec {
    /// Host names served; the first is the main one, the others (`www.`) are aliases.
    /// International names are converted to punycode.
    #[schemars(length(min = 1, max = 100))]
    pub hosts: Vec<String>,
    /// The App that serves the requests.
    pub app: String,
    /// The app's port to send traffic to. Default: the app's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// The path prefix routed to the app. Default: `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// TLS: `off`, `{acme: true}` (Traefik's certificate resolver; not supported yet with
    /// nginx, and refused), `{certificate, key}` (files on the host) or
    /// `{certificateSecret, keySecret}`. Default: `off`.
    #[serde(default)]
    pub tls: Tls,
    /// Redirect plain HTTP to HTTPS. Default: true when TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<bool>,
    /// Serve the app only under a generated `/p/<token>/` path (so no `path` beside it).
    /// Default: false.
    #[serde(default)]
    pub private: bool,
    /// Extra response headers. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The largest request body accepted, such as `20Mi`; not `0` (which nginx reads as
    /// no limit). Default: the proxy's (1Mi for nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<Size>,
}

fn default_path() -> String {
    "/".to_owned()
}

/// TLS of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Tls {
    /// Plain HTTP only.
    #[default]
    #[schemars(with = "TlsOff")]
    Off,
    /// A certificate obtained with ACME by Traefik's resolver (with nginx: not
    /// supported yet, refused by validation).
    Acme {
        /// Must be true.
        acme: bool,
    },
    /// Certificate and key files on the host.
    #[serde(rename_all = "camelCase")]
    Files {
        /// Path of the PEM certificate chain.
        certificate: String,
        /// Path of the PEM private key.
        key: String,
    },
    /// Certificate and key from the secret store.
    #[serde(rename_all = "camelCase")]
    Secrets {
        /// The secret holding the PEM certificate chain.
        certificate_secret: String,
        /// The secret holding the PEM private key.
        key_secret: String,
    },
}

/// The schema of `tls: off`.
#[derive(JsonSchema)]
#[allow(dead_code)]
enum TlsOff {
    #[serde(rename = "off")]
    Off,
}

impl Tls {
    /// Whether HTTPS is served.
    pub fn is_on(&self) -> bool {
        !matches!(self, Tls::Off | Tls::Acme { acme: false })
    }
}

impl<'de> Deserialize<'de> for Tls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Acme {
            acme: bool,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Files {
            certificate: String,
            key: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Secrets {
            certificate_secret: String,
            key_secret: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Flag(bool),
            Acme(Acme),
            Files(Files),
            Secrets(Secrets),
        }
        let expected = "expected `off`, {acme: true}, {certificate, key} or \
                        {certificateSecret, keySecret}";
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
            Raw::Word(w) if w == "off" => Ok(Tls::Off),
            Raw::Flag(false) => Ok(Tls::Off),
            Raw::Word(_) | Raw::Flag(true) => Err(serde::de::Error::custom(expected)),
            Raw::Acme(a) => Ok(Tls::Acme { acme: a.acme }),
            Raw::Files(f) => Ok(Tls::Files {
                certificate: f.certificate,
                key: f.key,
            }),
            Raw::Secrets(s) => Ok(Tls::Secrets {
                certificate_secret: s.certificate_secret,
                key_secret: s.key_secret,
            }),
        }
    }
}
