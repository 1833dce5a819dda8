//! RSA subject keys: what a careful CA certifies and Go can use.
//!
//! The API server admits any RSA key whose modulus is 3072 or 4096 bits long. A key with
//! public exponent 3 invites the known low-exponent attacks; one with an exponent of 2^31 or
//! more is refused by Go's `crypto/rsa`, so a Go client could not use the certificate; a
//! modulus that is even, has a small factor, is a perfect square or is itself prime can be
//! factored by anyone, so anyone could use the certificate. [`check_public_key`] refuses all of
//! them, naming which rule failed; it quotes only public numbers, never key bytes.
//!
//! The checks cost what they protect against: trial division by the primes below 1000 is a
//! few microseconds; the base-2 Fermat test that finds a prime modulus is one modular
//! exponentiation (docs/performance.md gives its cost), made only for keys that passed every cheaper
//! rule and whose holder proved possession.

use num_bigint::BigUint;
use x509_cert::der::asn1::UintRef;
use x509_cert::der::{Decode, Reader, SliceReader};

/// The public exponents we certify: odd, at least 65537 (the universal choice), and below
/// 2^31 (Go's `crypto/rsa` limit).
const MIN_EXPONENT: u64 = 65_537;
const MAX_EXPONENT: u64 = (1 << 31) - 1;

/// Odd primes below 1000, for trial division.
const SMALL_PRIMES: [u16; 167] = small_primes();

// Evaluated at compile time: an index out of bounds or an overflow would fail the build, not a
// request.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn small_primes() -> [u16; 167] {
    let mut out = [0u16; 167];
    let mut found = 0;
    let mut n = 3u16;
    while n < 1000 {
        let mut d = 3u16;
        let mut prime = true;
        while d * d <= n {
            if n.is_multiple_of(d) {
                prime = false;
                break;
            }
            d += 2;
        }
        if prime && found < out.len() {
            out[found] = n;
            found += 1;
        }
        n += 2;
    }
    out
}

/// The two RSA modulus sizes the API server admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModulusSize {
    Bits3072,
    Bits4096,
}

/// The modulus size of a PKCS#1 RSAPublicKey (the subject key's BIT STRING contents), or
/// which rule it breaks.
pub(crate) fn check_public_key(raw: &[u8]) -> Result<ModulusSize, String> {
    let (modulus, exponent) =
        numbers(raw).map_err(|e| format!("RSA public key is not a DER RSAPublicKey ({e})"))?;
    let n = modulus.as_bytes();
    let bits = match n.first() {
        Some(&top) => n
            .len()
            .saturating_mul(8)
            .saturating_sub(top.leading_zeros() as usize),
        None => 0,
    };
    let size = match bits {
        3072 => ModulusSize::Bits3072,
        4096 => ModulusSize::Bits4096,
        other => {
            return Err(format!(
                "RSA modulus of {other} bits is not supported (only 3072 or 4096)"
            ));
        }
    };
    check_exponent(exponent.as_bytes())?;
    check_modulus_cheaply(n)?;
    Ok(size)
}

/// The (modulus, public exponent) of a DER PKCS#1 RSAPublicKey.
fn numbers(raw: &[u8]) -> x509_cert::der::Result<(UintRef<'_>, UintRef<'_>)> {
    let mut r = SliceReader::new(raw)?;
    let numbers = r.sequence(|s| Ok((UintRef::decode(s)?, UintRef::decode(s)?)))?;
    r.finish(numbers)
}

fn check_exponent(e: &[u8]) -> Result<(), String> {
    let value = (e.len() <= 8).then(|| e.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)));
    match value {
        Some(v) if (MIN_EXPONENT..=MAX_EXPONENT).contains(&v) && v % 2 == 1 => Ok(()),
        Some(v) => Err(format!(
            "RSA public exponent {v} is not accepted: it must be odd, at least 65537 and below 2^31"
        )),
        None => Err(format!(
            "RSA public exponent of {} bytes is not accepted: it must be odd, at least 65537 and below 2^31",
            e.len()
        )),
    }
}

/// Refuses moduli that anyone can factor at a glance: even, or with a factor below 1000.
fn check_modulus_cheaply(n: &[u8]) -> Result<(), String> {
    if n.last().is_none_or(|b| b % 2 == 0) {
        return Err("RSA modulus is even, so anyone can factor it".into());
    }
    if let Some(p) = SMALL_PRIMES
        .iter()
        .find(|p| remainder(n, u32::from(**p)) == 0)
    {
        return Err(format!(
            "RSA modulus is divisible by {p}, so anyone can factor it"
        ));
    }
    Ok(())
}

/// Refuses a modulus that is a perfect square or prime. This costs a modular exponentiation,
/// so it runs only for a key whose holder has proved possession: a stranger's garbage never
/// reaches it.
// BigUint arithmetic does not overflow, and n ≥ 2^3071 here, so n − 1 does not underflow.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn check_not_prime_or_square(raw: &[u8]) -> Result<(), String> {
    let (n, _) = numbers(raw).map_err(|_| "RSA public key is malformed")?;
    let big = BigUint::from_bytes_be(n.as_bytes());
    let root = big.sqrt();
    if &root * &root == big {
        return Err("RSA modulus is a perfect square, so anyone can factor it".into());
    }
    // Fermat: 2^(n-1) ≡ 1 (mod n) for every prime n. A composite that passes (a base-2
    // pseudoprime) is still a composite, which is all this rule asks.
    let one = BigUint::from(1u8);
    if BigUint::from(2u8).modpow(&(&big - &one), &big) == one {
        return Err("RSA modulus is prime, so its private key follows from it".into());
    }
    Ok(())
}

