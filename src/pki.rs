//! Development PKI: a local CA plus server and client certificates (ECDSA P-256) so the demo
//! runs with mutual TLS out of the box. Not for production keys.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Days, NaiveDate, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber, date_time_ymd,
};
use ring::rand::{SecureRandom, SystemRandom};

/// Common name of the development CA.
pub const CA_COMMON_NAME: &str = "sharebroker development CA";
const CA_VALID_DAYS: u64 = 730;
const LEAF_VALID_DAYS: u64 = 365;

/// Errors of the development PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to build a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// The system random number generator failed.
    #[error("cannot generate a serial number: system random number generator failed")]
    Random,
    /// A client name cannot be used as a common name and file name.
    #[error("invalid client name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    /// No server names were given for a server certificate.
    #[error("at least one server name (dns name or ip address) is needed")]
    NoServerNames,
    /// Only half of the CA exists.
    #[error(
        "development ca in {dir} is incomplete: {missing} is missing (re-run with force to recreate all)"
    )]
    IncompleteCa { dir: PathBuf, missing: PathBuf },
    /// The CA files exist but are not usable.
    #[error("development ca {path} is unusable: {reason}")]
    BadCa { path: PathBuf, reason: String },
}

/// File layout of a PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// Root directory.
    pub dir: PathBuf,
}

impl PkiPaths {
    /// Layout rooted at `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
    /// `ca.pem`
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `ca.key`
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `server.pem`
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// `server.key`
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// `clients/`
    pub fn clients_dir(&self) -> PathBuf {
        self.dir.join("clients")
    }
    /// `clients/<name>.pem`
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.clients_dir().join(format!("{name}.pem"))
    }
    /// `clients/<name>.key`
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.clients_dir().join(format!("{name}.key"))
    }
}

/// What [`init`] did, by file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiSummary {
    /// Files written by this run.
    pub created: Vec<PathBuf>,
    /// Files that existed and were left untouched.
    pub kept: Vec<PathBuf>,
}

/// The loaded or freshly made CA.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// DER of the CA certificate's subject, to check issued certificates chain to it.
    subject_der: Vec<u8>,
    not_after: NaiveDate,
}

/// Creates (or completes) the development PKI in `dir`. Existing files are kept unless
/// `force`; a new CA (forced or first run) reissues every server and client certificate.
pub fn init(
    dir: &Path,
    client_names: &[String],
    server_names: &[String],
    force: bool,
) -> Result<PkiSummary, PkiError> {
    for name in client_names {
        check_name(name)?;
    }
    let paths = PkiPaths::new(dir);
    create_dir(&paths.clients_dir())?;
    let mut summary = PkiSummary::default();

    let (ca_cert, ca_key) = (paths.ca_cert(), paths.ca_key());
    let new_ca = force || (!ca_cert.exists() && !ca_key.exists());
    let ca = if new_ca {
        let ca = create_ca(&paths)?;
        summary.created.extend([ca_key, ca_cert]);
        ca
    } else {
        let ca = load_ca(&paths)?;
        summary.kept.extend([ca_key, ca_cert]);
        ca
    };

    let (cert, key) = (paths.server_cert(), paths.server_key());
    if new_ca || !cert.exists() || !key.exists() {
        if server_names.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let params = leaf_params(
            &server_names[0],
            server_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity(&ca, false),
        )?;
        issue(&ca, params, &cert, &key, "server certificate")?;
        summary.created.extend([key, cert]);
    } else {
        summary.kept.extend([key, cert]);
    }

    for name in client_names {
        let (cert, key) = (paths.client_cert(name), paths.client_key(name));
        if new_ca || !cert.exists() || !key.exists() {
            let params = leaf_params(
                name,
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
                validity(&ca, false),
            )?;
            issue(&ca, params, &cert, &key, "client certificate")?;
            summary.created.extend([key, cert]);
        } else {
            summary.kept.extend([key, cert]);
        }
    }
    Ok(summary)
}

