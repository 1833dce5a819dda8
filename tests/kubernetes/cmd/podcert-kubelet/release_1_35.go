//go:build !kubernetes_1_37

// The 1.35 and 1.36 kubelets: PodCertificateRequests through certificates.k8s.io/v1beta1
// (1.35 writes pkixPublicKey + proofOfPossession, 1.36 a stub PKCS#10 request), and a
// ClusterTrustBundle manager whose lookups take no context.
package main

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/kubernetes/pkg/kubelet/clustertrustbundle"
	"k8s.io/kubernetes/pkg/kubelet/podcertificate"
)

func newIssuingManager(client kubernetes.Interface, pods podcertificate.PodManager, recorder record.EventRecorder, pcrs, nodes informers.SharedInformerFactory, node types.NodeName, clk *steppedClock) *podcertificate.IssuingManager {
	return podcertificate.NewIssuingManager(client, pods, recorder,
		pcrs.Certificates().V1beta1().PodCertificateRequests(), nodes.Core().V1().Nodes(), node, clk)
}

type trustBundles struct{ m clustertrustbundle.Manager }

func newTrustBundles(ctx context.Context, client kubernetes.Interface) trustBundleSource {
	return trustBundles{clustertrustbundle.NewLazyInformerManager(ctx, client, 256)}
}

func (t trustBundles) byName(_ context.Context, name string, allowMissing bool) ([]byte, error) {
	return t.m.GetTrustAnchorsByName(name, allowMissing)
}

func (t trustBundles) bySigner(_ context.Context, signer string, selector *metav1.LabelSelector, allowMissing bool) ([]byte, error) {
	return t.m.GetTrustAnchorsBySigner(signer, selector, allowMissing)
}
