package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is the control plane's own key material, all under DIR/pki.
type PKI struct {
	ServingCAFile      string // trust anchor for the apiserver's serving certificate
	ServingCertFile    string
	ServingKeyFile     string
	ClientCAFile       string // CA of the harness's client certificates
	ClientCAKeyFile    string // its key, so tests can mint client certificates
	ClientCABundleFile string // --client-ca-file: ClientCAFile plus --extra-client-ca
	SAKeyFile          string
	TokenFile          string
	AuditPolicyFile    string
	AdminToken         string
	Tokens             map[string]string // static-token users by name
	clientCA           *x509.Certificate
	clientCAKey        crypto.Signer
}

// staticUsers are the people of the test cluster (token file users); their RBAC is set up by bootstrap.
var staticUsers = []struct{ name, groups string }{
	{"admin", "system:masters"},
	{"developer", ""},
	{"approver", ""},
	{"system:node:node-1", "system:nodes"},
}

func writePKI(dir, extraClientCA string) (*PKI, error) {
	d := filepath.Join(dir, "pki")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{
		ServingCAFile: filepath.Join(d, "serving-ca.crt"), ServingCertFile: filepath.Join(d, "serving.crt"),
		ServingKeyFile: filepath.Join(d, "serving.key"), ClientCAFile: filepath.Join(d, "client-ca.crt"),
		ClientCAKeyFile: filepath.Join(d, "client-ca.key"), ClientCABundleFile: filepath.Join(d, "client-ca-bundle.crt"),
		SAKeyFile: filepath.Join(d, "service-account.key"), TokenFile: filepath.Join(d, "tokens.csv"),
		AuditPolicyFile: filepath.Join(d, "audit-policy.yaml"),
		Tokens:          map[string]string{},
	}

	servingCA, servingCAKey, err := newCA("csr-signer test control plane serving CA")
	if err != nil {
		return nil, err
	}
	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	servingTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serving, err := sign(servingTmpl, servingKey.Public(), servingCA, servingCAKey)
	if err != nil {
		return nil, err
	}
	if p.clientCA, p.clientCAKey, err = newCA("csr-signer test control plane client CA"); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}

	bundle := certPEM(p.clientCA)
	if extraClientCA != "" {
		extra, err := os.ReadFile(extraClientCA)
		if err != nil {
			return nil, fmt.Errorf("--extra-client-ca: %w", err)
		}
		if block, _ := pem.Decode(extra); block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--extra-client-ca %s: no CERTIFICATE PEM block", extraClientCA)
		}
		bundle = append(bundle, extra...)
	}

	tokens := ""
	for i, u := range staticUsers {
		tok := randomToken()
		p.Tokens[u.name] = tok
		// An empty quoted groups column would make kube-apiserver add a group named "".
		if u.groups == "" {
			tokens += fmt.Sprintf("%s,%s,uid-%d\n", tok, u.name, i)
		} else {
			tokens += fmt.Sprintf("%s,%s,uid-%d,\"%s\"\n", tok, u.name, i, u.groups)
		}
	}
	p.AdminToken = p.Tokens["admin"]

	files := []struct {
		path string
		data []byte
	}{
		{p.ServingCAFile, certPEM(servingCA)},
		{p.ServingCertFile, certPEM(serving)},
		{p.ServingKeyFile, keyPEM(servingKey)},
		{p.ClientCAFile, certPEM(p.clientCA)},
		{p.ClientCAKeyFile, keyPEM(p.clientCAKey)},
		{p.ClientCABundleFile, bundle},
		{p.SAKeyFile, ecKeyPEM(saKey)},
		{p.TokenFile, []byte(tokens)},
		{p.AuditPolicyFile, []byte(auditPolicy)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// auditPolicy records each request once, when its response is complete, without bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
`

func newCA(cn string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// sign issues tmpl for pub, valid from an hour ago for a year.
func sign(tmpl *x509.Certificate, pub crypto.PublicKey, ca *x509.Certificate, caKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // only ECDSA keys generated above reach here
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ecKeyPEM writes SEC1 ("EC PRIVATE KEY"): --service-account-key-file reads public keys from private
// keys only in the RSA/EC-specific forms, not PKCS#8.
func ecKeyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