/// Issues `clients/<name>.pem/.key` signed by the existing CA, overwriting any existing pair;
/// when `expired`, the certificate's whole validity lies in the past. For tests.
pub fn issue_test_client(
    dir: &Path,
    name: &str,
    expired: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    check_name(name)?;
    let paths = PkiPaths::new(dir);
    create_dir(&paths.clients_dir())?;
    let ca = load_ca(&paths)?;
    let params = leaf_params(
        name,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        validity(&ca, expired),
    )?;
    let (cert, key) = (paths.client_cert(name), paths.client_key(name));
    issue(&ca, params, &cert, &key, "test client certificate")?;
    Ok((cert, key))
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("only ascii letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

fn create_ca(paths: &PkiPaths) -> Result<Ca, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("ca key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "sharebroker");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    let today = Utc::now().date_naive();
    let not_after = add_days(today, CA_VALID_DAYS);
    set_validity(&mut params, (sub_days(today, 1), not_after));
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(gen_err("ca certificate"))?;
    write_file(&paths.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.ca_cert(), cert.pem().as_bytes(), 0o644)?;
    let subject_der = subject_of(cert.der(), &paths.ca_cert())?.0;
    Ok(Ca {
        issuer: Issuer::new(params, key),
        subject_der,
        not_after,
    })
}

fn load_ca(paths: &PkiPaths) -> Result<Ca, PkiError> {
    let (cert_path, key_path) = (paths.ca_cert(), paths.ca_key());
    for (present, missing) in [(&cert_path, &key_path), (&key_path, &cert_path)] {
        if present.exists() && !missing.exists() {
            return Err(PkiError::IncompleteCa {
                dir: paths.dir.clone(),
                missing: missing.clone(),
            });
        }
    }
    let bad = |path: &Path, reason: String| PkiError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let key_pem = read_to_string(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&key_path, e.to_string()))?;
    let cert_pem = fs::read(&cert_path).map_err(io_err("read", &cert_path))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem)
        .map_err(|e| bad(&cert_path, format!("not a pem certificate: {e}")))?;
    let (subject_der, dn, not_after_unix) = subject_of(&pem.contents, &cert_path)?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(&cert_path, format!("not an x.509 certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(&key_path, "key does not belong to ca.pem".into()));
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(bad(&cert_path, "certificate is not a ca".into()));
    }
    let not_after = chrono::DateTime::from_timestamp(not_after_unix, 0)
        .map(|t| t.date_naive())
        .ok_or_else(|| bad(&cert_path, "expiry date out of range".into()))?;
    if not_after <= Utc::now().date_naive() {
        tracing::warn!(path = %cert_path.display(), "development ca has expired; re-run pki init with force");
    }
    let params = {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_usages = ca_key_usages();
        params
    };
    Ok(Ca {
        issuer: Issuer::new(params, key),
        subject_der,
        not_after,
    })
}

/// Subject DER, the subject as an rcgen name, and the expiry (unix seconds) of a certificate.
fn subject_of(der: &[u8], path: &Path) -> Result<(Vec<u8>, DistinguishedName, i64), PkiError> {
    let bad = |reason: String| PkiError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| bad(format!("not an x.509 certificate: {e}")))?;
    let mut dn = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("subject attribute oid too large".into()))?
            .collect();
        let value = attr
            .as_str()
            .map_err(|e| bad(format!("subject attribute is not a string: {e}")))?;
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok((
        cert.subject().as_raw().to_vec(),
        dn,
        cert.validity().not_after.timestamp(),
    ))
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// (not_before, not_after) for a leaf: from yesterday for a year (capped at the CA's expiry),
/// or entirely in the past when `expired`.
fn validity(ca: &Ca, expired: bool) -> (NaiveDate, NaiveDate) {
    let today = Utc::now().date_naive();
    if expired {
        (sub_days(today, 30), sub_days(today, 1))
    } else {
        (
            sub_days(today, 1),
            add_days(today, LEAF_VALID_DAYS).min(ca.not_after),
        )
    }
}

fn leaf_params(
    common_name: &str,
    sans: &[String],
    eku: ExtendedKeyUsagePurpose,
    validity: (NaiveDate, NaiveDate),
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans.to_vec())
        .map_err(gen_err(format!("subject alternative names {sans:?}")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn issue(
    ca: &Ca,
    params: CertificateParams,
    cert_path: &Path,
    key_path: &Path,
    what: &str,
) -> Result<(), PkiError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err(format!("{what} key")))?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(gen_err(what.to_string()))?;
    // The issuer name must be byte-identical to the CA subject or TLS stacks will not chain it.
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.der()).map_err(|e| PkiError::BadCa {
            path: cert_path.to_path_buf(),
            reason: format!("issued certificate does not parse: {e}"),
        })?;
    if parsed.issuer().as_raw() != ca.subject_der.as_slice() {
        return Err(PkiError::BadCa {
            path: cert_path.to_path_buf(),
            reason: "issuer name would not match the ca subject encoding".into(),
        });
    }
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive, non-zero, and minimally encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn add_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_add_days(Days::new(n))
        .expect("dates within a few years of today are in range")
}

fn sub_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_sub_days(Days::new(n))
        .expect("dates within a few years of today are in range")
}

/// Sets validity from midnight UTC of `not_before` to midnight UTC of `not_after`.
fn set_validity(params: &mut CertificateParams, (not_before, not_after): (NaiveDate, NaiveDate)) {
    let ymd = |d: NaiveDate| {
        (
            d.year(),
            u8::try_from(d.month()).expect("months are 1..=12"),
            u8::try_from(d.day()).expect("days are 1..=31"),
        )
    };
    let (y, m, d) = ymd(not_before);
    params.not_before = date_time_ymd(y, m, d);
    let (y, m, d) = ymd(not_after);
    params.not_after = date_time_ymd(y, m, d);
}

