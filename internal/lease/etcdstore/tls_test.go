package etcdstore

import (
	"context"
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
	"testing"
	"time"

	"github.com/weftnet/weft/internal/etcdserver"
	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, and returns their paths.
func pki(t *testing.T) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kd)
	}
	ca = write("ca.crt", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
}

// TestTLSClientCertificates runs the embedded store with mutual TLS: the
// agent's options with a client certificate work, and without one fail.
func TestTLSClientCertificates(t *testing.T) {
	ca, srvCert, srvKey, cliCert, cliKey := pki(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", etcdservertest.FreePort(t))
	srv, err := etcdserver.Start(context.Background(), etcdserver.Options{
		DataDir: t.TempDir(), ClientURLs: []string{url}, PeerURL: fmt.Sprintf("http://127.0.0.1:%d", etcdservertest.FreePort(t)),
		CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(Options{Endpoints: []string{url}, CAFile: ca, CertFile: cliCert, KeyFile: cliKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutConfig(ctx, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	noCert, err := New(Options{Endpoints: []string{url}, CAFile: ca}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if _, err := noCert.Config(short); err == nil {
		t.Fatal("the store accepted a client without a certificate")
	}
}

// TestPasswordAuth enables etcd's authentication and connects with the
// agent's username and password options.
func TestPasswordAuth(t *testing.T) {
	url := embedded(t)
	admin := client(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.UserAdd(ctx, "root", "r00t-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Endpoints: []string{url}, Username: "root", Password: "r00t-pw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutConfig(ctx, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatalf("with the right password: %v", err)
	}
	bad, err := New(Options{Endpoints: []string{url}, Username: "root", Password: "wrong"}, nil)
	if err == nil {
		defer bad.Close()
		if _, err := bad.Config(ctx); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
}
