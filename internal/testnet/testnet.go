// Package testnet holds what the tests and benchmarks of several modules
// share: for loopback servers, a TLS configuration quick to set up
// thousands of connections with and a raised open-file limit; a running
// Coordinator for the exit benchmarks; and Streams, a server of long-lived
// work for the exporters' tests of departures.
package testnet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"time"
)

var (
	tlsOnce              sync.Once
	serverTLS, clientTLS *tls.Config
)

// TLS returns a server configuration with an ECDSA certificate for
// 127.0.0.1, quick to handshake with, and a client configuration that
// trusts it and resumes sessions: thousands of connections are set up in
// seconds. The certificate is made once per process; the configurations
// are fresh clones, since net/http adds to a configuration's NextProtos.
func TLS() (server, client *tls.Config) {
	tlsOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "lameduck test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IsCA:         true, BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		serverTLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}
		clientTLS = &tls.Config{RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	})
	return serverTLS.Clone(), clientTLS.Clone()
}
