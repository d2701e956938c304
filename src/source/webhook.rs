//! The push webhook: which forge sent it, whether its signature holds (in constant
//! time), and whether the push concerns the ref berth follows. Nothing in a payload is
//! trusted as state: a good push only triggers a fetch.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The forge a delivery came from, known by its signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// GitHub (and anything sending `X-Hub-Signature-256`).
    GitHub,
    /// Gitea or Forgejo (`X-Gitea-Signature` / `X-Forgejo-Signature`).
    Gitea,
    /// Gogs (`X-Gogs-Signature`).
    Gogs,
    /// GitLab (`X-Gitlab-Token`: the shared secret itself).
    GitLab,
}

/// Why a delivery is refused or ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No signature header berth knows.
    #[error(
        "no signature: send X-Hub-Signature-256 (GitHub), X-Gitea-Signature (Gitea), \
         X-Gogs-Signature (Gogs) or X-Gitlab-Token (GitLab)"
    )]
    Unsigned,
    /// The signature does not match the body and the secret.
    #[error("the {0:?} signature does not match: check the webhook secret")]
    BadSignature(Forge),
    /// The body is not a push payload.
    #[error("the body is not a push event: {0}")]
    NotPush(String),
}

/// A push, as far as berth cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Who sent it.
    pub forge: Forge,
    /// `refs/heads/main`, `refs/tags/v1`…
    pub reference: String,
    /// The ref was deleted.
    pub deleted: bool,
}

/// What to do with a verified push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It moved the ref berth follows (or berth does not know it yet): fetch now.
    Fetch,
    /// Nothing to do, and why.
    Ignore(String),
}

/// Compares two byte strings in time that depends only on `expected`'s length.
pub fn constant_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = expected.len() ^ given.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(e ^ given.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks the delivery's signature against `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Forge, Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hmac_matches = |hex_sig: &str| {
        let Ok(given) = hex::decode(hex_sig.trim()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&given).is_ok()
    };
    let signed = [
        ("x-hub-signature-256", Forge::GitHub),
        ("x-gitea-signature", Forge::Gitea),
        ("x-forgejo-signature", Forge::Gitea),
        ("x-gogs-signature", Forge::Gogs),
    ];
    for (name, forge) in signed {
        if let Some(value) = header(name) {
            let hex_sig = match forge {
                Forge::GitHub => value.strip_prefix("sha256=").unwrap_or(""),
                _ => value,
            };
            return if hmac_matches(hex_sig) {
                Ok(forge)
            } else {
                Err(Rejection::BadSignature(forge))
            };
        }
    }
    if let Some(token) = header("x-gitlab-token") {
        return if constant_eq(secret, token.as_bytes()) {
            Ok(Forge::GitLab)
        } else {
            Err(Rejection::BadSignature(Forge::GitLab))
        };
    }
    Err(Rejection::Unsigned)
}

/// The event name the forge put in its headers (`push`, `Push Hook`, `ping`…).
pub fn event_name(headers: &HeaderMap) -> Option<String> {
    [
        "x-github-event",
        "x-gitea-event",
        "x-forgejo-event",
        "x-gogs-event",
        "x-gitlab-event",
    ]
    .iter()
    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
    .map(str::to_owned)
}

/// Reads the ref and deletion flag of a verified push body.
pub fn parse_push(forge: Forge, body: &[u8]) -> Result<Push, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Rejection::NotPush(format!("not JSON: {e}")))?;
    let reference = value
        .get("ref")
        .and_then(|r| r.as_str())
        .ok_or_else(|| Rejection::NotPush("no `ref` field".to_owned()))?;
    let zero = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b == b'0'))
    };
    let deleted = value.get("deleted").and_then(|d| d.as_bool()) == Some(true) || zero("after");
    Ok(Push {
        forge,
        reference: reference.to_owned(),
        deleted,
    })
}

/// Whether a push concerns `tracked` (`refs/heads/main`; `None` until the first fetch
/// has told which branch the remote's HEAD is).
pub fn decide(push: &Push, tracked: Option<&str>) -> Decision {
    if push.deleted {
        return Decision::Ignore(format!("{} was deleted", push.reference));
    }
    match tracked {
        Some(t) if t != push.reference && !tag_of(t, &push.reference) => {
            Decision::Ignore(format!("push to {}; berth follows {t}", push.reference))
        }
        _ => Decision::Fetch,
    }
}

