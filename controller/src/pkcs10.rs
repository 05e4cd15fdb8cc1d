//! PKCS#10 certificate signing requests (RFC 2986), read by hand with yasna: what the
//! signer needs of a node's request and nothing more.
//!
//! ```text
//! CertificationRequest ::= SEQUENCE {
//!   certificationRequestInfo SEQUENCE {
//!     version       INTEGER (0),
//!     subject       Name,                      -- SEQUENCE OF SET OF { type OID, value }
//!     subjectPKInfo SEQUENCE { algorithm SEQUENCE { OID, parameters }, key BIT STRING },
//!     attributes    [0] IMPLICIT SET OF { type OID, values SET OF ANY } },
//!   signatureAlgorithm SEQUENCE { OID, ... },
//!   signature          BIT STRING }
//! ```
//!
//! The subjectAltName comes from the `extensionRequest` attribute (PKCS#9). Only ECDSA P-256
//! keys with ECDSA-SHA256 signatures are understood: that is what `switchyard node-setup`
//! makes, and anything else is refused by the signer.

use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, BERReader, Tag};

/// id-ecPublicKey (RFC 5480).
pub const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// prime256v1 / secp256r1 (RFC 5480).
pub const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
/// ecdsa-with-SHA256 (RFC 5758).
pub const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_EXTENSION_REQUEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

/// The parts of a CSR the signer decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificationRequest {
    /// The DER of `certificationRequestInfo`: what the signature covers.
    pub info_der: Vec<u8>,
    /// Every common name of the subject (a well-formed node request has exactly one).
    pub common_names: Vec<String>,
    /// Whether the subject holds attributes other than the common name (O, OU, ...).
    pub other_subject_attributes: bool,
    /// The subjectAltName's DNS names.
    pub dns_names: Vec<String>,
    /// How many subjectAltName entries are not DNS names (IP, email, URI, ...).
    pub other_names: usize,
    /// The key's algorithm OID and its parameters' OID (the curve), if any.
    pub key_algorithm: (Vec<u64>, Option<Vec<u64>>),
    /// The public key bits (for EC: the uncompressed point, 65 bytes on P-256).
    pub public_key: Vec<u8>,
    /// The signature algorithm's OID.
    pub signature_algorithm: Vec<u64>,
    /// The signature (for ECDSA: the ASN.1 `Ecdsa-Sig-Value`).
    pub signature: Vec<u8>,
}

/// Why a CSR could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a PKCS#10 certificate request: {0}")]
pub struct ParseError(pub String);

fn bad(e: ASN1Error) -> ParseError {
    ParseError(format!("{e}"))
}

impl CertificationRequest {
    /// Reads a PEM `CERTIFICATE REQUEST` (what `spec.request` holds).
    pub fn from_pem(pem: &[u8]) -> Result<CertificationRequest, ParseError> {
        let text = std::str::from_utf8(pem).map_err(|_| ParseError("not UTF-8 PEM".into()))?;
        let begin = "-----BEGIN CERTIFICATE REQUEST-----";
        let end = "-----END CERTIFICATE REQUEST-----";
        let start = text
            .find(begin)
            .ok_or_else(|| ParseError(format!("no {begin} block")))?;
        let rest = &text[start + begin.len()..];
        let stop = rest
            .find(end)
            .ok_or_else(|| ParseError(format!("no {end} line")))?;
        let b64: String = rest[..stop].split_whitespace().collect();
        let der = base64_decode(&b64).ok_or_else(|| ParseError("bad base64".into()))?;
        Self::from_der(&der)
    }

