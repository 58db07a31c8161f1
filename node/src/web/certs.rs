//! The node's own WebTransport certificates, for browsers that pin them by
//! hash (`serverCertificateHashes`): self-signed ECDSA P-256, valid
//! [`LIFETIME`] in all (Chromium takes at most 14 days and never RSA).
//!
//! A node holds a current certificate and, from the current one's half-life,
//! the next; pages learn both hashes, so a page that learned them before the
//! switch still connects after it. [`plan`] decides, from the clock alone,
//! what to issue or promote; the certificates live in the data directory
//! (`web-certs.json`, mode 0600), so a restart keeps the hashes pages hold.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Total validity of a certificate (from `not_before` to `not_after`).
pub const LIFETIME_SECS: i64 = 10 * DAY;
/// How far before its issue a certificate's validity starts (clock skew).
pub const BACKDATE_SECS: i64 = 3600;
/// The next certificate is issued once the current one has less than this left.
pub const ISSUE_NEXT_BEFORE_SECS: i64 = 5 * DAY;
/// The next certificate becomes the current one once the current one has
/// less than this left (pages then hold both hashes for days).
pub const PROMOTE_BEFORE_SECS: i64 = DAY;
const DAY: i64 = 86_400;

/// When a certificate is valid, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The validity of a certificate issued at `now`.
    pub fn issued_at(now: i64) -> Validity {
        let not_before = now - BACKDATE_SECS;
        Validity { not_before, not_after: not_before + LIFETIME_SECS }
    }

    fn left(&self, now: i64) -> i64 {
        self.not_after - now
    }
}

/// What the certificates need at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// No usable current certificate and no next one: issue a current one.
    IssueCurrent,
    /// Issue the next certificate beside the current one.
    IssueNext,
    /// The next certificate replaces the current one.
    Promote,
}

/// What to do at `now` with these certificates. A current certificate near
/// its end (or gone) is replaced by the next one when there is a next one,
/// else by a new one; the next one is issued at the current one's half-life.
pub fn plan(now: i64, current: Option<Validity>, next: Option<Validity>) -> Plan {
    let usable = |v: &Validity| v.not_before <= now && v.left(now) > 0;
    match (current.filter(usable), next.filter(usable)) {
        (Some(c), None) if c.left(now) <= ISSUE_NEXT_BEFORE_SECS => Plan::IssueNext,
        (Some(c), Some(_)) if c.left(now) <= PROMOTE_BEFORE_SECS => Plan::Promote,
        (Some(_), _) => Plan::Keep,
        (None, Some(_)) => Plan::Promote,
        (None, None) => Plan::IssueCurrent,
    }
}

/// One certificate and its key, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// DER, hex.
    pub cert: String,
    /// PKCS#8 DER, hex.
    pub key: String,
    pub validity: Validity,
}

impl Stored {
    /// A new self-signed ECDSA P-256 certificate for `names`, valid from an
    /// hour before `now` for [`LIFETIME_SECS`].
    pub fn issue(names: &[String], now: i64) -> Result<Stored> {
        let err = |what: &str, e: rcgen::Error| Error::Cert(format!("web certificate: {what}: {e}"));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err("generate key", e))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| err("names", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "courier web");
        params.distinguished_name = dn;
        let validity = Validity::issued_at(now);
        let at = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| Error::Cert(format!("web certificate time: {e}")));
        params.not_before = at(validity.not_before)?;
        params.not_after = at(validity.not_after)?;
        let cert = params.self_signed(&key).map_err(|e| err("sign", e))?;
        Ok(Stored { cert: hex::encode(cert.der()), key: hex::encode(key.serialize_der()), validity })
    }

    pub fn sha256(&self) -> Result<[u8; 32]> {
        Ok(Sha256::digest(self.der()?).into())
    }

    fn der(&self) -> Result<Vec<u8>> {
        hex::decode(&self.cert).map_err(|e| Error::Cert(format!("web certificate: {e}")))
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>> {
        let key = hex::decode(&self.key).map_err(|e| Error::Cert(format!("web certificate key: {e}")))?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key).map_err(|e| Error::Cert(format!("web certificate key: {e}")))?;
        Ok(Arc::new(CertifiedKey::new(vec![self.der()?.into()], signer)))
    }
}

/// The certificates of one node, as kept in `web-certs.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub version: u32,
    pub current: Option<Stored>,
    pub next: Option<Stored>,
}

const FILE_VERSION: u32 = 1;

impl Pair {
    /// Carries out [`plan`] at `now`; whether anything changed.
    pub fn advance(&mut self, names: &[String], now: i64) -> Result<bool> {
        match plan(now, self.current.as_ref().map(|c| c.validity), self.next.as_ref().map(|c| c.validity)) {
            Plan::Keep => return Ok(false),
            Plan::IssueCurrent => self.current = Some(Stored::issue(names, now)?),
            Plan::IssueNext => self.next = Some(Stored::issue(names, now)?),
            Plan::Promote => self.current = self.next.take(),
        }
        Ok(true)
    }
}

/// The live certificates of this node: what the TLS resolver serves to a
/// browser (ALPN `h3`) and the hashes pages pin.
pub struct WebCerts {
    path: PathBuf,
    names: Vec<String>,
    state: RwLock<Live>,
}

struct Live {
    pair: Pair,
    key: Arc<CertifiedKey>,
}

