// Command oracle is the Go side of podcert-signer's cross-implementation tests. It uses only
// Go's standard library, which is what the kubelet and kube-apiserver use, so it is an
// independent judge of our Rust code:
//
//	oracle keys          writes JSON fixtures to stdout: keys, proofs of possession and stub
//	                     CSRs made exactly as the kubelet makes them (SPEC.md §3)
//	oracle prove         reads [{pkcs8_der, pod_uid}] as JSON on stdin and writes the kubelet's
//	                     proof of possession for each (base64 in JSON, like all bytes here)
//	oracle csr           reads [{pkcs8_der, signature_algorithm}] and writes, for each, an
//	                     empty stub CSR made by x509.CreateCertificateRequest with that
//	                     algorithm (a Go SignatureAlgorithm name, e.g. "ECDSA-SHA512")
//	oracle read-csr      reads [der] and writes, for each, how Go reads it: whether
//	                     ParseCertificateRequest and CheckSignature accept it (the API
//	                     server's admission) and how many subject RDNs, attributes and
//	                     extensions it sees
//	oracle verify        reads issued chains as JSON on stdin, checks each as the API server
//	                     and kubelet would (crypto/x509 parse + Verify, SPEC.md §4 and §7), and
//	                     writes one JSON verdict per chain
//	oracle handshake     reads interop cases (two SVIDs and a trust bundle) and runs a mutual
//	                     crypto/tls handshake for each, verifying peers as go-spiffe does
//	                     (handshake.go); one JSON verdict per case
//
// Regenerate the committed fixtures with:
//
//	cd tests/oracle && go run . keys > ../fixtures/kubelet-keys.json
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// Fixture is one key as a kubelet would hold it, with both proof formats.
type Fixture struct {
	KeyType string `json:"key_type"`
	// Supported is false for key types the API server refuses (RSA2048, ECDSAP224).
	Supported bool   `json:"supported"`
	PodUID    string `json:"pod_uid"`
	SPKI      []byte `json:"spki_der"`
	Proof     []byte `json:"proof"`
	CSR       []byte `json:"stub_csr_der"`
	// NonEmptyCSR is signed by the same key but carries a subject, a DNS SAN and a URI SAN.
	NonEmptyCSR []byte `json:"non_empty_csr_der"`
	PKCS8       []byte `json:"pkcs8_der"`
}

func genKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "ED25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "ECDSAP224":
		return ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ECDSAP256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ECDSAP384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ECDSAP521":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "RSA2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "RSA3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "RSA4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", keyType)
}

// proofOfPossession signs the pod UID as the 1.34/1.35 kubelet does.
func proofOfPossession(key crypto.Signer, podUID string) ([]byte, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, []byte(podUID)), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256([]byte(podUID))
		return ecdsa.SignASN1(rand.Reader, k, h[:])
	case *rsa.PrivateKey:
		h := sha256.Sum256([]byte(podUID))
		// nil options: PSSSaltLengthAuto, the maximum salt, as the kubelet signs.
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, h[:], nil)
	}
	return nil, fmt.Errorf("unsupported key %T", key)
}

func keys() error {
	var out []Fixture
	for _, kt := range []string{"ED25519", "ECDSAP256", "ECDSAP384", "ECDSAP521", "RSA3072", "RSA4096", "RSA2048", "ECDSAP224"} {
		key, err := genKey(kt)
		if err != nil {
			return err
		}
		spki, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return err
		}
		podUID := fmt.Sprintf("%x-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffff, len(out))
		proof, err := proofOfPossession(key, podUID)
		if err != nil {
			return err
		}
		// The 1.36 kubelet: an empty template, Go's default algorithm for the key.
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return err
		}
		nonEmpty, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: "admin"},
			DNSNames: []string{"evil.example.com"},
		}, key)
		if err != nil {
			return err
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		supported := kt != "RSA2048" && kt != "ECDSAP224"
		out = append(out, Fixture{kt, supported, podUID, spki, proof, csr, nonEmpty, pkcs8})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}

