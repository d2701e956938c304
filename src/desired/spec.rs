//! The container spec: what one container of an app should be, built from the model
//! once, with typed mounts and ports.
//!
//! A [`ContainerSpec`] never holds a secret's value: secrets appear as
//! `<secret:name sha256:…>`. It is hashed for the `berth.spec-hash` label, stored in the
//! `berth.spec` label, and diffed for plans. Mounts and ports keep the compact text form
//! they always had in that label, so the hash of an unchanged app stays the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use std::collections::BTreeMap;

use crate::manifest::model::PublishMode;

/// Everything a container of an app should be; secrets appear redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// The image.
    pub image: String,
    /// The command, when the image's is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables from secrets, as `<secret:name sha256:…>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// The port the app listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Published ports (written `hostIp:host:container/protocol` in the label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortBinding>,
    /// Mounts (written `source:target[:ro]` in the label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    /// The network joined.
    pub network: String,
    /// The health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Restart policy.
    pub restart: String,
    /// Extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Docker's `--init`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Networks joined besides `network` (the managed databases' network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// How the image is built, for an app with `build` (its tag is `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::expand::builds::BuildOptions>,
    /// What a Swarm service adds (`runtime: swarm` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<super::service::ServiceSpec>,
}

/// A health check in its normalized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `http /path`, `tcp 80` or `cmd a b c`.
    pub probe: Probe,
    /// Milliseconds between checks.
    pub interval_ms: u64,
    /// Milliseconds a check may take.
    pub timeout_ms: u64,
    /// Failures before unhealthy.
    pub retries: u32,
    /// Milliseconds of grace after start.
    pub start_period_ms: u64,
}

/// How health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    /// An HTTP GET on the app's port, from the host.
    Http {
        /// The path.
        path: String,
        /// The port.
        port: u16,
    },
    /// A TCP connection, from the host.
    Tcp {
        /// The port.
        port: u16,
    },
    /// A command in the container (Docker's HEALTHCHECK).
    Cmd {
        /// The command.
        cmd: Vec<String>,
    },
}

impl ContainerSpec {
    /// The canonical JSON: the `berth.spec` label and the input of the hash.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec serializes")
    }

    /// The SHA-256 of the canonical JSON, hex.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    /// A YAML rendering for people and diffs.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a spec serializes")
    }
}

