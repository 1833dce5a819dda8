//go:build kubernetes_1_37

// hermetic-signer: Kubernetes' own reference PodCertificateRequest signer
// (k8s.io/kubernetes/test/utils/hermeticpodcertificatesigner, at the version go.mod pins), run
// as upstream's e2e image runs it (agnhost's podcertificatesigner subcommand): a CA hierarchy
// made at start with one intermediate, the controller started, SIGTERM to stop. It is the peer
// scripts/bench-peers measures podcert-signer against on the same API server.
//
// The one difference from agnhost: --kube-api-qps and --kube-api-burst. client-go's defaults
// (5 requests/s, bursts of 10) cap the signer's writes long before its CPU does; a peer
// measured under them would be measured against its rate limiter. podcert-signer has no
// client-side limit, so the benchmark lifts the peer's too (both flags, as the controllers of
// kube-controller-manager name them).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/test/utils/hermeticpodcertificatesigner"
	"k8s.io/utils/clock"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to the kubeconfig the signer uses")
	signerName := flag.String("signer-name", "", "the signer name to sign PodCertificateRequests for")
	clusterDNSDomain := flag.String("cluster-dns-domain", "", "the cluster DNS domain of the leaves' DNS names")
	qps := flag.Float64("kube-api-qps", 5, "client-side limit on requests per second to kube-apiserver (client-go's default: 5)")
	burst := flag.Int("kube-api-burst", 10, "client-side burst above --kube-api-qps (client-go's default: 10)")
	klog.InitFlags(nil)
	flag.Parse()
	if *signerName == "" {
		fmt.Fprintln(os.Stderr, "hermetic-signer: --signer-name is required")
		os.Exit(2)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hermetic-signer: --kubeconfig %s: %v\n", *kubeconfig, err)
		os.Exit(1)
	}
	cfg.QPS = float32(*qps)
	cfg.Burst = *burst
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hermetic-signer: making the client: %v\n", err)
		os.Exit(1)
	}
	caKeys, caCerts, err := hermeticpodcertificatesigner.GenerateCAHierarchy(1)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hermetic-signer: making the CA: %v\n", err)
		os.Exit(1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		hermeticpodcertificatesigner.New(clock.RealClock{}, *signerName, *clusterDNSDomain, caKeys, caCerts, kc).Run(ctx)
		close(done)
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	cancel()
	<-done
	klog.Flush()
}
