//! What a certificate may be used for: TLS client, TLS server, or both.
//!
//! An identity-policy rule grants a [`Usage`] (both by default, as the signer's plain settings
//! always issue); a workload may narrow it with the `<domain>/usage` user annotation (see
//! [`crate::annotations`]), never widen it. The usage decides the leaf's extendedKeyUsage and,
//! with the key type, its keyUsage ([`Usage::key_usages`]): digitalSignature always, and
//! keyEncipherment only for an RSA key that may serve (RSA key transport is a server's part
//! of a TLS 1.2 handshake; RFC 5280 §4.2.1.12 asks that the two extensions agree).

use std::fmt;
use std::str::FromStr;

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};

/// The extended key usages a certificate carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Usage {
    /// clientAuth only: a workload that never serves.
    Client,
    /// serverAuth only: a backend that never calls out with this identity.
    Server,
    /// serverAuth and clientAuth.
    #[default]
    Both,
}

impl Usage {
    pub const ALL: [Usage; 3] = [Usage::Client, Usage::Server, Usage::Both];

    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Client => "client",
            Usage::Server => "server",
            Usage::Both => "both",
        }
    }

    /// Whether a certificate of usage `other` asks for nothing beyond this one.
    pub fn allows(self, other: Usage) -> bool {
        self == Usage::Both || self == other
    }

    pub fn serves(self) -> bool {
        self != Usage::Client
    }

    pub fn calls(self) -> bool {
        self != Usage::Server
    }

    /// The leaf's extendedKeyUsage, serverAuth first.
    pub fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        let mut ekus = Vec::with_capacity(2);
        if self.serves() {
            ekus.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.calls() {
            ekus.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        ekus
    }

    /// The leaf's keyUsage for a key that is (`rsa`) or is not RSA.
    pub fn key_usages(self, rsa: bool) -> Vec<KeyUsagePurpose> {
        let mut kus = vec![KeyUsagePurpose::DigitalSignature];
        if rsa && self.serves() {
            kus.push(KeyUsagePurpose::KeyEncipherment);
        }
        kus
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Usage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Usage::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a usage (one of client, server, both)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_allows_each_and_each_allows_only_itself() {
        assert!(Usage::Both.allows(Usage::Client) && Usage::Both.allows(Usage::Server));
        assert!(Usage::Client.allows(Usage::Client));
        assert!(!Usage::Client.allows(Usage::Server) && !Usage::Client.allows(Usage::Both));
        assert!(!Usage::Server.allows(Usage::Both));
    }

    #[test]
    fn key_encipherment_only_for_an_rsa_key_that_serves() {
        use KeyUsagePurpose::*;
        assert_eq!(
            Usage::Both.key_usages(true),
            [DigitalSignature, KeyEncipherment]
        );
        assert_eq!(
            Usage::Server.key_usages(true),
            [DigitalSignature, KeyEncipherment]
        );
        assert_eq!(Usage::Client.key_usages(true), [DigitalSignature]);
        assert_eq!(Usage::Both.key_usages(false), [DigitalSignature]);
        assert_eq!(
            Usage::Client.extended_key_usages(),
            [ExtendedKeyUsagePurpose::ClientAuth]
        );
        assert_eq!("server".parse::<Usage>(), Ok(Usage::Server));
        assert!("Server".parse::<Usage>().is_err());
    }
}