/// Where a mount's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A named Docker volume.
    Volume(String),
    /// A folder or file of the host (an absolute path).
    HostPath(String),
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volume or host path.
    pub source: MountSource,
    /// Where it appears in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            MountSource::Volume(v) => v,
            MountSource::HostPath(p) => p,
        };
        write!(f, "{source}:{}", self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// A label that does not hold a mount or port berth wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a {1} berth writes")]
pub struct SpecTextError(String, &'static str);

impl FromStr for Mount {
    type Err = SpecTextError;

    fn from_str(text: &str) -> Result<Mount, SpecTextError> {
        let (rest, read_only) = match text.strip_suffix(":ro") {
            Some(r) => (r, true),
            None => (text, false),
        };
        let (source, target) = rest
            .split_once(':')
            .ok_or_else(|| SpecTextError(text.to_owned(), "mount"))?;
        let source = if source.starts_with('/') {
            MountSource::HostPath(source.to_owned())
        } else {
            MountSource::Volume(source.to_owned())
        };
        Ok(Mount {
            source,
            target: target.to_owned(),
            read_only,
        })
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// `tcp` or `udp`, as Docker names them.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// One published port: `host_ip:host` on the host to `container` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// The host address it is bound to.
    pub host_ip: String,
    /// The host port.
    pub host: u16,
    /// The container port.
    pub container: u16,
    /// TCP or UDP.
    pub protocol: PortProtocol,
    /// How Swarm publishes it (`runtime: swarm` only; written `/ingress` or `/host`
    /// after the protocol).
    pub mode: Option<PublishMode>,
}

impl PortBinding {
    /// Whether it binds the port on the node that runs the task, so that two tasks
    /// cannot run side by side there: every port of a container, a Swarm port in
    /// `host` mode.
    pub fn binds_node(&self) -> bool {
        self.mode != Some(PublishMode::Ingress)
    }
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_ip,
            self.host,
            self.container,
            self.protocol.as_str()
        )?;
        match self.mode {
            Some(PublishMode::Ingress) => f.write_str("/ingress"),
            Some(PublishMode::Host) => f.write_str("/host"),
            None => Ok(()),
        }
    }
}

impl FromStr for PortBinding {
    type Err = SpecTextError;

    fn from_str(text: &str) -> Result<PortBinding, SpecTextError> {
        let bad = || SpecTextError(text.to_owned(), "port");
        // hostIp:host:container/protocol[/mode]; the address may itself hold colons (IPv6).
        let (text_, mode) = match text.rsplit_once('/') {
            Some((rest, "ingress")) => (rest, Some(PublishMode::Ingress)),
            Some((rest, "host")) => (rest, Some(PublishMode::Host)),
            _ => (text, None),
        };
        let (rest, protocol) = text_.rsplit_once('/').ok_or_else(bad)?;
        let (rest, container) = rest.rsplit_once(':').ok_or_else(bad)?;
        let (host_ip, host) = rest.rsplit_once(':').ok_or_else(bad)?;
        let protocol = match protocol {
            "tcp" => PortProtocol::Tcp,
            "udp" => PortProtocol::Udp,
            _ => return Err(bad()),
        };
        Ok(PortBinding {
            host_ip: host_ip.to_owned(),
            host: host.parse().map_err(|_| bad())?,
            container: container.parse().map_err(|_| bad())?,
            protocol,
            mode,
        })
    }
}

/// Serializes mounts and ports in their text form, the one the `berth.spec` label has
/// always held.
macro_rules! as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}
as_text!(Mount);
as_text!(PortBinding);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_and_ports_read_back_their_label_text() {
        for text in ["blog-content:/var/lib/ghost", "/srv/conf:/etc/app:ro"] {
            let m: Mount = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        let m: Mount = "/srv/conf:/etc/app:ro".parse().unwrap();
        assert_eq!(m.source, MountSource::HostPath("/srv/conf".into()));
        assert!(m.read_only);
        for text in [
            "0.0.0.0:8080:80/tcp",
            "::1:53:53/udp",
            "127.0.0.1:8001:2368/tcp",
            "0.0.0.0:8080:80/tcp/ingress",
            "0.0.0.0:53:53/udp/host",
        ] {
            let p: PortBinding = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        let p: PortBinding = "::1:53:5353/udp".parse().unwrap();
        assert_eq!((p.host_ip.as_str(), p.host, p.container), ("::1", 53, 5353));
        assert_eq!(p.mode, None);
        let p: PortBinding = "0.0.0.0:8080:80/tcp/ingress".parse().unwrap();
        assert_eq!((p.host, p.mode), (8080, Some(PublishMode::Ingress)));
        assert!("0.0.0.0:8080:80/tcp/mesh".parse::<PortBinding>().is_err());
        assert!("8080".parse::<PortBinding>().is_err());
        assert!("a:b:c/sctp".parse::<PortBinding>().is_err());
    }

    #[test]
    fn a_spec_hashes_as_before() {
        // The hash of a spec with a mount and a port is the one earlier versions wrote,
        // so upgrading berth does not replace running containers.
        let spec: ContainerSpec = serde_json::from_str(
            r#"{"image":"busybox","ports":["127.0.0.1:8001:80/tcp"],"volumes":["web-data:/data"],"network":"berth","restart":"unless-stopped"}"#,
        )
        .unwrap();
        assert_eq!(
            spec.to_json(),
            r#"{"image":"busybox","ports":["127.0.0.1:8001:80/tcp"],"volumes":["web-data:/data"],"network":"berth","restart":"unless-stopped"}"#
        );
    }
}
