//! The webhook's own certificate authority and serving certificate, for clusters without
//! cert-manager: generation (rcgen), inspection (x509-parser) and the renewal rule. Pure:
//! the time is an argument, so the rule is tested at any instant.
//!
//! Renewal rule, applied to the stored [`Bundle`] at every check:
//! - No bundle, or a CA that cannot be read: a new CA and serving certificate.
//! - The CA has less than twice the serving validity left: a new CA is put first in the
//!   bundle and the old ones stay until they expire, so the API server keeps trusting the
//!   serving certificate in use while it learns the new CA. The serving certificate is not
//!   re-issued for this; the next renewal signs with the new CA.
//! - The serving certificate expires within `cert_renew_before`, does not name every host
//!   the webhook is reached by, or is not signed by a CA of the bundle: a new one, signed by
//!   the newest CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How far certificates are back-dated, so an API server whose clock is slightly behind
/// accepts them at once.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How long certificates live and when they are renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Validity of a serving certificate.
    pub cert_validity: Duration,
    /// A serving certificate is renewed this long before it expires.
    pub cert_renew_before: Duration,
    /// Validity of a CA.
    pub ca_validity: Duration,
}

/// The CA and serving certificate as stored (in a Secret), all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The CAs clients trust: the current one first, then earlier ones not yet expired.
    pub ca_certs: String,
    /// The private key of the current (first) CA.
    pub ca_key: String,
    /// The serving certificate.
    pub tls_cert: String,
    /// The serving certificate's private key.
    pub tls_key: String,
}

/// Why certificates cannot be generated or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen cannot generate a key or sign a certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or X.509 certificate (e.g. one stored in the Secret) cannot be parsed.
    #[error("cannot read a certificate: {0}")]
    Parse(String),
    /// The validity (`--cert-validity` or `--ca-validity`) ends too far out for a certificate.
    #[error("the certificate validity {0:?} is too long")]
    Validity(Duration),
    /// The lifetimes do not fit together (see [`Lifetimes::check`]).
    #[error(
        "--cert-renew-before ({renew_before:?}) must be shorter than --cert-validity ({validity:?}), and the CA validity at least twice the certificate validity"
    )]
    Lifetimes {
        /// The serving certificates' validity (`--cert-validity`).
        validity: Duration,
        /// How long before expiry they are renewed (`--cert-renew-before`).
        renew_before: Duration,
    },
}

impl Lifetimes {
    /// Checks that renewal can happen before expiry and that a CA outlives the serving
    /// certificates it signs.
    pub fn check(&self) -> Result<(), Error> {
        let ca_long_enough = self
            .cert_validity
            .checked_mul(2)
            .is_some_and(|twice| self.ca_validity >= twice);
        if self.cert_renew_before < self.cert_validity && ca_long_enough {
            Ok(())
        } else {
            Err(Error::Lifetimes {
                validity: self.cert_validity,
                renew_before: self.cert_renew_before,
            })
        }
    }
}

/// What the stored bundle should be at `now` for a webhook reached by `hosts` (DNS names or
/// IP addresses): `current` itself when it is fine. See the module documentation.
pub fn renew(
    current: Option<&Bundle>,
    hosts: &[String],
    now: SystemTime,
    lifetimes: &Lifetimes,
) -> Result<Bundle, Error> {
    let Some((current, cas)) = current.and_then(|bundle| Some((bundle, read_cas(bundle).ok()?)))
    else {
        let (ca_cert, ca_key) = new_ca(now, lifetimes.ca_validity)?;
        let (tls_cert, tls_key) = issue(&ca_cert, &ca_key, hosts, now, lifetimes.cert_validity)?;
        return Ok(Bundle {
            ca_certs: ca_cert,
            ca_key,
            tls_cert,
            tls_key,
        });
    };
    let mut next = current.clone();
    let ca_expires = cas.first().map_or(now, |ca| ca.not_after);
    // Expired CAs leave the bundle (a current CA that expired is always rotated below); a
    // new CA goes first when the current one runs short.
    let mut trusted: Vec<String> = cas
        .iter()
        .filter(|ca| ca.not_after > now)
        .map(|ca| ca.pem.clone())
        .collect();
    if ca_expires < now + 2 * lifetimes.cert_validity {
        let (ca_cert, ca_key) = new_ca(now, lifetimes.ca_validity)?;
        trusted.insert(0, ca_cert);
        next.ca_key = ca_key;
    }
    next.ca_certs = trusted.concat();
    if serving_needs_renewal(current, &cas, hosts, now, lifetimes) {
        let newest_ca = read_cas(&next)?.swap_remove(0).pem;
        let (tls_cert, tls_key) = issue(
            &newest_ca,
            &next.ca_key,
            hosts,
            now,
            lifetimes.cert_validity,
        )?;
        next.tls_cert = tls_cert;
        next.tls_key = tls_key;
    }
    Ok(next)
}

/// When a certificate stops being valid, and the hosts it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The end of its validity.
    pub not_after: SystemTime,
    /// Its DNS and IP subject alternative names.
    pub hosts: BTreeSet<String>,
}

