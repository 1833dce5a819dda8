//! The real-cluster tier: the podcert-signer binary against the real kube-apiserver and etcd
//! (built from Go modules by `scripts/build-kubernetes`), with requests filed by the kubelet's
//! own pod-certificate code (`podcert-kubelet`) of each release, one file per theme. The
//! signer runs as the shipped manifests run it: their RBAC, their Deployment's arguments and
//! ConfigMap, a ServiceAccount token. The double's tier (`tests/e2e`) covers what only a double
//! can inject; this tier proves the same behaviour where Kubernetes itself is the judge.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod hostile;
mod identity;
mod issuance;
mod leadership;
mod manifests;
mod metrics;
mod rbac;
mod restarts;
mod status;
mod storage;
mod upstream;
mod upstream_vault;