// Issued is one chain to judge.
type Issued struct {
	Name                 string `json:"name"`
	ChainPEM             string `json:"chain_pem"`
	RootsPEM             string `json:"roots_pem"`
	SPKI                 []byte `json:"spki_der"`
	SpiffeID             string `json:"spiffe_id"`
	NotBefore            int64  `json:"not_before"`
	NotAfter             int64  `json:"not_after"`
	BeginRefreshAt       int64  `json:"begin_refresh_at"`
	MaxExpirationSeconds int64  `json:"max_expiration_seconds"`
	// At is the Unix time to verify at (0: now), for chains issued on a compressed clock.
	At int64 `json:"at"`
	// DNSNames and IPs are the names expected beside the SPIFFE ID (an identity-policy rule
	// asking for Service DNS names and pod IPs); none by default.
	DNSNames []string `json:"dns_names"`
	IPs      []string `json:"ips"`
}

// Verdict is the oracle's answer for one chain: Error is empty when every check passed.
type Verdict struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

func judge(in Issued) error {
	var chain []*x509.Certificate
	rest := []byte(in.ChainPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || len(b.Headers) != 0 {
			return fmt.Errorf("PEM block %q with headers %v", b.Type, b.Headers)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		chain = append(chain, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 || len(chain) == 0 {
		return fmt.Errorf("chain is not only CERTIFICATE blocks")
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(in.RootsPEM)) {
		return fmt.Errorf("no roots")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			return fmt.Errorf("chain contains a root")
		}
		inter.AddCert(c)
	}
	leaf := chain[0]
	now := time.Now()
	if in.At != 0 {
		now = time.Unix(in.At, 0)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now,
	}); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	// SPEC §4: the leaf key is the requested key.
	got, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil || !bytes.Equal(got, in.SPKI) {
		return fmt.Errorf("leaf public key differs from the requested key")
	}
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, in.SPKI) {
		return fmt.Errorf("leaf SubjectPublicKeyInfo bytes differ from the request")
	}
	if leaf.NotBefore.Unix() != in.NotBefore || leaf.NotAfter.Unix() != in.NotAfter {
		return fmt.Errorf("times: leaf %v..%v, status %d..%d", leaf.NotBefore, leaf.NotAfter, in.NotBefore, in.NotAfter)
	}
	if d := now.Sub(leaf.NotBefore); d < 0 || d > 5*time.Minute {
		return fmt.Errorf("notBefore %v is not within 5 minutes before now", leaf.NotBefore)
	}
	life := in.NotAfter - in.NotBefore
	if life < 3600 || life > in.MaxExpirationSeconds {
		return fmt.Errorf("lifetime %ds outside [3600, %d]", life, in.MaxExpirationSeconds)
	}
	if in.BeginRefreshAt < in.NotBefore+600 || in.BeginRefreshAt > in.NotAfter-600 {
		return fmt.Errorf("beginRefreshAt %d outside the window", in.BeginRefreshAt)
	}
	// SPEC §7: one URI SAN, the SPIFFE ID; no other names; a leaf, not a CA.
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != in.SpiffeID {
		return fmt.Errorf("URI SANs %v, want [%s]", leaf.URIs, in.SpiffeID)
	}
	if len(leaf.EmailAddresses) != 0 || fmt.Sprint(leaf.DNSNames) != fmt.Sprint(in.DNSNames) {
		return fmt.Errorf("DNS SANs %v, want %v (and no email SANs)", leaf.DNSNames, in.DNSNames)
	}
	ips := make([]string, 0, len(leaf.IPAddresses))
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if fmt.Sprint(ips) != fmt.Sprint(in.IPs) {
		return fmt.Errorf("IP SANs %v, want %v", ips, in.IPs)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		return fmt.Errorf("leaf is not CA:FALSE")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return fmt.Errorf("key usage %b", leaf.KeyUsage)
	}
	var server, client bool
	for _, u := range leaf.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !server || !client {
		return fmt.Errorf("EKU %v lacks serverAuth or clientAuth", leaf.ExtKeyUsage)
	}
	if len(leaf.RawSubject) != 2 { // an empty SEQUENCE
		return fmt.Errorf("subject is not empty")
	}
	if leaf.SerialNumber.Sign() <= 0 || len(leaf.SerialNumber.Bytes()) > 20 {
		return fmt.Errorf("serial %v", leaf.SerialNumber)
	}
	if len(leaf.AuthorityKeyId) == 0 || len(leaf.SubjectKeyId) == 0 {
		return fmt.Errorf("missing AKI or SKI")
	}
	return nil
}

