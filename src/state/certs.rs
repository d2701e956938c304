//! The certificates berth's ACME client keeps, one folder per Domain:
//! `<state-dir>/certs/<domain>/certificate.pem` holds the chain and then its key (mode
//! 0600, written to a temporary file and renamed, so nginx never reads a chain beside
//! another certificate's key), and `state.json` the instance that owns the folder,
//! when the certificate is due for renewal and the failures since the last success.
//! Several instances sharing a state directory never touch each other's folders.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::atomic;

/// The chain and key, in one file nginx names twice.
pub const CERTIFICATE_FILE: &str = "certificate.pem";

/// What berth remembers of a certificate.
pub const STATE_FILE: &str = "state.json";

/// What berth remembers of one Domain's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CertificateRecord {
    /// The instance whose Domain it is.
    pub instance: String,
    /// When the certificate in place is renewed (Unix seconds), chosen when it was
    /// issued: two thirds of its lifetime, with jitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<u64>,
    /// Attempts that failed since the last success.
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the last attempt ended (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<u64>,
    /// No attempt before this (Unix seconds): the backoff after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The first wait after a failed order; it doubles with each failure after.
const FIRST_RETRY: u64 = 5 * 60;

/// The longest wait between two orders that fail: a broken DNS record costs the CA a
/// few attempts an hour at most.
const LONGEST_RETRY: u64 = 60 * 60;

impl CertificateRecord {
    /// The record of a certificate just issued for `instance`: renewed at two thirds of
    /// its lifetime, give or take a fiftieth of it (fixed by its serial, so that
    /// certificates issued together are not all renewed at the same moment).
    pub fn issued(instance: &str, info: &CertificateInfo, now: u64) -> CertificateRecord {
        let lifetime = info.not_after.saturating_sub(info.not_before);
        let spread = (lifetime / 25).max(1);
        let jitter = jitter_seed(&info.serial) % spread;
        let renew_at = (info.two_thirds() + jitter).saturating_sub(spread / 2);
        CertificateRecord {
            instance: instance.to_owned(),
            renew_at: Some(renew_at),
            failures: 0,
            last_attempt: Some(now),
            next_attempt: None,
            last_error: None,
        }
    }

    /// The record after an order failed at `now` with `error`: the next attempt waits
    /// 5 minutes, then twice as long after each further failure, at most an hour, with
    /// a tenth of jitter (fixed by `seed`).
    pub fn failed(&self, instance: &str, now: u64, error: &str, seed: &str) -> CertificateRecord {
        let failures = self.failures.saturating_add(1);
        let wait = FIRST_RETRY
            .saturating_mul(1 << (failures - 1).min(16))
            .min(LONGEST_RETRY);
        let jitter = jitter_seed(&format!("{seed}/{failures}")) % (wait / 10 + 1);
        CertificateRecord {
            instance: instance.to_owned(),
            renew_at: self.renew_at,
            failures,
            last_attempt: Some(now),
            next_attempt: Some(now + wait - wait / 20 + jitter),
            last_error: Some(error.to_owned()),
        }
    }
}

/// A number fixed by `text`, for jitter that stays the same from pass to pass.
pub fn jitter_seed(text: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// A certificate as its PEM says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The DNS names it covers, sorted.
    pub hosts: Vec<String>,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
    /// Its issuer, as people read it (the common name, or the whole name).
    pub issuer: String,
    /// Its serial number, hex.
    pub serial: String,
    /// The leaf's DER (renewal information names a certificate by it).
    pub leaf_der: Vec<u8>,
}

impl CertificateInfo {
    /// Two thirds of the way from `not_before` to `not_after`.
    pub fn two_thirds(&self) -> u64 {
        self.not_before + self.not_after.saturating_sub(self.not_before) * 2 / 3
    }
}

/// The window a CA suggests for renewing a certificate (ACME Renewal Information,
/// RFC 9773).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this (Unix seconds).
    pub start: u64,
    /// Renew before this (Unix seconds).
    pub end: u64,
}