/// Reads the first certificate of a PEM text.
pub fn inspect(pem: &str) -> Result<CertInfo, Error> {
    let der = first_der(pem)?;
    let cert = parse(&der)?;
    let hosts = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(host_name)
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        not_after: to_system_time(cert.validity().not_after.timestamp()),
        hosts,
    })
}

/// A CA of the bundle.
struct Ca {
    pem: String,
    not_after: SystemTime,
    der: Vec<u8>,
}

fn read_cas(bundle: &Bundle) -> Result<Vec<Ca>, Error> {
    let cas: Vec<Ca> = pem::parse_many(&bundle.ca_certs)
        .map_err(|e| Error::Parse(e.to_string()))?
        .into_iter()
        .map(|block| {
            let not_after = parse(block.contents())?.validity().not_after.timestamp();
            Ok(Ca {
                pem: pem::encode_config(
                    &block,
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                ),
                not_after: to_system_time(not_after),
                der: block.into_contents(),
            })
        })
        .collect::<Result<_, Error>>()?;
    // The current CA must be usable for signing: its key must read and match it.
    let first = cas
        .first()
        .ok_or_else(|| Error::Parse("the bundle holds no CA".to_owned()))?;
    let key = KeyPair::from_pem(&bundle.ca_key)?;
    if parse(&first.der)?.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(Error::Parse(
            "the CA key does not belong to the CA".to_owned(),
        ));
    }
    Ok(cas)
}

fn serving_needs_renewal(
    bundle: &Bundle,
    cas: &[Ca],
    hosts: &[String],
    now: SystemTime,
    lifetimes: &Lifetimes,
) -> bool {
    let Ok(info) = inspect(&bundle.tls_cert) else {
        return true;
    };
    let expiring = info.not_after < now + lifetimes.cert_renew_before;
    let wanted: BTreeSet<String> = hosts.iter().cloned().collect();
    expiring || info.hosts != wanted || !signed_by_any(&bundle.tls_cert, cas)
}

fn signed_by_any(cert_pem: &str, cas: &[Ca]) -> bool {
    let Ok(der) = first_der(cert_pem) else {
        return false;
    };
    let Ok(cert) = parse(&der) else {
        return false;
    };
    cas.iter().any(|ca| {
        parse(&ca.der).is_ok_and(|ca| cert.verify_signature(Some(ca.public_key())).is_ok())
    })
}

/// A new self-signed CA valid for `validity` from `now`. Its name carries the time, so
/// successive CAs are told apart.
fn new_ca(now: SystemTime, validity: Duration) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("guildnet-webhook-ca-{issued}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, validity)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `hosts`, signed by the CA.
fn issue(
    ca_cert: &str,
    ca_key: &str,
    hosts: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<(String, String), Error> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let common_name = hosts.first().map_or("guildnet-webhook", String::as_str);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    validity: Duration,
) -> Result<(), Error> {
    let too_long = || Error::Validity(validity);
    let now = OffsetDateTime::from(now);
    let validity = time::Duration::try_from(validity).map_err(|_| too_long())?;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now.checked_add(validity).ok_or_else(too_long)?;
    Ok(())
}

/// The DER of the first PEM block of `text`.
fn first_der(text: &str) -> Result<Vec<u8>, Error> {
    pem::parse(text)
        .map(pem::Pem::into_contents)
        .map_err(|e| Error::Parse(e.to_string()))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| Error::Parse(e.to_string()))
}

fn host_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
            _ => None,
        }
        .map(|ip| ip.to_string()),
        _ => None,
    }
}