    /// Reads a DER CSR.
    pub fn from_der(der: &[u8]) -> Result<CertificationRequest, ParseError> {
        let (info_der, signature_algorithm, signature) = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let info = r.next().read_der()?;
                let alg = r.next().read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    // NULL or absent parameters.
                    r.read_optional(|r| r.read_null())?;
                    Ok(oid)
                })?;
                let (signature, _) = r.next().read_bitvec_bytes()?;
                Ok((info, alg, signature))
            })
        })
        .map_err(bad)?;
        let mut request = CertificationRequest {
            info_der: Vec::new(),
            common_names: Vec::new(),
            other_subject_attributes: false,
            dns_names: Vec::new(),
            other_names: 0,
            key_algorithm: (Vec::new(), None),
            public_key: Vec::new(),
            signature_algorithm: signature_algorithm.components().clone(),
            signature,
        };
        yasna::parse_der(&info_der, |r| {
            r.read_sequence(|r| {
                let version = r.next().read_u8()?;
                if version != 0 {
                    return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
                }
                r.next().read_sequence_of(|r| {
                    r.read_set_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            let value = r.next().read_tagged_der()?;
                            if oid.components().as_slice() == OID_COMMON_NAME {
                                let text = String::from_utf8(value.value().to_vec())
                                    .map_err(|_| ASN1Error::new(ASN1ErrorKind::Invalid))?;
                                request.common_names.push(text);
                            } else {
                                request.other_subject_attributes = true;
                            }
                            Ok(())
                        })
                    })
                })?;
                r.next().read_sequence(|r| {
                    r.next().read_sequence(|r| {
                        let alg = r.next().read_oid()?;
                        let params = r.read_optional(|r| r.read_oid())?;
                        request.key_algorithm = (
                            alg.components().clone(),
                            params.map(|p: ObjectIdentifier| p.components().clone()),
                        );
                        Ok(())
                    })?;
                    request.public_key = r.next().read_bitvec_bytes()?.0;
                    Ok(())
                })?;
                r.read_optional(|r| {
                    r.read_tagged_implicit(Tag::context(0), |r| {
                        r.read_set_of(|r| read_attribute(r, &mut request))
                    })
                })?;
                Ok(())
            })
        })
        .map_err(bad)?;
        request.info_der = info_der;
        Ok(request)
    }

    /// Whether the key is an EC key on P-256.
    pub fn key_is_p256(&self) -> bool {
        self.key_algorithm.0 == OID_EC_PUBLIC_KEY
            && self.key_algorithm.1.as_deref() == Some(OID_P256)
            && self.public_key.len() == 65
            && self.public_key[0] == 4
    }

    /// Proof of possession: the request is signed (ECDSA-SHA256) by the key it names.
    pub fn signature_verifies(&self) -> bool {
        if !self.key_is_p256() || self.signature_algorithm != OID_ECDSA_SHA256 {
            return false;
        }
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.public_key,
        )
        .verify(&self.info_der, &self.signature)
        .is_ok()
    }
}

/// One attribute: only `extensionRequest`'s subjectAltName is read.
fn read_attribute(r: BERReader, request: &mut CertificationRequest) -> Result<(), ASN1Error> {
    r.read_sequence(|r| {
        let oid = r.next().read_oid()?;
        if oid.components().as_slice() != OID_EXTENSION_REQUEST {
            r.next().read_der()?;
            return Ok(());
        }
        r.next().read_set_of(|r| {
            r.read_sequence_of(|r| {
                r.read_sequence(|r| {
                    let id = r.next().read_oid()?;
                    r.read_optional(|r| r.read_bool())?;
                    let value = r.next().read_bytes()?;
                    if id.components().as_slice() == OID_SUBJECT_ALT_NAME {
                        read_general_names(&value, request)?;
                    }
                    Ok(())
                })
            })
        })
    })
}

fn read_general_names(der: &[u8], request: &mut CertificationRequest) -> Result<(), ASN1Error> {
    yasna::parse_der(der, |r| {
        r.read_sequence_of(|r| {
            let name = r.read_tagged_der()?;
            if name.tag() == Tag::context(2) {
                let dns = String::from_utf8(name.value().to_vec())
                    .map_err(|_| ASN1Error::new(ASN1ErrorKind::Invalid))?;
                request.dns_names.push(dns);
            } else {
                request.other_names += 1;
            }
            Ok(())
        })
    })
}