/// One Domain's folder, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    /// Its `state.json`; `None` when missing or unreadable.
    pub record: Option<CertificateRecord>,
    /// The certificate, or why there is none usable.
    pub certificate: Result<CertificateInfo, String>,
}

/// `<state-dir>/certs`.
#[derive(Debug, Clone)]
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// The certificates of the state directory `root`.
    pub fn new(root: &Path) -> Certificates {
        Certificates {
            dir: root.join("certs"),
        }
    }

    /// The folder of `domain`'s certificate.
    pub fn dir_of(&self, domain: &str) -> PathBuf {
        self.dir.join(domain)
    }

    /// The file nginx reads for `domain`: the chain, then the key.
    pub fn file_of(&self, domain: &str) -> PathBuf {
        self.dir_of(domain).join(CERTIFICATE_FILE)
    }

    /// Every folder, read: an unreadable folder or file is reported in its entry, never
    /// skipped (its owner may be this instance).
    pub fn read_all(&self) -> BTreeMap<String, StoredCertificate> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let domain = entry.file_name().to_string_lossy().into_owned();
            if crate::manifest::syntax::check_name(&domain).is_err() {
                continue;
            }
            out.insert(domain.clone(), self.read(&domain));
        }
        out
    }

    /// `domain`'s folder, read.
    pub fn read(&self, domain: &str) -> StoredCertificate {
        let dir = self.dir_of(domain);
        let record = read_regular(&dir.join(STATE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let certificate = match read_regular(&dir.join(CERTIFICATE_FILE)) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| "certificate.pem is not text".to_owned())
                .and_then(|text| parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err("not issued yet".to_owned()),
            Err(e) => Err(format!(
                "failed to read {}: {e}",
                dir.join(CERTIFICATE_FILE).display()
            )),
        };
        StoredCertificate {
            record,
            certificate,
        }
    }

    /// Stores a new certificate (chain and key in one file, atomically), then its
    /// record.
    pub fn store(
        &self,
        domain: &str,
        chain_pem: &str,
        key_pem: &str,
        record: &CertificateRecord,
    ) -> io::Result<()> {
        let dir = self.dir_of(domain);
        atomic::create_private_dir(&self.dir)?;
        atomic::create_private_dir(&dir)?;
        let mut content = chain_pem.trim_end().to_owned();
        content.push('\n');
        content.push_str(key_pem.trim_end());
        content.push('\n');
        atomic::write_atomic_mode(&dir.join(CERTIFICATE_FILE), content.as_bytes(), Some(0o600))?;
        self.save_record(domain, record)
    }

    /// Replaces `domain`'s record (after a failed attempt, say).
    pub fn save_record(&self, domain: &str, record: &CertificateRecord) -> io::Result<()> {
        let dir = self.dir_of(domain);
        atomic::create_private_dir(&self.dir)?;
        atomic::create_private_dir(&dir)?;
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        atomic::write_atomic_mode(&dir.join(STATE_FILE), &json, Some(0o600))
    }

    /// Removes `domain`'s folder; one already gone is fine.
    pub fn remove(&self, domain: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir_of(domain)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A regular file's bytes: a FIFO or device put in the folder is refused, never opened.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if meta.len() > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 1 MiB",
        ));
    }
    std::fs::read(path)
}

/// Reads the first certificate of a PEM chain.
pub fn parse(pem_text: &str) -> Result<CertificateInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut hosts: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    hosts.dedup();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.issuer().to_string());
    let secs = |t: x509_parser::time::ASN1Time| t.timestamp().max(0) as u64;
    Ok(CertificateInfo {
        hosts,
        not_before: secs(cert.validity().not_before),
        not_after: secs(cert.validity().not_after),
        issuer,
        serial: cert.raw_serial_as_string().replace(':', ""),
        leaf_der: pem.contents.clone(),
    })
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    unix(SystemTime::now())
}

/// `t` in Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Unix seconds as RFC 3339, as status shows times.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for two names, made with openssl for this test.
    pub(crate) fn self_signed(dir: &Path, hosts: &[&str], days: u32) -> (String, String) {
        let san = hosts
            .iter()
            .map(|h| format!("DNS:{h}"))
            .collect::<Vec<_>>()
            .join(",");
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-subj",
                "/CN=Test Issuer",
                "-days",
                &days.to_string(),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-addext", &format!("subjectAltName={san}")])
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            std::fs::read_to_string(cert).unwrap(),
            std::fs::read_to_string(key).unwrap(),
        )
    }

    #[test]
    fn a_stored_certificate_reads_back_with_its_names_dates_and_record() {
        let tmp = tempfile::tempdir().unwrap();
        let (chain, key) = self_signed(tmp.path(), &["www.a.test", "a.test"], 90);
        let certs = Certificates::new(tmp.path());
        let record = CertificateRecord {
            instance: "web".into(),
            renew_at: Some(123),
            ..CertificateRecord::default()
        };
        certs.store("blog", &chain, &key, &record).unwrap();
        let file = certs.file_of("blog");
        let mode = std::fs::metadata(&file).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("BEGIN CERTIFICATE") && text.contains("PRIVATE KEY"));
        let found = certs.read_all();
        let stored = &found["blog"];
        assert_eq!(stored.record.as_ref(), Some(&record));
        let info = stored.certificate.as_ref().unwrap();
        assert_eq!(info.hosts, ["a.test", "www.a.test"]);
        assert_eq!(info.issuer, "Test Issuer");
        let days = (info.not_after - info.not_before) / 86_400;
        assert_eq!(days, 90);
        assert_eq!(info.two_thirds(), info.not_before + 60 * 86_400);
        certs.remove("blog").unwrap();
        certs.remove("blog").unwrap();
        assert!(certs.read_all().is_empty());
    }

    #[test]
    fn failed_orders_back_off_from_five_minutes_to_an_hour() {
        let mut record = CertificateRecord::default();
        let mut waits = Vec::new();
        for _ in 0..6 {
            record = record.failed("web", 1000, "DNS problem", "blog");
            waits.push(record.next_attempt.unwrap() - 1000);
        }
        assert_eq!(record.failures, 6);
        assert_eq!(record.last_error.as_deref(), Some("DNS problem"));
        // 5, 10, 20, 40, 60, 60 minutes, each within a tenth of jitter.
        for (wait, minutes) in waits.iter().zip([5, 10, 20, 40, 60, 60]) {
            let base = minutes * 60;
            assert!(
                (base - base / 20..=base + base / 20 + 1).contains(wait),
                "{wait} for {minutes} minutes"
            );
        }
        // At most a few attempts in the first hour, whatever the jitter.
        let mut t = 0;
        let mut attempts = 1;
        for wait in &waits {
            t += wait;
            if t <= 3600 {
                attempts += 1;
            }
        }
        assert!(attempts <= 4, "{attempts} attempts in the first hour");
    }

    #[test]
    fn a_new_certificate_is_renewed_near_two_thirds_of_its_lifetime() {
        let info = CertificateInfo {
            hosts: vec!["a.test".into()],
            not_before: 0,
            not_after: 90 * 86_400,
            issuer: "CA".into(),
            serial: "01".into(),
            leaf_der: Vec::new(),
        };
        let r = CertificateRecord::issued("web", &info, 5);
        let at = r.renew_at.unwrap();
        let (low, high) = (
            60 * 86_400 - 90 * 86_400 / 50,
            60 * 86_400 + 90 * 86_400 / 50,
        );
        assert!((low..=high).contains(&at), "{at}");
        assert_eq!(r.failures, 0);
        assert_eq!(r.last_attempt, Some(5));
    }

    #[test]
    fn a_missing_or_hostile_certificate_is_reported_never_opened_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = Certificates::new(tmp.path());
        std::fs::create_dir_all(certs.dir_of("blog")).unwrap();
        assert_eq!(
            certs.read("blog").certificate,
            Err("not issued yet".to_owned())
        );
        let fifo = certs.file_of("blog");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = certs.read("blog").certificate.unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, "garbage").unwrap();
        let err = certs.read("blog").certificate.unwrap_err();
        assert!(err.starts_with("not a PEM certificate"), "{err}");
    }
}
