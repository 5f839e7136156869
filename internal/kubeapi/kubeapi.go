// Package kubeapi prepares and starts a real kube-apiserver (built from the
// Kubernetes release by tools/kube) for weft's Kubernetes-mode tests and
// lab: its certificates and keys, its flags, readiness, kubeconfigs and
// service-account tokens.
package kubeapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Files are an API server's certificates, keys and admin token, in Dir.
type Files struct {
	Dir        string
	CA         string // CA certificate: clients verify the server with it
	Cert, Key  string // the server's serving certificate and key
	SAKey      string // service-account token signing key
	Tokens     string // static token file: the admin's token
	AdminToken string
}

// Prepare writes a fresh CA, a serving certificate for ips (and
// localhost), a service-account signing key and an admin token into dir.
func Prepare(dir string, ips []netip.Addr) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f := &Files{Dir: dir, CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "apiserver.crt"),
		Key: filepath.Join(dir, "apiserver.key"), SAKey: filepath.Join(dir, "sa.key"), Tokens: filepath.Join(dir, "tokens.csv")}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft-kube-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create the CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, ip := range ips {
		srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip.AsSlice())
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create the serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	f.AdminToken = "weft-admin-" + hex.EncodeToString(tok)
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	if err := writePEM(f.Cert, "CERTIFICATE", srvDER); err != nil {
		return nil, err
	}
	for path, k := range map[string]*ecdsa.PrivateKey{f.Key: srvKey, f.SAKey: saKey} {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := writePEM(path, "EC PRIVATE KEY", der); err != nil {
			return nil, err
		}
	}
	// token,user,uid,"groups"
	line := fmt.Sprintf("%s,weft-admin,weft-admin,\"system:masters\"\n", f.AdminToken)
	if err := os.WriteFile(f.Tokens, []byte(line), 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// Args are kube-apiserver's flags for a server on bind:port that stores in
// etcdURL and authorizes with RBAC.
func (f *Files) Args(etcdURL string, bind netip.Addr, port int) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + bind.String(),
		"--advertise-address=" + bind.String(),
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + f.Cert,
		"--tls-private-key-file=" + f.Key,
		"--cert-dir=" + f.Dir,
		"--token-auth-file=" + f.Tokens,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + f.SAKey,
		"--service-account-signing-key-file=" + f.SAKey,
		// Services are never created here; the range is only required.
		"--service-cluster-ip-range=10.96.0.0/24",
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--endpoint-reconciler-type=none",
	}
}

// URL is the server's address for clients.
func URL(bind netip.Addr, port int) string {
	return "https://" + net.JoinHostPort(bind.String(), strconv.Itoa(port))
}

// Config is a client config for server with token, dialing with dial.
func (f *Files) Config(server, token string, dial DialFunc) *rest.Config {
	return &rest.Config{Host: server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAFile: f.CA},
		QPS: 200, Burst: 400, Dial: dial}
}

// DialFunc opens connections; nil means the default dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// WaitReady polls /readyz until the server answers ok, or alive reports
// that its process is gone.
func (f *Files) WaitReady(ctx context.Context, server string, dial DialFunc, timeout time.Duration, alive func() error) error {
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: dial}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer yet")
	for time.Now().Before(deadline) {
		if err := alive(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+f.AdminToken)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("/readyz: %s", resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver at %s is not ready after %s: %w", server, timeout, last)
}

// WriteKubeconfig writes a kubeconfig for server with token.
func (f *Files) WriteKubeconfig(path, server, token string) error {
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weft"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["weft"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["weft"] = &clientcmdapi.Context{Cluster: "weft", AuthInfo: "weft"}
	cfg.CurrentContext = "weft"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}

// FreePort returns a TCP port that was free on addr a moment ago.
func FreePort(addr netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
