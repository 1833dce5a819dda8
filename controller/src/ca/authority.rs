//! Who certifies the signing intermediates, as a leadership term sees it: our own root
//! ([`Steward`], the CA Secret and its rotations) or an upstream authority
//! ([`UpstreamSteward`]). A term asks either the same things: [`Authority::begin`] (a
//! signing CA whose roots are published, as a [`TermCa`] that renews it for the rest of the
//! term through [`TermCa::keep`]) and [`Authority::end_term`].

use std::sync::Arc;

use futures::future::BoxFuture;
use signer_core::Signer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SigningCa;
use super::steward::{Begun, NotBegun, Steward};
use super::upstream::{Certified, UpstreamSteward};

/// The leader's part of the CA's life, for the configured authority.
#[derive(Debug, Clone)]
pub enum Authority {
    Own(Arc<Steward>),
    Upstream(Arc<UpstreamSteward>),
}

/// What a term begins with: the signing CA, with the authority that renews it.
#[derive(Debug)]
pub enum TermCa {
    Own(Arc<Steward>, Begun),
    Upstream(Arc<UpstreamSteward>, Certified),
}

impl TermCa {
    pub fn signing(&self) -> &SigningCa {
        match self {
            TermCa::Own(_, b) => &b.signing,
            TermCa::Upstream(_, c) => &c.signing,
        }
    }

    /// The term's CA task: renews the signing CA into `signer` until `token` is cancelled.
    pub fn keep(
        self,
        signer: watch::Sender<Arc<Signer>>,
        token: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        match self {
            TermCa::Own(s, Begun { ca, signing }) => Box::pin(s.keep(ca, signing, signer, token)),
            TermCa::Upstream(s, c) => Box::pin(s.keep(c, signer, token)),
        }
    }
}

impl Authority {
    /// A signing CA with its roots published.
    pub async fn begin(&self, token: &CancellationToken) -> Result<TermCa, NotBegun> {
        match self {
            Authority::Own(s) => s.begin(token).await.map(|b| TermCa::Own(s.clone(), b)),
            Authority::Upstream(s) => s.begin(token).await.map(|c| TermCa::Upstream(s.clone(), c)),
        }
    }

    /// A signer for `signing` under the operator's policy.
    pub fn signer(&self, signing: &SigningCa) -> Arc<Signer> {
        match self {
            Authority::Own(s) => s.signer(signing),
            Authority::Upstream(s) => s.signer(signing),
        }
    }

    pub fn end_term(&self) {
        match self {
            Authority::Own(s) => s.end_term(),
            Authority::Upstream(s) => s.end_term(),
        }
    }
}