/// `n mod d` for a big-endian `n`; `d` is one of [`SMALL_PRIMES`] (never 0, below 2^16), so
/// the running remainder stays below 2^24 and nothing overflows.
#[allow(clippy::arithmetic_side_effects)]
fn remainder(n: &[u8], d: u32) -> u32 {
    n.iter().fold(0u32, |r, b| ((r << 8) | u32::from(*b)) % d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_primes_are_the_odd_primes_below_1000() {
        let by_trial_division: Vec<u16> = (3..1000u16)
            .step_by(2)
            .filter(|n| (2..*n).all(|d| n % d != 0))
            .collect();
        assert_eq!(SMALL_PRIMES.to_vec(), by_trial_division);
    }

    #[test]
    fn exponents_follow_the_rule() {
        for ok in [65_537u64, 65_539, (1 << 31) - 1] {
            assert_eq!(check_exponent(&ok.to_be_bytes()), Ok(()), "{ok}");
        }
        for bad in [1u64, 3, 17, 65_536, 65_538, 1 << 31, (1 << 32) + 1] {
            assert!(check_exponent(&bad.to_be_bytes()).is_err(), "{bad}");
        }
        assert!(check_exponent(&[1; 9]).is_err());
    }

    /// Primes made and checked by `openssl prime -generate` / `openssl prime`, an independent
    /// tool, so these fixtures do not lean on the Fermat test they exercise.
    const OPENSSL_PRIME_3072: [&str; 12] = [
        "D5C192B76AC00D6DF6642631A0F81EBD88F0FD03BA11B867B62BD87E41FE2BC9",
        "BB814E205CC337801A694D8411AD44E7397E067D9F6FEA5BC71B4E2D62E4EB24",
        "7F0DD73CD05309D5773D818F18E0AFD267A1451D87ACC0414A19CFDEFA679EAA",
        "F7B963A52F17C598DBACD92EB9B4001086053B4804C7CE6D619477B30E9F4C25",
        "FC254AAC8878D79F2833AE7942AB08A2BEBC0030773BDA3CCA076EAF67F4278A",
        "0729703AF99522978BE39DE3D6A70111629150ECB5928973653F7380E146110A",
        "1F1681FCD72B8415DEC9C37FA15943955C4DC806BC3183FAAC583525B2A7B389",
        "462DA385CEC63F20CAAA3924C1BA792AB6FA112854D7343F431AE29138EAF495",
        "6310ABC25A02075BD5FAFCBA3C503B3283F98884D43FFE95063E86B1A45113F7",
        "897A18DEBE5A8E99EBA16D62EEE63D319B3FAEA4F55B0A7BEA255D429B8507E3",
        "9AEE804E414B1A44DDD8B80E6F127E5E1587BF414CE89FB898587665FB797E04",
        "9294F50717E76FED0E505C7144F7CDCE7E5BE81D667758CAF2DF01FA2586CB2F",
    ];
    const OPENSSL_PRIME_2048: [&str; 8] = [
        "DB66EFFAEC354974FD170A841D9B45B1B549D67E16C53EF82EC0A48545F80919",
        "64EC69D731FECF946CCC4987F7963886532F6977F32771107F60FB661F83881D",
        "1EFE9F0677B52E9F150AB7D6D1CB286855304B606E944C88B44E370E63129F4D",
        "571A8699211552AF47EAABDE4A9C1BCB391C93C147F0A2FDE36BFAD85C8A4AAD",
        "472A4C1EF81F974D672D2FCF738C7192FDEDFEEB720A4A6F385A2FD29ED3E065",
        "C8FDFD9BEB22C381FB50931ED71B74E0819BEE5ED68F994D4B9293A8F9A342D3",
        "DB58E379C546C8A1445446304DEE1B28152E9CDA9E3B00C49CEC15B60277FEC1",
        "91FA8CBC0ABA5B251476FD2B5A400BF8B9F8CD8A7C3B4AACF265722B14F4273D",
    ];

    fn big(hex: &[&str]) -> BigUint {
        BigUint::parse_bytes(hex.concat().as_bytes(), 16).unwrap()
    }

    fn rsa_public_key(n: &BigUint) -> Vec<u8> {
        use x509_cert::der::Encode;
        use x509_cert::der::asn1::{SequenceOf, Uint};
        let mut numbers = SequenceOf::<Uint, 2>::new();
        numbers.add(Uint::new(&n.to_bytes_be()).unwrap()).unwrap();
        numbers.add(Uint::new(&[1, 0, 1]).unwrap()).unwrap();
        numbers.to_der().unwrap()
    }

    #[test]
    fn a_prime_or_square_modulus_is_refused_and_a_real_one_admitted() {
        let prime = big(&OPENSSL_PRIME_3072);
        let square = big(&OPENSSL_PRIME_2048).pow(2);
        assert_eq!((prime.bits(), square.bits()), (3072, 4096));
        for (n, says) in [(prime, "is prime"), (square, "perfect square")] {
            let raw = rsa_public_key(&n);
            assert!(check_public_key(&raw).is_ok(), "the cheap rules pass it");
            let e = check_not_prime_or_square(&raw).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let real = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
        let spki = real.public_key().as_der().unwrap();
        let key = crate::SubjectKey::from_spki_der(spki.as_ref()).unwrap();
        assert_eq!(key.refuse_factorable(), Ok(()));
    }

    #[test]
    fn remainders_match_big_arithmetic() {
        let n = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1];
        let v = u64::from_be_bytes(n);
        for d in [3u32, 7, 997] {
            assert_eq!(u64::from(remainder(&n, d)), v % u64::from(d));
        }
    }
}
