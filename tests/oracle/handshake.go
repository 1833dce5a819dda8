package main

// The handshake mode: Go's crypto/tls as a SPIFFE workload uses it. Each case is one mutual
// TLS handshake over loopback TCP: the server presents one SVID, the client another,
// and each side verifies the other the way go-spiffe's tlsconfig does — no host name
// (SVIDs carry none), the chain verified by crypto/x509 against the trust bundle, here with
// the extended key usage of the peer's role (serverAuth for the server, clientAuth for the
// client), then the SPIFFE ID read from the leaf's single URI SAN and compared with the
// expected one.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Party is one side of a handshake: its chain (leaf first) and key as PEM, and the SPIFFE
// ID its peer must see.
type Party struct {
	ChainPEM string `json:"chain_pem"`
	KeyPEM   string `json:"key_pem"`
	ID       string `json:"spiffe_id"`
}

// HandshakeCase is one cell of the interop matrix.
type HandshakeCase struct {
	Name     string `json:"name"`
	Server   Party  `json:"server"`
	Client   Party  `json:"client"`
	RootsPEM string `json:"roots_pem"`
}

// spiffeID is the leaf's single URI SAN, which must be a spiffe:// URI.
func spiffeID(leaf *x509.Certificate) (string, error) {
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("an X.509-SVID has exactly one URI SAN, this one %d", len(leaf.URIs))
	}
	if leaf.URIs[0].Scheme != "spiffe" {
		return "", fmt.Errorf("the URI SAN %q is not a SPIFFE ID", leaf.URIs[0])
	}
	return leaf.URIs[0].String(), nil
}

// peerVerifier checks the peer's chain against roots for usage, then its SPIFFE ID.
func peerVerifier(roots *x509.CertPool, usage x509.ExtKeyUsage, want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer presented no certificate")
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		intermediates := x509.NewCertPool()
		for _, c := range certs[1:] {
			intermediates.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		id, err := spiffeID(certs[0])
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("the peer is %s, not %s", id, want)
		}
		return nil
	}
}

// handshakeOne runs one mutual handshake; "" when both sides accepted.
func handshakeOne(c HandshakeCase) string {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(c.RootsPEM)) {
		return "roots: no certificate in the trust bundle"
	}
	serverCert, err := tls.X509KeyPair([]byte(c.Server.ChainPEM), []byte(c.Server.KeyPEM))
	if err != nil {
		return "server key pair: " + err.Error()
	}
	clientCert, err := tls.X509KeyPair([]byte(c.Client.ChainPEM), []byte(c.Client.KeyPEM))
	if err != nil {
		return "client key pair: " + err.Error()
	}
	server := &tls.Config{
		Certificates:          []tls.Certificate{serverCert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: peerVerifier(roots, x509.ExtKeyUsageClientAuth, c.Client.ID),
	}
	client := &tls.Config{
		Certificates:          []tls.Certificate{clientCert},
		InsecureSkipVerify:    true, // no host name: the SPIFFE ID is checked instead
		VerifyPeerCertificate: peerVerifier(roots, x509.ExtKeyUsageServerAuth, c.Server.ID),
	}
	// Loopback TCP, not net.Pipe: a pipe has no buffer, so a side that writes an alert or a
	// session ticket while the other writes too would block both.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "listen: " + err.Error()
	}
	defer listener.Close()
	deadline := time.Now().Add(10 * time.Second)
	serverErr := make(chan error, 1)
	go func() {
		raw, err := listener.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		_ = raw.SetDeadline(deadline)
		conn := tls.Server(raw, server)
		err = conn.Handshake()
		if err == nil {
			// In TLS 1.3 the client's certificate is judged with its Finished: read what it sends.
			_, err = conn.Read(make([]byte, 1))
		}
		serverErr <- err
		_ = conn.Close()
	}()
	raw, err := net.DialTimeout("tcp", listener.Addr().String(), 10*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	_ = raw.SetDeadline(deadline)
	conn := tls.Client(raw, client)
	clientErr := conn.Handshake()
	if clientErr == nil {
		_, clientErr = conn.Write([]byte{'x'})
	}
	sErr := <-serverErr
	_ = conn.Close()
	var problems []string
	if clientErr != nil {
		problems = append(problems, "client: "+clientErr.Error())
	}
	if sErr != nil {
		problems = append(problems, "server: "+sErr.Error())
	}
	return strings.Join(problems, "; ")
}

func handshakes() error {
	var cases []HandshakeCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		return err
	}
	out := make([]Verdict, 0, len(cases))
	for _, c := range cases {
		out = append(out, Verdict{Name: c.Name, Error: handshakeOne(c)})
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