impl WebCerts {
    /// Loads the certificates from `dir` (or issues them) and brings them
    /// up to date at `now`.
    pub fn open(dir: &Path, names: Vec<String>, now: i64) -> Result<WebCerts> {
        let path = dir.join("web-certs.json");
        let mut pair = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Pair>(&bytes) {
                Ok(p) if p.version == FILE_VERSION => p,
                Ok(p) => return Err(Error::Config(format!("{}: unknown version {} (a newer courier?)", path.display(), p.version))),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "unreadable web certificates, issuing new ones: {e}");
                    Pair::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pair::default(),
            Err(e) => return Err(Error::Io(format!("read {}: {e}", path.display()))),
        };
        pair.version = FILE_VERSION;
        // At most two steps bring any state up to date (issue, then issue the next).
        let mut changed = false;
        for _ in 0..3 {
            changed |= pair.advance(&names, now)?;
        }
        if changed {
            save(&path, &pair)?;
        }
        let key = current_key(&pair)?;
        Ok(WebCerts { path, names, state: RwLock::new(Live { pair, key }) })
    }

    /// Rotates if due at `now` (the node calls it every minute); whether
    /// the certificates changed.
    /// Issuing and saving run outside the lock: handshakes read the current
    /// key meanwhile. One caller (the node's rotation task).
    pub fn tick(&self, now: i64) -> Result<bool> {
        let mut pair = self.state.read().expect("web certs lock").pair.clone();
        if !pair.advance(&self.names, now)? {
            return Ok(false);
        }
        save(&self.path, &pair)?;
        let key = current_key(&pair)?;
        let mut live = self.state.write().expect("web certs lock");
        *live = Live { pair, key };
        tracing::info!(hashes = ?self.hashes_locked(&live).iter().map(hex::encode).collect::<Vec<_>>(), "web certificates rotated");
        Ok(true)
    }

    /// The certificate a browser gets now.
    pub fn key(&self) -> Arc<CertifiedKey> {
        self.state.read().expect("web certs lock").key.clone()
    }

    /// SHA-256 of the current and the next certificate (the ones a page pins).
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        let live = self.state.read().expect("web certs lock");
        self.hashes_locked(&live)
    }

    fn hashes_locked(&self, live: &Live) -> Vec<[u8; 32]> {
        [&live.pair.current, &live.pair.next].into_iter().flatten().filter_map(|c| c.sha256().ok()).collect()
    }
}

fn current_key(pair: &Pair) -> Result<Arc<CertifiedKey>> {
    pair.current.as_ref().ok_or_else(|| Error::Cert("no current web certificate".into()))?.certified_key()
}

fn save(path: &Path, pair: &Pair) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    // A leftover temporary file may have other permissions: the key goes
    // only into a file made here with 0600.
    let _ = std::fs::remove_file(&tmp);
    let bytes = serde_json::to_vec_pretty(pair).expect("certificates serialize");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::Io(format!("write {}: {e}", tmp.display())))?;
    f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| Error::Io(format!("write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io(format!("rename {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    #[test]
    fn a_certificate_lives_ten_days_and_its_successor_comes_at_half_life() {
        let c = Validity::issued_at(T0);
        assert_eq!(c.not_after - c.not_before, 10 * DAY);
        assert!(c.not_after - c.not_before < 14 * DAY, "Chromium pins certificates valid at most 14 days");
        assert_eq!(plan(T0, None, None), Plan::IssueCurrent);
        assert_eq!(plan(T0, Some(c), None), Plan::Keep);
        // Half-life: 5 days left.
        let half = c.not_after - ISSUE_NEXT_BEFORE_SECS;
        assert_eq!(plan(half - 1, Some(c), None), Plan::Keep);
        assert_eq!(plan(half, Some(c), None), Plan::IssueNext);
        let n = Validity::issued_at(half);
        assert_eq!(plan(half + 1, Some(c), Some(n)), Plan::Keep);
        // One day left: the next one takes over; the old one stays valid a day.
        assert_eq!(plan(c.not_after - DAY, Some(c), Some(n)), Plan::Promote);
        // Down for weeks: both expired, a new one.
        assert_eq!(plan(n.not_after + 1, Some(c), Some(n)), Plan::IssueCurrent);
        // The current one lost (expired), the next one still good.
        assert_eq!(plan(c.not_after, Some(c), Some(n)), Plan::Promote);
        // A clock moved back before a certificate's start: not usable.
        assert_eq!(plan(c.not_before - 10, Some(c), None), Plan::IssueCurrent);
    }

    #[test]
    fn certificates_are_p256_pinned_by_hash_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let certs = WebCerts::open(dir.path(), names.clone(), T0).unwrap();
        let hashes = certs.hashes();
        assert_eq!(hashes.len(), 1);
        let der = certs.key().cert[0].to_vec();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&der)), hashes[0]);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(parsed.public_key().algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1", "an EC key");
        let v = parsed.validity();
        assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), LIFETIME_SECS);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("web-certs.json")).unwrap().permissions().mode() & 0o777, 0o600);
        drop(certs);
        // Restarted: the same hash; at half-life a second one is published.
        let again = WebCerts::open(dir.path(), names.clone(), T0 + 60).unwrap();
        assert_eq!(again.hashes(), hashes);
        assert!(again.tick(T0 + 5 * DAY).unwrap(), "the next one is issued");
        assert!(!again.tick(T0 + 5 * DAY + 60).unwrap(), "nothing to do a minute later");
        let both = again.hashes();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], hashes[0]);
        again.tick(T0 + 9 * DAY).unwrap();
        assert_eq!(again.hashes(), vec![both[1]]);
        assert_eq!(<[u8; 32]>::from(Sha256::digest(again.key().cert[0].as_ref())), both[1]);
    }
}