/// `refs/heads/v1` is what berth assumes for `#v1` before the first fetch; a push of
/// `refs/tags/v1` concerns it too.
fn tag_of(tracked: &str, pushed: &str) -> bool {
    match (
        tracked.strip_prefix("refs/heads/"),
        pushed.strip_prefix("refs/tags/"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The signature GitHub would send for `body` (for tests and tools): the same
/// HMAC-SHA256 berth signs its own webhooks with.
pub use crate::state::secrets::signature as github_signature;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn githubs_official_vector() {
        let sig = github_signature(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let h = headers(&[("x-hub-signature-256", &sig)]);
        assert_eq!(
            verify(&h, b"Hello, World!", b"It's a Secret to Everybody"),
            Ok(Forge::GitHub)
        );
        assert_eq!(
            verify(&h, b"Hello, World?", b"It's a Secret to Everybody"),
            Err(Rejection::BadSignature(Forge::GitHub))
        );
    }

    #[test]
    fn each_forge_scheme() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hex_sig = github_signature(b"s3cret", body)
            .trim_start_matches("sha256=")
            .to_owned();
        let gitea = headers(&[("x-gitea-signature", &hex_sig)]);
        assert_eq!(verify(&gitea, body, b"s3cret"), Ok(Forge::Gitea));
        assert_eq!(
            verify(&gitea, body, b"other"),
            Err(Rejection::BadSignature(Forge::Gitea))
        );
        let gitlab = headers(&[("x-gitlab-token", "s3cret")]);
        assert_eq!(verify(&gitlab, body, b"s3cret"), Ok(Forge::GitLab));
        let gitlab = headers(&[("x-gitlab-token", "s3cre")]);
        assert_eq!(
            verify(&gitlab, body, b"s3cret"),
            Err(Rejection::BadSignature(Forge::GitLab))
        );
        assert_eq!(
            verify(&HeaderMap::new(), body, b"s3cret"),
            Err(Rejection::Unsigned)
        );
        // A GitHub header without the `sha256=` prefix is not accepted.
        let bare = headers(&[("x-hub-signature-256", &hex_sig)]);
        assert!(verify(&bare, body, b"s3cret").is_err());
    }

    fn payload(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn forge_payloads_decide_as_a_user_expects() {
        let cases = [
            (
                "goplayground__github-push.json",
                Forge::GitHub,
                Decision::Fetch,
            ),
            (
                "goplayground__gitea-push-event.json",
                Forge::Gitea,
                Decision::Fetch,
            ),
            (
                "goplayground__gitlab-push-event.json",
                Forge::GitLab,
                Decision::Fetch,
            ),
            (
                "github__octokit-push-with-new-branch.payload.json",
                Forge::GitHub,
                Decision::Fetch,
            ),
            (
                "goplayground__gogs-push-event.json",
                Forge::Gogs,
                Decision::Ignore(
                    "push to refs/heads/develop; berth follows refs/heads/master".into(),
                ),
            ),
            (
                "github__octokit-push-payload.json",
                Forge::GitHub,
                Decision::Ignore("refs/tags/simple-tag was deleted".into()),
            ),
            (
                "github__octokit-push-with-organization.payload.json",
                Forge::GitHub,
                Decision::Ignore("refs/tags/simple-tag was deleted".into()),
            ),
        ];
        for (file, forge, want) in cases {
            let push = parse_push(forge, &payload(file)).unwrap();
            assert_eq!(decide(&push, Some("refs/heads/master")), want, "{file}");
        }
        let push = parse_push(Forge::GitHub, &payload("goplayground__github-push.json")).unwrap();
        assert_eq!(
            decide(&push, Some("refs/heads/main")),
            Decision::Ignore("push to refs/heads/master; berth follows refs/heads/main".into())
        );
    }

    #[test]
    fn non_push_bodies() {
        assert!(matches!(
            parse_push(Forge::GitHub, b"{\"zen\":\"x\"}"),
            Err(Rejection::NotPush(_))
        ));
        assert!(matches!(
            parse_push(Forge::GitHub, b"not json"),
            Err(Rejection::NotPush(_))
        ));
    }
}
