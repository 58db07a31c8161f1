//! The cluster certificate authority and the certificates it issues.
//!
//! A certificate's role is its subject's organizational unit:
//! `courier-node` (a cluster member: server and client of node-to-node gRPC)
//! or `courier-operator` (may run `cluster …` commands).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

pub const ROLE_NODE: &str = "courier-node";
pub const ROLE_OPERATOR: &str = "courier-operator";

/// Who is on the other end of a verified TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Node(String),
    Operator(String),
    /// A certificate from the cluster CA with neither role.
    Other,
}

fn cert_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cert(format!("{what}: {e}"))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| cert_err(&format!("write {}", path.display()), e))?;
    f.write_all(contents.as_bytes()).map_err(|e| cert_err(&format!("write {}", path.display()), e))
}

fn write_public(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| cert_err(&format!("write {}", path.display()), e))
}

pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca-key.pem"))
}

pub fn issued_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates the cluster CA in `dir`. Refuses to overwrite an existing one.
pub fn create_ca(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| cert_err("create certs dir", e))?;
    let (cert_path, key_path) = ca_paths(dir);
    if cert_path.exists() {
        return Err(Error::Cert(format!("{} exists already; refusing to replace the cluster CA", cert_path.display())));
    }
    let key = KeyPair::generate().map_err(|e| cert_err("generate CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_err("CA params", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Courier cluster CA {:08x}", rand::random::<u32>()));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 3650);
    let cert = params.self_signed(&key).map_err(|e| cert_err("sign CA", e))?;
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok(cert_path)
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let (cert_path, key_path) = ca_paths(dir);
    let cert = std::fs::read_to_string(&cert_path)
        .map_err(|e| cert_err(&format!("read {} (run `courier cert create-ca` first)", cert_path.display()), e))?;
    let key = std::fs::read_to_string(&key_path).map_err(|e| cert_err(&format!("read {}", key_path.display()), e))?;
    let key = KeyPair::from_pem(&key).map_err(|e| cert_err("parse CA key", e))?;
    Issuer::from_ca_cert_pem(&cert, key).map_err(|e| cert_err("parse CA certificate", e))
}

fn issue(dir: &Path, name: &str, role: &str, hosts: &[String], usages: Vec<ExtendedKeyUsagePurpose>) -> Result<(PathBuf, PathBuf)> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "ca" {
        return Err(Error::Cert(format!("invalid certificate name {name:?}")));
    }
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate().map_err(|e| cert_err("generate key", e))?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| cert_err("certificate hosts", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &issuer).map_err(|e| cert_err("sign certificate", e))?;
    let (cert_path, key_path) = issued_paths(dir, name);
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok((cert_path, key_path))
}

/// Issues a node certificate valid for `hosts` (DNS names or IP addresses).
pub fn create_node(dir: &Path, name: &str, hosts: &[String]) -> Result<(PathBuf, PathBuf)> {
    if hosts.is_empty() {
        return Err(Error::Cert("a node certificate needs at least one --host".into()));
    }
    issue(dir, name, ROLE_NODE, hosts, vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth])
}

/// Issues an operator (client) certificate.
pub fn create_client(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    issue(dir, name, ROLE_OPERATOR, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
}

/// The role a verified peer certificate (DER) carries.
pub fn role_of(der: &[u8]) -> Role {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Role::Other };
    let subject = cert.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("").to_string();
    let ou = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok()).unwrap_or("");
    match ou {
        ROLE_NODE => Role::Node(cn),
        ROLE_OPERATOR => Role::Operator(cn),
        _ => Role::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(pem_path: &Path) -> Vec<u8> {
        let pem = std::fs::read(pem_path).unwrap();
        let mut rd = &pem[..];
        rustls_pemfile::certs(&mut rd).next().unwrap().unwrap().to_vec()
    }

    #[test]
    fn issued_certificates_carry_their_role() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        assert!(create_ca(dir.path()).is_err(), "the CA is never replaced");
        let (node, key) = create_node(dir.path(), "n1", &["127.0.0.1".into(), "localhost".into()]).unwrap();
        let (op, _) = create_client(dir.path(), "admin").unwrap();
        assert_eq!(role_of(&der_of(&node)), Role::Node("n1".into()));
        assert_eq!(role_of(&der_of(&op)), Role::Operator("admin".into()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(create_node(dir.path(), "n2", &[]).is_err());
    }
}