/// Writes atomically (temporary file, fsync, rename, directory fsync) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(PkiError::Io {
            action: "write",
            path: tmp,
            source,
        });
    }
    fs::rename(&tmp, path).map_err(io_err("install", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        action,
        path,
        source,
    }
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Generate { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn read_cert(path: &Path) -> Vec<u8> {
        let pem = fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        pem.contents
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn cn<'a>(cert: &'a X509Certificate<'_>) -> &'a str {
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
    }

    /// Issuer name equals the CA subject and the CA key verifies the signature.
    fn assert_chains(ca: &X509Certificate<'_>, leaf: &X509Certificate<'_>) {
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            ca.public_key().subject_public_key.data.as_ref(),
        )
        .verify(
            leaf.tbs_certificate.as_ref(),
            leaf.signature_value.data.as_ref(),
        )
        .expect("leaf signature verifies with the ca key");
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in [dir.to_path_buf(), dir.join("clients")] {
            for e in fs::read_dir(sub).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    files.push((p.clone(), fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn init_creates_a_working_pki() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let summary = init(
            &dir,
            &names(&["tax-bureau", "civil-affairs"]),
            &names(&["localhost", "127.0.0.1"]),
            false,
        )
        .unwrap();
        let paths = PkiPaths::new(&dir);
        assert_eq!(summary.created.len(), 8);
        assert!(summary.kept.is_empty());
        for p in &summary.created {
            assert!(p.exists(), "{}", p.display());
        }
        for key in [
            paths.ca_key(),
            paths.server_key(),
            paths.client_key("tax-bureau"),
        ] {
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }

        let ca_der = read_cert(&paths.ca_cert());
        let ca = parse(&ca_der);
        assert_eq!(cn(&ca), CA_COMMON_NAME);
        assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
        let years =
            (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
        assert!((730..=732).contains(&years), "{years} days");

        let server_der = read_cert(&paths.server_cert());
        let server = parse(&server_der);
        assert_chains(&ca, &server);
        assert!(
            server
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let sans = &server
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));

        let client_der = read_cert(&paths.client_cert("tax-bureau"));
        let client = parse(&client_der);
        assert_chains(&ca, &client);
        assert_eq!(cn(&client), "tax-bureau");
        let eku = client.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(client.validity().is_valid());
    }

    #[test]
    fn second_init_keeps_files_and_adds_missing_clients() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let servers = names(&["localhost"]);
        init(dir, &names(&["a"]), &servers, false).unwrap();
        let before = snapshot(dir);

        let again = init(dir, &names(&["a"]), &servers, false).unwrap();
        assert!(again.created.is_empty());
        assert_eq!(again.kept.len(), 6);
        assert_eq!(snapshot(dir), before);

        let added = init(dir, &names(&["a", "b"]), &servers, false).unwrap();
        let paths = PkiPaths::new(dir);
        assert_eq!(
            added.created,
            vec![paths.client_key("b"), paths.client_cert("b")]
        );
        let ca_der = read_cert(&paths.ca_cert());
        let b_der = read_cert(&paths.client_cert("b"));
        assert_chains(&parse(&ca_der), &parse(&b_der));
        assert_eq!(cn(&parse(&b_der)), "b");
        for (path, bytes) in &before {
            assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
        }

        let forced = init(dir, &names(&["a"]), &servers, true).unwrap();
        assert_eq!(forced.created.len(), 6);
        assert_ne!(read_cert(&paths.ca_cert()), ca_der);
    }

    #[test]
    fn test_clients_expired_or_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(issue_test_client(dir, "x", false).is_err());
        init(dir, &[], &names(&["localhost"]), false).unwrap();
        let ca_der = read_cert(&PkiPaths::new(dir).ca_cert());

        let (cert, key) = issue_test_client(dir, "old", true).unwrap();
        assert!(key.exists());
        let der = read_cert(&cert);
        let old = parse(&der);
        assert_chains(&parse(&ca_der), &old);
        assert!(!old.validity().is_valid());
        assert!(old.validity().not_after.timestamp() < Utc::now().timestamp());

        let (cert, _) = issue_test_client(dir, "fresh", false).unwrap();
        let der = read_cert(&cert);
        assert!(parse(&der).validity().is_valid());
    }

    #[test]
    fn rejects_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for bad in ["", "../x", ".hidden", "a b", "a/b"] {
            let err = init(dir, &names(&[bad]), &names(&["localhost"]), false).unwrap_err();
            assert!(matches!(err, PkiError::BadName { .. }), "{bad}: {err}");
        }
        assert!(matches!(
            init(dir, &[], &[], false),
            Err(PkiError::NoServerNames)
        ));
        init(dir, &[], &names(&["localhost"]), false).unwrap();
        fs::remove_file(PkiPaths::new(dir).ca_key()).unwrap();
        let err = init(dir, &[], &names(&["localhost"]), false).unwrap_err();
        assert!(err.to_string().contains("ca.key is missing"), "{err}");
    }
}
