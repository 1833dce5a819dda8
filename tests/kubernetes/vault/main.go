// Command vault-server runs HashiCorp Vault's server core with the two backends
// podcert-signer's upstream-authority tests need: the PKI secrets engine and Kubernetes
// auth. It is Vault's own code (package vault, its HTTP handler, builtin/logical/pki and
// vault-plugin-auth-kubernetes) built from the github.com/hashicorp/vault module; Vault's
// command package would compile every plugin Vault ships, so this is the part of
// `vault server -dev` the tests use: in-memory storage, a Shamir seal initialised and
// unsealed at start, one HTTPS listener. Once it answers, the root token and the unseal
// key are written to --init-file as JSON ({"root_token", "unseal_key"} — the key base64, as
// `vault operator init` prints it), so a test can seal and unseal it as an operator would.
// Stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-kms-wrapping/v2/aead"
	kubeauth "github.com/hashicorp/vault-plugin-auth-kubernetes"
	"github.com/hashicorp/vault/builtin/logical/pki"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
	"github.com/hashicorp/vault/vault/seal"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8200", "address of the HTTPS listener")
	certFile := flag.String("tls-cert", "", "the listener's certificate (PEM)")
	keyFile := flag.String("tls-key", "", "the listener's key (PEM)")
	initFile := flag.String("init-file", "", "where to write the root token and unseal key (JSON)")
	logLevel := flag.String("log-level", "info", "trace, debug, info, warn or error")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *listen, *certFile, *keyFile, *initFile, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "vault-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, certFile, keyFile, initFile, logLevel string) error {
	if certFile == "" || keyFile == "" || initFile == "" {
		return errors.New("--tls-cert, --tls-key and --init-file are required")
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "vault", Level: hclog.LevelFromString(logLevel)})
	storage, err := inmem.NewInmem(nil, logger)
	if err != nil {
		return err
	}
	access, err := seal.NewAccessFromSealWrappers(logger, 1, true, []*seal.SealWrapper{
		seal.NewSealWrapper(aead.NewShamirWrapper(), 1, "shamir", "shamir", false, true),
	})
	if err != nil {
		return err
	}
	backends := registry{
		consts.PluginTypeSecrets:    {"pki": pki.Factory},
		consts.PluginTypeCredential: {"kubernetes": kubeauth.Factory},
	}
	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           storage,
		Seal:               vault.NewDefaultSeal(access),
		Logger:             logger,
		DisableMlock:       true,
		LogicalBackends:    backends[consts.PluginTypeSecrets],
		CredentialBackends: backends[consts.PluginTypeCredential],
		BuiltinRegistry:    backends,
	})
	if err != nil {
		return err
	}
	defer core.Shutdown()
	init, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig: &vault.SealConfig{SecretShares: 1, SecretThreshold: 1, Name: "shamir"},
	})
	if err != nil {
		return fmt.Errorf("initialising: %w", err)
	}
	if unsealed, err := core.Unseal(init.SecretShares[0]); err != nil || !unsealed {
		return fmt.Errorf("unsealing: %v", err)
	}

	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	server := &http.Server{
		Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
			Core:           core,
			ListenerConfig: &configutil.Listener{Address: host},
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- server.ServeTLS(ln, "", "") }()
	keys, err := json.Marshal(map[string]string{
		"root_token": init.RootToken,
		"unseal_key": base64.StdEncoding.EncodeToString(init.SecretShares[0]),
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(initFile+".new", keys, 0o600); err != nil {
		return err
	}
	if err := os.Rename(initFile+".new", initFile); err != nil {
		return err
	}
	logger.Info("serving", "address", ln.Addr().String())
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return server.Shutdown(shutdown)
	}
}

// registry is Vault's builtin plugin registry holding only the backends built in.
type registry map[consts.PluginType]map[string]logical.Factory

func (r registry) Contains(name string, t consts.PluginType) bool {
	_, ok := r[t][name]
	return ok
}

func (r registry) Get(name string, t consts.PluginType) (func() (interface{}, error), bool) {
	f, ok := r[t][name]
	if !ok {
		return nil, false
	}
	return func() (interface{}, error) { return f, nil }, true
}

func (r registry) Keys(t consts.PluginType) []string {
	keys := make([]string, 0, len(r[t]))
	for k := range r[t] {
		keys = append(keys, k)
	}
	return keys
}

func (r registry) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	if r.Contains(name, t) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

func (r registry) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }
