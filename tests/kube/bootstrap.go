package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// SignerNamespace and SignerServiceAccount name the identity csr-signer runs as. It gets no permissions
// here: tests bind it to the RBAC the Helm chart renders, so a missing or excess rule shows.
const (
	SignerNamespace      = "csr-signer"
	SignerServiceAccount = "csr-signer"
	tokenLifetime        = 24 * time.Hour
)

// identities are the kubeconfig users: static-token people plus service accounts with real tokens.
type identities struct {
	tokens map[string]string // context name -> bearer token
}

const certs = "certificates.k8s.io"

// The same people as `csr-signer dev`'s local API (crates/localapi/src/auth.rs default_users), so one test can run
// against either server.
var clusterRoles = []struct {
	name     string
	rules    []rbacv1.PolicyRule
	subjects []rbacv1.Subject
}{
	{
		name: "csr-requester",
		rules: []rbacv1.PolicyRule{{APIGroups: []string{certs}, Resources: []string{"certificatesigningrequests"},
			Verbs: []string{"create", "get", "list", "watch"}}},
		subjects: []rbacv1.Subject{
			{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "developer"},
			{Kind: rbacv1.ServiceAccountKind, Namespace: "team-a", Name: "app"},
			{Kind: rbacv1.ServiceAccountKind, Namespace: "team-b", Name: "app"},
		},
	},
	{
		name: "csr-approver",
		rules: []rbacv1.PolicyRule{
			{APIGroups: []string{certs}, Resources: []string{"certificatesigningrequests"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{certs}, Resources: []string{"certificatesigningrequests/approval"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{certs}, Resources: []string{"signers"}, ResourceNames: []string{"example.com/*"}, Verbs: []string{"approve"}},
		},
		subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "approver"}},
	},
}

var serviceAccounts = []struct{ context, namespace, name string }{
	{"team-a", "team-a", "app"},
	{"team-b", "team-b", "app"},
	{"signer", SignerNamespace, SignerServiceAccount},
}

func bootstrap(ctx context.Context, server string, p *PKI) (*identities, error) {
	client, err := kubernetes.NewForConfig(&rest.Config{
		Host: server, BearerToken: p.AdminToken, TLSClientConfig: rest.TLSClientConfig{CAFile: p.ServingCAFile},
		QPS: 100, Burst: 200,
	})
	if err != nil {
		return nil, err
	}
	id := &identities{tokens: map[string]string{}}
	for _, u := range staticUsers {
		name := u.name
		if name == "system:node:node-1" {
			name = "node-1"
		}
		id.tokens[name] = p.Tokens[u.name]
	}
	for _, sa := range serviceAccounts {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sa.namespace}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name, Namespace: sa.namespace}}
		if _, err := client.CoreV1().ServiceAccounts(sa.namespace).Create(ctx, acct, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		seconds := int64(tokenLifetime.Seconds())
		tr, err := client.CoreV1().ServiceAccounts(sa.namespace).CreateToken(ctx, sa.name,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("token for %s/%s: %w", sa.namespace, sa.name, err)
		}
		id.tokens[sa.context] = tr.Status.Token
	}
	for _, cr := range clusterRoles {
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: cr.name}, Rules: cr.rules}
		if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: cr.name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.name},
			Subjects:   cr.subjects,
		}
		if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	return id, nil
}

func writeKubeconfig(path, server, caFile string, id *identities) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kube"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	for name, tok := range id.tokens {
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "kube", AuthInfo: name}
	}
	cfg.CurrentContext = "admin"
	return clientcmd.WriteToFile(*cfg, path)
}

// startKCM starts kube-controller-manager as a child process (this binary, subcommand
// kube-controller-manager) with only the CSR controllers, signing kubernetes.io/* CSRs with one CA.
func startKCM(o Options, p *PKI, kubeconfig string) (*exec.Cmd, error) {
	cert, key := o.KCMSigningCert, o.KCMSigningKey
	if cert == "" {
		ca, caKey, err := newCA("csr-signer test control plane kubernetes.io signers CA")
		if err != nil {
			return nil, err
		}
		cert, key = filepath.Join(o.Dir, "pki", "kcm-signing.crt"), filepath.Join(o.Dir, "pki", "kcm-signing.key")
		if err := os.WriteFile(cert, certPEM(ca), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(key, keyPEM(caKey), 0o600); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{
		"kube-controller-manager",
		"--kubeconfig=" + kubeconfig,
		"--controllers=csrsigning,csrapproving,csrcleaner",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--cluster-signing-cert-file=" + cert,
		"--cluster-signing-key-file=" + key,
		"--v=1",
	}
	args = append(args, o.KCMArgs...)
	cmd := exec.Command(self, args...)
	log, err := os.Create(filepath.Join(o.Dir, "kube-controller-manager.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	// The child dies with us even on SIGKILL.
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}
