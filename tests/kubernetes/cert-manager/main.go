// Command cert-manager-controller runs the part of cert-manager's controller that issues
// CertificateRequests from a CA Issuer or ClusterIssuer: the issuers and clusterissuers
// controllers (which mark a CA issuer Ready once its Secret holds a usable CA), the CA
// CertificateRequest controller (which signs), and — unless --no-approver — the approver,
// which approves every request for cert-manager.io's own issuers, as in a default install.
//
// It is built from cert-manager's Go module (pkg/controller), the same controllers
// cert-manager's controller binary registers; the binary's own main lives in a module of
// its own that the proxy does not serve, so this is the few lines of it the tests need: no
// leader election, ACME, Gateway or metrics server. Stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cert-manager/cert-manager/pkg/controller"
	"golang.org/x/sync/errgroup"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	clusterNamespace := flag.String("cluster-resource-namespace", "cert-manager", "namespace of ClusterIssuers' Secrets")
	noApprover := flag.Bool("no-approver", false, "leave CertificateRequests unapproved (someone else approves or denies)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *kubeconfig, *clusterNamespace, !*noApprover); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterNamespace string, approver bool) error {
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   100,
		KubernetesAPIBurst: 200,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: clusterNamespace},
	})
	if err != nil {
		return err
	}
	cctx, err := factory.Build()
	if err != nil {
		return err
	}
	enabled := []string{"issuers", "clusterissuers", "certificaterequests-issuer-ca"}
	if approver {
		enabled = append(enabled, "certificaterequests-approver")
	}
	known := controller.Known()
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range enabled {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("cert-manager registers no controller %q", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		g.Go(func() error { return c.Run(2, ctx) })
	}
	cctx.SharedInformerFactory.Start(ctx.Done())
	cctx.KubeSharedInformerFactory.Start(ctx.Done())
	fmt.Fprintln(os.Stderr, "cert-manager-controller: running", enabled)
	return g.Wait()
}
