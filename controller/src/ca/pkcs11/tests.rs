//! How PKCS#11's encodings are read and re-encoded.

use super::key::{ecdsa_signature_der, public_point};
use der::Encode;
use der::asn1::OctetString;
use signer_core::CaKeyType;

#[test]
fn an_ecdsa_signature_is_reencoded_as_x509_carries_it() {
    // r has its high bit set (a leading zero is added), s has leading zeros (dropped).
    let mut raw = vec![0x80; 32];
    raw.extend([0u8; 31]);
    raw.push(0x01);
    let der = ecdsa_signature_der(&raw).unwrap();
    let mut expected = vec![0x30, (2 + 33) + 3, 0x02, 33, 0x00];
    expected.extend([0x80; 32]);
    expected.extend([0x02, 1, 0x01]);
    assert_eq!(der, expected);
    assert!(ecdsa_signature_der(&raw[1..]).is_err());
}

#[test]
fn a_point_is_read_wrapped_or_bare() {
    let mut point = vec![0x04];
    point.extend([7u8; 64]);
    let wrapped = OctetString::new(point.clone()).unwrap().to_der().unwrap();
    assert_eq!(
        public_point(&wrapped, CaKeyType::EcdsaP256),
        Some(point.clone())
    );
    assert_eq!(
        public_point(&point, CaKeyType::EcdsaP256),
        Some(point.clone())
    );
    assert_eq!(public_point(&point, CaKeyType::EcdsaP384), None);
    assert_eq!(public_point(&point[1..], CaKeyType::EcdsaP256), None);
}

#[test]
fn end_dates_are_utc_days_that_order_as_days_do() {
    use std::time::{Duration, UNIX_EPOCH};
    let day = |secs: u64| super::day(UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(&super::ymd(&day(0)), b"19700101");
    assert_eq!(&super::ymd(&day(86_400 + 86_399)), b"19700102");
    assert!(super::ymd(&day(31 * 86_400)) > super::ymd(&day(30 * 86_400)));
}