func verify() error {
	var in []Issued
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return err
	}
	out := make([]Verdict, 0, len(in))
	for _, c := range in {
		v := Verdict{Name: c.Name}
		if err := judge(c); err != nil {
			v.Error = err.Error()
		}
		out = append(out, v)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// ProveInput is one proof to make.
type ProveInput struct {
	PKCS8  []byte `json:"pkcs8_der"`
	PodUID string `json:"pod_uid"`
}

func prove() error {
	var in []ProveInput
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return err
	}
	out := make([][]byte, 0, len(in))
	for _, p := range in {
		key, err := x509.ParsePKCS8PrivateKey(p.PKCS8)
		if err != nil {
			return err
		}
		proof, err := proofOfPossession(key.(crypto.Signer), p.PodUID)
		if err != nil {
			return err
		}
		out = append(out, proof)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// CSRInput is one stub CSR to make.
type CSRInput struct {
	PKCS8     []byte `json:"pkcs8_der"`
	Algorithm string `json:"signature_algorithm"`
}

func makeCSRs() error {
	var in []CSRInput
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return err
	}
	byName := map[string]x509.SignatureAlgorithm{}
	for a := x509.MD2WithRSA; a <= x509.PureEd25519; a++ {
		byName[a.String()] = a
	}
	out := make([][]byte, 0, len(in))
	for _, c := range in {
		key, err := x509.ParsePKCS8PrivateKey(c.PKCS8)
		if err != nil {
			return err
		}
		alg, ok := byName[c.Algorithm]
		if !ok {
			return fmt.Errorf("unknown signature algorithm %q", c.Algorithm)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{SignatureAlgorithm: alg}, key)
		if err != nil {
			return fmt.Errorf("%s: %v", c.Algorithm, err)
		}
		out = append(out, der)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// CSRReading is how Go reads one CSR.
type CSRReading struct {
	// Error is empty when ParseCertificateRequest and CheckSignature both accept it.
	Error      string `json:"error"`
	RDNs       int    `json:"rdns"`
	Attributes int    `json:"attributes"`
	Extensions int    `json:"extensions"`
	Algorithm  string `json:"signature_algorithm"`
}

func readCSRs() error {
	var in [][]byte
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return err
	}
	out := make([]CSRReading, 0, len(in))
	for _, der := range in {
		csr, err := x509.ParseCertificateRequest(der)
		if err == nil {
			err = csr.CheckSignature()
		}
		r := CSRReading{}
		if err != nil {
			r.Error = err.Error()
		}
		if csr != nil {
			var subject pkix.RDNSequence
			if _, e := asn1.Unmarshal(csr.RawSubject, &subject); e == nil {
				r.RDNs = len(subject)
			} else {
				r.RDNs = -1
			}
			r.Attributes = len(csr.Attributes)
			r.Extensions = len(csr.Extensions)
			r.Algorithm = csr.SignatureAlgorithm.String()
		}
		out = append(out, r)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func main() {
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "keys":
		err = keys()
	case len(os.Args) == 2 && os.Args[1] == "prove":
		err = prove()
	case len(os.Args) == 2 && os.Args[1] == "csr":
		err = makeCSRs()
	case len(os.Args) == 2 && os.Args[1] == "read-csr":
		err = readCSRs()
	case len(os.Args) == 2 && os.Args[1] == "verify":
		err = verify()
	case len(os.Args) == 2 && os.Args[1] == "handshake":
		err = handshakes()
	default:
		err = fmt.Errorf("usage: oracle keys|prove|csr|read-csr|verify|handshake")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(1)
	}
}
