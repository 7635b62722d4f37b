package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is long enough for any dev or test run; the PKI is thrown away by `cluster down`.
const certValidity = 365 * 24 * time.Hour

// keyPair is a certificate and its private key, PEM-encoded (PKCS#8 keys, which every TLS
// stack we talk to — Go, rustls — reads).
type keyPair struct {
	CertPEM, KeyPEM []byte
	cert            *x509.Certificate
	key             crypto.Signer
}

// clientIdentity is a user of the test cluster, authenticated by a client certificate:
// the certificate's CN is the user name and its O entries are the groups.
type clientIdentity struct {
	Name   string
	Groups []string
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func newCA(commonName string) (*keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM, cert: cert, key: key}, nil
}

// issue signs a leaf certificate: a server certificate when hosts or ips are given, a
// client certificate otherwise.
func (ca *keyPair) issue(subject pkix.Name, hosts []string, ips []net.IP) (*keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if len(hosts) > 0 || len(ips) > 0 {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		DNSNames:     hosts,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	return &keyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

func (kp *keyPair) write(dir, name string) error {
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), kp.CertPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), kp.KeyPEM, 0o600)
}

// The files (<name>.crt, <name>.key in the pki directory) of the CA that signs the API
// server's webhook client certificate, and of that certificate.
const (
	webhookClientCA   = "webhook-client-ca"
	webhookClientCert = "webhook-client"
)

// pki is everything the control plane and its users authenticate with.
type pki struct {
	CA        *keyPair
	APIServer *keyPair
	Clients   map[string]*keyPair
}

// newPKI creates a CA, the API server's serving certificate (for 127.0.0.1 and the
// in-cluster names), the fake node's kubelet serving certificate (for 127.0.0.1, where
// KWOK serves the kubelet API) and one client certificate per identity, and writes them
// to dir.
// It also writes the service-account signing key (sa.key) and its public half (sa.pub).
func newPKI(dir string, identities []clientIdentity) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := newCA("guildnet-testcluster-ca")
	if err != nil {
		return nil, err
	}
	server, err := ca.issue(pkix.Name{CommonName: "kube-apiserver"},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")})
	if err != nil {
		return nil, err
	}
	kubelet, err := ca.issue(pkix.Name{CommonName: "system:node:" + fakeNodeName},
		[]string{"localhost", fakeNodeName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	p := &pki{CA: ca, APIServer: server, Clients: map[string]*keyPair{}}
	for _, id := range identities {
		kp, err := ca.issue(pkix.Name{CommonName: id.Name, Organization: id.Groups}, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("client certificate for %s: %w", id.Name, err)
		}
		p.Clients[id.Name] = kp
	}
	if err := ca.write(dir, "ca"); err != nil {
		return nil, err
	}
	if err := server.write(dir, "apiserver"); err != nil {
		return nil, err
	}
	if err := kubelet.write(dir, "kubelet"); err != nil {
		return nil, err
	}
	// The API server's client certificate for calling admission webhooks, from a CA of its
	// own: a webhook that trusts only this CA is called by the API server and nobody else
	// (users' client certificates come from the cluster CA).
	webhookCA, err := newCA("guildnet-webhook-client-ca")
	if err != nil {
		return nil, err
	}
	webhookClient, err := webhookCA.issue(pkix.Name{CommonName: "kube-apiserver"}, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := webhookCA.write(dir, webhookClientCA); err != nil {
		return nil, err
	}
	if err := webhookClient.write(dir, webhookClientCert); err != nil {
		return nil, err
	}
	saKey, saKeyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), saKeyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}