fn to_system_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            cert_validity: 10 * HOUR,
            cert_renew_before: 3 * HOUR,
            ca_validity: 100 * HOUR,
        }
    }

    fn hosts() -> Vec<String> {
        vec![
            "127.0.0.1".to_owned(),
            "guildnet-webhook.guildnet-system.svc".to_owned(),
        ]
    }

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn fresh() -> Bundle {
        renew(None, &hosts(), start(), &lifetimes()).unwrap()
    }

    fn ca_count(bundle: &Bundle) -> usize {
        pem::parse_many(&bundle.ca_certs).unwrap().len()
    }

    #[test]
    fn a_fresh_bundle_has_a_ca_and_a_serving_certificate_for_the_hosts() {
        let bundle = fresh();
        let info = inspect(&bundle.tls_cert).unwrap();
        assert_eq!(info.hosts, hosts().into_iter().collect());
        assert_eq!(info.not_after, start() + 10 * HOUR);
        let cas = read_cas(&bundle).unwrap();
        assert_eq!(cas.len(), 1);
        assert!(parse(&cas[0].der).unwrap().is_ca());
        assert_eq!(cas[0].not_after, start() + 100 * HOUR);
        assert!(signed_by_any(&bundle.tls_cert, &cas));
        assert!(
            !parse(&first_der(&bundle.tls_cert).unwrap())
                .unwrap()
                .is_ca()
        );
    }

    #[test]
    fn a_current_bundle_is_kept() {
        let bundle = fresh();
        let later = start() + 6 * HOUR;
        assert_eq!(
            renew(Some(&bundle), &hosts(), later, &lifetimes()).unwrap(),
            bundle
        );
    }

    #[test]
    fn the_serving_certificate_is_renewed_before_it_expires() {
        let bundle = fresh();
        let due = start() + 7 * HOUR + Duration::from_secs(1);
        let renewed = renew(Some(&bundle), &hosts(), due, &lifetimes()).unwrap();
        assert_eq!(renewed.ca_certs, bundle.ca_certs);
        assert_ne!(renewed.tls_cert, bundle.tls_cert);
        assert_ne!(renewed.tls_key, bundle.tls_key);
        assert_eq!(
            inspect(&renewed.tls_cert).unwrap().not_after,
            due + 10 * HOUR
        );
        assert!(signed_by_any(
            &renewed.tls_cert,
            &read_cas(&renewed).unwrap()
        ));
    }

    #[test]
    fn a_new_host_gets_a_new_certificate() {
        let bundle = fresh();
        let hosts = vec!["localhost".to_owned()];
        let renewed = renew(Some(&bundle), &hosts, start(), &lifetimes()).unwrap();
        assert_eq!(renewed.ca_certs, bundle.ca_certs);
        assert_eq!(
            inspect(&renewed.tls_cert).unwrap().hosts,
            BTreeSet::from(["localhost".to_owned()])
        );
    }

    #[test]
    fn the_ca_rotates_with_overlap() {
        let bundle = fresh();
        // 80 hours on, the CA has 20 hours left: less than two serving validities.
        let rotation = start() + 80 * HOUR + Duration::from_secs(1);
        let rotated = renew(Some(&bundle), &hosts(), rotation, &lifetimes()).unwrap();
        assert_eq!(ca_count(&rotated), 2);
        assert_ne!(rotated.ca_key, bundle.ca_key);
        assert!(rotated.ca_certs.ends_with(&bundle.ca_certs));
        // The serving certificate (issued 80h ago, long expired) is re-issued by the new CA.
        let cas = read_cas(&rotated).unwrap();
        assert!(signed_by_any(&rotated.tls_cert, &cas[..1]));
        // The old CA leaves the bundle once expired; the new one is not rotated again.
        let after = start() + 101 * HOUR;
        let later = renew(Some(&rotated), &hosts(), after, &lifetimes()).unwrap();
        assert_eq!(ca_count(&later), 1);
        assert!(rotated.ca_certs.starts_with(&later.ca_certs));
        assert_eq!(later.ca_key, rotated.ca_key);
    }

    #[test]
    fn a_ca_rotation_alone_keeps_the_serving_certificate() {
        let mut lifetimes = lifetimes();
        lifetimes.ca_validity = 25 * HOUR;
        let bundle = renew(None, &hosts(), start(), &lifetimes).unwrap();
        // 6 hours on: the CA has 19h left (< 20h), the certificate 4h (> 3h).
        let rotated = renew(Some(&bundle), &hosts(), start() + 6 * HOUR, &lifetimes).unwrap();
        assert_eq!(ca_count(&rotated), 2);
        assert_eq!(rotated.tls_cert, bundle.tls_cert);
        // Its renewal, an hour later, is signed by the new CA.
        let renewed = renew(
            Some(&rotated),
            &hosts(),
            start() + 7 * HOUR + HOUR,
            &lifetimes,
        )
        .unwrap();
        assert!(signed_by_any(
            &renewed.tls_cert,
            &read_cas(&renewed).unwrap()[..1]
        ));
    }

    #[test]
    fn an_unreadable_bundle_is_replaced() {
        let mut broken = fresh();
        broken.ca_certs = "not a certificate".to_owned();
        let replaced = renew(Some(&broken), &hosts(), start(), &lifetimes()).unwrap();
        assert_eq!(ca_count(&replaced), 1);
        let mut mismatched = fresh();
        mismatched.ca_key = fresh().ca_key;
        let replaced = renew(Some(&mismatched), &hosts(), start(), &lifetimes()).unwrap();
        assert_ne!(replaced.ca_key, mismatched.ca_key);
        // A serving certificate from a foreign CA is re-issued.
        let mut foreign = fresh();
        foreign.tls_cert = fresh().tls_cert;
        let reissued = renew(Some(&foreign), &hosts(), start(), &lifetimes()).unwrap();
        assert_eq!(reissued.ca_certs, foreign.ca_certs);
        assert!(signed_by_any(
            &reissued.tls_cert,
            &read_cas(&reissued).unwrap()
        ));
    }

    #[test]
    fn lifetimes_must_leave_room_to_renew() {
        assert!(lifetimes().check().is_ok());
        let mut backwards = lifetimes();
        backwards.cert_renew_before = 10 * HOUR;
        assert!(backwards.check().is_err());
        let mut short_ca = lifetimes();
        short_ca.ca_validity = 19 * HOUR;
        assert!(short_ca.check().is_err());
    }
}