/// What the node side reads of an issued certificate (X.509, RFC 5280): its validity and
/// its public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// notBefore.
    pub not_before: time::OffsetDateTime,
    /// notAfter.
    pub not_after: time::OffsetDateTime,
    /// The subjectPublicKey bits.
    pub public_key: Vec<u8>,
}

/// Reads the first certificate of a PEM file.
pub fn certificate_facts(pem: &[u8]) -> Result<CertificateFacts, ParseError> {
    let text = std::str::from_utf8(pem).map_err(|_| ParseError("not UTF-8 PEM".into()))?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text
        .find(begin)
        .ok_or_else(|| ParseError(format!("no {begin} block")))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(end)
        .ok_or_else(|| ParseError(format!("no {end} line")))?;
    let b64: String = rest[..stop].split_whitespace().collect();
    let der = base64_decode(&b64).ok_or_else(|| ParseError("bad base64".into()))?;
    fn read_time(r: BERReader) -> Result<time::OffsetDateTime, ASN1Error> {
        if r.lookahead_tag()? == yasna::tags::TAG_UTCTIME {
            Ok(*r.read_utctime()?.datetime())
        } else {
            Ok(*r.read_generalized_time()?.datetime())
        }
    }
    yasna::parse_der(&der, |r| {
        r.read_sequence(|r| {
            let facts = r.next().read_sequence(|r| {
                // [0] EXPLICIT version, serial, signature, issuer.
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
                r.next().read_der()?;
                r.next().read_der()?;
                r.next().read_der()?;
                let (not_before, not_after) = r
                    .next()
                    .read_sequence(|r| Ok((read_time(r.next())?, read_time(r.next())?)))?;
                r.next().read_der()?;
                let public_key = r.next().read_sequence(|r| {
                    r.next().read_der()?;
                    Ok(r.next().read_bitvec_bytes()?.0)
                })?;
                // issuerUniqueID, subjectUniqueID, extensions: not read.
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(CertificateFacts {
                    not_before,
                    not_after,
                    public_key,
                })
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(facts)
        })
    })
    .map_err(bad)
}

/// Standard base64 (with padding) to bytes; `None` on anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn request(cn: &str, sans: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    #[test]
    fn reads_what_rcgen_writes_and_the_signature_verifies() {
        let (key, pem) = request("n1", &["n1"]);
        let csr = CertificationRequest::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(csr.common_names, ["n1"]);
        assert_eq!(csr.dns_names, ["n1"]);
        assert_eq!(csr.other_names, 0);
        assert!(!csr.other_subject_attributes);
        assert!(csr.key_is_p256());
        assert_eq!(csr.public_key, key.public_key_raw());
        assert!(csr.signature_verifies());
    }

    #[test]
    fn a_tampered_request_does_not_verify() {
        let (_, pem) = request("n1", &["n1", "10.0.0.1"]);
        let mut csr = CertificationRequest::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(csr.other_names, 1, "the IP SAN is counted");
        let other = KeyPair::generate().unwrap();
        csr.public_key = other.public_key_raw().to_vec();
        assert!(!csr.signature_verifies());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(CertificationRequest::from_pem(b"hello").is_err());
        assert!(CertificationRequest::from_der(&[0x30, 0x03, 1, 2, 3]).is_err());
    }

    #[test]
    fn reads_the_validity_and_key_of_a_certificate() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["n1".to_owned()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let facts = certificate_facts(cert.pem().as_bytes()).unwrap();
        assert_eq!(facts.not_before.unix_timestamp(), 1_700_000_000);
        assert_eq!(facts.not_after.unix_timestamp(), 1_800_000_000);
        assert_eq!(facts.public_key, key.public_key_raw());
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbA==").unwrap(), b"hell");
        assert_eq!(base64_decode("aGVs").unwrap(), b"hel");
        assert!(base64_decode("a").is_none());
    }
}
