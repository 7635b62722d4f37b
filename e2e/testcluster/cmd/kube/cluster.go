package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The people of the test cluster. admin is a cluster admin; alice and bob are ordinary
// users in guildnet:users, distinct identities so admission sees distinct owners.
var users = []clientIdentity{
	{Name: "guildnet-admin", Groups: []string{"system:masters"}},
	{Name: "alice", Groups: []string{"guildnet:users"}},
	{Name: "bob", Groups: []string{"guildnet:users"}},
}

// contextNames maps kubeconfig context names to the identities above.
var contextNames = map[string]string{"admin": "guildnet-admin", "alice": "alice", "bob": "bob"}

// GuildNet's own components, with the identities their in-cluster ServiceAccounts have, so
// the webhook's defaults (which service accounts may write status) hold unchanged here.
// Each gets a kubeconfig of its own, <dir>/<component>.kubeconfig.
var guildnetComponents = map[string]clientIdentity{
	"operator": {Name: "system:serviceaccount:guildnet-system:guildnet-operator", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:guildnet-system"}},
	"webhook":  {Name: "system:serviceaccount:guildnet-system:guildnet-webhook", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:guildnet-system"}},
	"proxy":    {Name: "system:serviceaccount:guildnet-system:guildnet-proxy", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:guildnet-system"}},
}

// Components authenticate as the identities upstream's default RBAC expects.
var components = []clientIdentity{
	{Name: "system:kube-controller-manager"},
	{Name: "system:kube-scheduler"},
	{Name: "system:kwok-controller", Groups: []string{"system:masters"}},
}

const (
	readyTimeout = 120 * time.Second
	stopTimeout  = 15 * time.Second
	// fakeNodeAnnotation selects the Nodes KWOK manages.
	fakeNodeAnnotation = "kwok.x-k8s.io/node"
	fakeNodeName       = "kwok-node-0"
)

// clusterDirs are the files of one cluster, all below one state directory.
type clusterDirs struct {
	root string
	// The pod CIDR of its one node, from which KWOK gives pods their IPs: clusters side by
	// side get CIDRs of their own, so a pod IP names one pod.
	podCIDR string
}

func (d clusterDirs) pki() string        { return filepath.Join(d.root, "pki") }
func (d clusterDirs) etcd() string       { return filepath.Join(d.root, "etcd") }
func (d clusterDirs) logs() string       { return filepath.Join(d.root, "logs") }
func (d clusterDirs) kubeconfig() string { return filepath.Join(d.root, "kubeconfig") }
func (d clusterDirs) pidFile() string    { return filepath.Join(d.root, "cluster.pid") }
func (d clusterDirs) readyFile() string  { return filepath.Join(d.root, "cluster.ready") }
func (d clusterDirs) tokens() string     { return filepath.Join(d.root, "tokens") }
func (d clusterDirs) podLog() string     { return filepath.Join(d.root, "pod.log") }
func (d clusterDirs) kwokConfig() string { return filepath.Join(d.root, "kwok.yaml") }
func (d clusterDirs) guildnetKubeconfig(component string) string {
	return filepath.Join(d.root, component+".kubeconfig")
}
func (d clusterDirs) componentKubeconfig(name string) string {
	return filepath.Join(d.pki(), strings.ReplaceAll(name, ":", "_")+".kubeconfig")
}

// state is what `cluster down` removes; logs stay for the post-mortem.
func (d clusterDirs) state() []string {
	state := []string{d.pki(), d.etcd(), d.kubeconfig(), d.tokens(), d.podLog(), d.kwokConfig(), d.pidFile(), d.readyFile()}
	for c := range guildnetComponents {
		state = append(state, d.guildnetKubeconfig(c))
	}
	return state
}

func newClusterCommand() *cobra.Command {
	var dir, podCIDR string
	root := &cobra.Command{Use: "cluster", Short: "A local Kubernetes control plane on 127.0.0.1"}
	root.PersistentFlags().StringVar(&dir, "dir", ".guildnet", "state directory (kubeconfig, pki, etcd data, logs)")
	root.PersistentFlags().StringVar(&podCIDR, "pod-cidr", "10.244.0.0/16", "the pod IPs' range (up and run)")
	abs := func() clusterDirs {
		a, err := filepath.Abs(dir)
		if err != nil {
			a = dir
		}
		return clusterDirs{root: a, podCIDR: podCIDR}
	}
	root.AddCommand(
		&cobra.Command{
			Use:   "up",
			Short: "Start the control plane in the background and wait until it is ready",
			RunE:  func(*cobra.Command, []string) error { return clusterUp(abs()) },
		},
		&cobra.Command{
			Use:   "down",
			Short: "Stop the control plane and remove its state",
			RunE:  func(*cobra.Command, []string) error { return clusterDown(abs()) },
		},
		&cobra.Command{
			Use:   "run",
			Short: "Run the control plane in the foreground until SIGTERM or SIGINT",
			RunE:  func(*cobra.Command, []string) error { return clusterRun(abs()) },
		},
	)
	return root
}

// runningPid returns the supervisor's pid when one is alive.
func runningPid(d clusterDirs) (int, bool) {
	b, err := os.ReadFile(d.pidFile())
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil
}

func clusterUp(d clusterDirs) error {
	if pid, alive := runningPid(d); alive {
		if err := waitReady(d, pid, nil, readyTimeout); err != nil {
			return err
		}
		fmt.Printf("control plane already running (pid %d)\nexport KUBECONFIG=%s\n", pid, d.kubeconfig())
		return nil
	}
	if err := removeState(d); err != nil {
		return err
	}
	if err := os.MkdirAll(d.logs(), 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(d.logs(), "cluster.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "cluster", "run", "--dir", d.root, "--pod-cidr", d.podCIDR)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: the control plane outlives this command and the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	start := time.Now()
	if err := waitReady(d, pid, exited, readyTimeout); err != nil {
		_ = clusterDown(d)
		return fmt.Errorf("%w (see %s)", err, logFile.Name())
	}
	fmt.Printf("control plane ready in %.1fs (pid %d)\nexport KUBECONFIG=%s\n", time.Since(start).Seconds(), pid, d.kubeconfig())
	return nil
}

// waitReady waits for the supervisor to report ready, failing early if it exits (exited
// is closed when the supervisor is our child; otherwise its pid is polled).
func waitReady(d clusterDirs, pid int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(d.readyFile()); err == nil {
			return nil
		}
		if syscall.Kill(pid, 0) != nil {
			return fmt.Errorf("control plane exited before it was ready")
		}
		select {
		case <-exited:
			return fmt.Errorf("control plane exited before it was ready")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("control plane not ready after %s", timeout)
}

func clusterDown(d clusterDirs) error {
	if pid, alive := runningPid(d); alive {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(stopTimeout + 5*time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			// The supervisor leads its own session: take its whole process group with it.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		fmt.Printf("control plane stopped (pid %d)\n", pid)
	}
	return removeState(d)
}

func removeState(d clusterDirs) error {
	for _, p := range d.state() {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// supervisor runs the components as child processes and stops them in reverse order.
type supervisor struct {
	dirs     clusterDirs
	binDir   string
	children []child
	exited   chan string
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *supervisor) start(name string, binary string, args ...string) error {
	logFile, err := os.Create(filepath.Join(s.dirs.logs(), name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(s.binDir, binary), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Children die with the supervisor even when it is killed with SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	c := child{cmd: cmd, done: make(chan struct{})}
	s.children = append(s.children, c)
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.done)
		select {
		case s.exited <- name:
		default:
		}
	}()
	return nil
}

func (s *supervisor) stopAll() {
	for i := len(s.children) - 1; i >= 0; i-- {
		c := s.children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(stopTimeout):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func clusterRun(d clusterDirs) (err error) {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	s := &supervisor{dirs: d, binDir: filepath.Dir(self), exited: make(chan string, 8)}
	for _, dir := range []string{d.logs(), d.etcd()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(d.pidFile(), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer func() {
		s.stopAll()
		_ = os.Remove(d.readyFile())
	}()

	identities := append(append([]clientIdentity{}, users...), components...)
	for _, id := range guildnetComponents {
		identities = append(identities, id)
	}
	keys, err := newPKI(d.pki(), identities)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	etcdPort, err := freePort()
	if err != nil {
		return err
	}
	etcdPeerPort, err := freePort()
	if err != nil {
		return err
	}
	apiPort, err := freePort()
	if err != nil {
		return err
	}
	kubeletPort, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)

	if err := s.start("etcd", "etcd", "--data-dir", d.etcd(),
		"--listen-client-url", etcdURL,
		"--listen-peer-url", fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)); err != nil {
		return err
	}
	if err := waitFor(s, "etcd", func() bool { return httpOK(http.DefaultClient, etcdURL+"/health") }); err != nil {
		return err
	}

	p := d.pki()
	tokenFile, err := writeTokens(d)
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	admissionConfig, err := writeAdmissionConfig(d)
	if err != nil {
		return fmt.Errorf("admission configuration: %w", err)
	}
	if err := s.start("kube-apiserver", "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--client-ca-file="+filepath.Join(p, "ca.crt"),
		"--token-auth-file="+tokenFile,
		// Admission webhooks are called with a client certificate, so they can tell the
		// API server from anyone else who reaches them.
		"--admission-control-config-file="+admissionConfig,
		"--tls-cert-file="+filepath.Join(p, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(p, "apiserver.key"),
		"--cert-dir="+p,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(p, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(p, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		// Kubelets are reached at their InternalIP: the fake node's is 127.0.0.1, where
		// KWOK serves the kubelet API with a certificate of our CA.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-certificate-authority="+filepath.Join(p, "ca.crt"),
		"--allow-privileged=false",
		"--profiling=false",
		"--v=1",
	); err != nil {
		return err
	}

	if err := writeKubeconfigs(d, server, keys); err != nil {
		return err
	}
	admin, err := clientFor(d.componentKubeconfig("system:kwok-controller"))
	if err != nil {
		return err
	}
	tlsClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: adminTLS(keys)}}
	if err := waitFor(s, "kube-apiserver", func() bool { return httpOK(tlsClient, server+"/readyz") }); err != nil {
		return err
	}
	if err := bootstrap(context.Background(), admin, d.podCIDR); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	// Background work of the supervisor, stopped when it returns.
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	go runProvisioner(background, admin)

	if err := s.start("kube-controller-manager", "kube-controller-manager",
		"--kubeconfig="+d.componentKubeconfig("system:kube-controller-manager"),
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+filepath.Join(p, "sa.key"),
		"--root-ca-file="+filepath.Join(p, "ca.crt"),
		"--cluster-signing-cert-file="+filepath.Join(p, "ca.crt"),
		"--cluster-signing-key-file="+filepath.Join(p, "ca.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
	); err != nil {
		return err
	}
	if err := s.start("kube-scheduler", "kube-scheduler",
		"--kubeconfig="+d.componentKubeconfig("system:kube-scheduler"),
		"--authentication-kubeconfig="+d.componentKubeconfig("system:kube-scheduler"),
		"--authorization-kubeconfig="+d.componentKubeconfig("system:kube-scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	); err != nil {
		return err
	}
	if err := writePodLog(d); err != nil {
		return fmt.Errorf("pod log: %w", err)
	}
	go appendHeartbeats(background, d)
	kubeletAddress := fmt.Sprintf("127.0.0.1:%d", kubeletPort)
	if err := s.start("kwok", "kwok",
		"--kubeconfig="+d.componentKubeconfig("system:kwok-controller"),
		"--config="+filepath.Join(s.binDir, "kwok-stages.yaml"),
		"--config="+d.kwokConfig(),
		"--manage-nodes-with-annotation-selector="+fakeNodeAnnotation+"=fake",
		"--cidr="+d.podCIDR,
		// The node's InternalIP and kubelet port: KWOK serves the kubelet API there, on a
		// port of its own so clusters run side by side.
		"--node-ip=127.0.0.1",
		fmt.Sprintf("--node-port=%d", kubeletPort),
		"--server-address="+kubeletAddress,
		"--tls-cert-file="+filepath.Join(p, "kubelet.crt"),
		"--tls-private-key-file="+filepath.Join(p, "kubelet.key"),
		// Renew the Node lease so the node lifecycle controller keeps the node Ready.
		"--node-lease-duration-seconds=40",
	); err != nil {
		return err
	}
	if err := waitFor(s, "kwok", func() bool {
		return nodeReady(admin, fakeNodeName) && httpOK(tlsClient, "https://"+kubeletAddress+"/healthz")
	}); err != nil {
		return err
	}

	if err := os.WriteFile(d.readyFile(), []byte(server+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("control plane ready at %s\n", server)
	select {
	case sig := <-stop:
		fmt.Printf("received %s, stopping\n", sig)
		return nil
	case name := <-s.exited:
		return fmt.Errorf("%s exited unexpectedly (see %s)", name, filepath.Join(d.logs(), name+".log"))
	}
}

// waitFor polls check until it passes, failing at once if a component exits.
func waitFor(s *supervisor, what string, check func() bool) error {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if check() {
			return nil
		}
		select {
		case name := <-s.exited:
			return fmt.Errorf("%s exited while waiting for %s (see %s)", name, what, filepath.Join(s.dirs.logs(), name+".log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s", what, readyTimeout)
}

func httpOK(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func adminTLS(keys *pki) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(keys.CA.CertPEM)
	admin := keys.Clients["guildnet-admin"]
	cert, _ := tls.X509KeyPair(admin.CertPEM, admin.KeyPEM)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
}

func kubeconfigFor(server string, keys *pki, contexts map[string]string, current string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["guildnet"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: keys.CA.CertPEM}
	for ctxName, user := range contexts {
		kp := keys.Clients[user]
		cfg.AuthInfos[ctxName] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
		cfg.Contexts[ctxName] = &clientcmdapi.Context{Cluster: "guildnet", AuthInfo: ctxName, Namespace: "default"}
	}
	cfg.CurrentContext = current
	return cfg
}

func writeKubeconfigs(d clusterDirs, server string, keys *pki) error {
	if err := clientcmd.WriteToFile(*kubeconfigFor(server, keys, contextNames, "admin"), d.kubeconfig()); err != nil {
		return err
	}
	for _, c := range components {
		cfg := kubeconfigFor(server, keys, map[string]string{"component": c.Name}, "component")
		if err := clientcmd.WriteToFile(*cfg, d.componentKubeconfig(c.Name)); err != nil {
			return err
		}
	}
	for name, c := range guildnetComponents {
		cfg := kubeconfigFor(server, keys, map[string]string{name: c.Name}, name)
		cfg.Contexts[name].Namespace = "guildnet-system"
		if err := clientcmd.WriteToFile(*cfg, d.guildnetKubeconfig(name)); err != nil {
			return err
		}
	}
	return nil
}

// writeAdmissionConfig makes the API server present <pki>/webhook-client.crt to every
// admission webhook (the kubeconfig user "*" matches any webhook host) and returns the
// admission configuration file for --admission-control-config-file.
func writeAdmissionConfig(d clusterDirs) (string, error) {
	p := d.pki()
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.AuthInfos["*"] = &clientcmdapi.AuthInfo{
		ClientCertificate: filepath.Join(p, webhookClientCert+".crt"),
		ClientKey:         filepath.Join(p, webhookClientCert+".key"),
	}
	kubeconfigFile := filepath.Join(p, "webhook-client.kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, kubeconfigFile); err != nil {
		return "", err
	}
	plugin := func(name string) string {
		return fmt.Sprintf("- name: %s\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: %q\n", name, kubeconfigFile)
	}
	config := "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n" +
		plugin("ValidatingAdmissionWebhook") + plugin("MutatingAdmissionWebhook")
	file := filepath.Join(p, "admission.yaml")
	return file, os.WriteFile(file, []byte(config), 0o600)
}

// writeTokens gives each person of the test cluster a bearer token as well as a client
// certificate, for clients that only speak tokens (the proxy's login page, TokenReview):
// <dir>/tokens/<context> holds the token of that kubeconfig context's user. Returns the
// apiserver's static token file.
func writeTokens(d clusterDirs) (string, error) {
	if err := os.MkdirAll(d.tokens(), 0o700); err != nil {
		return "", err
	}
	var csv strings.Builder
	for ctxName, user := range contextNames {
		secret := make([]byte, 24)
		if _, err := rand.Read(secret); err != nil {
			return "", err
		}
		token := hex.EncodeToString(secret)
		if err := os.WriteFile(filepath.Join(d.tokens(), ctxName), []byte(token+"\n"), 0o600); err != nil {
			return "", err
		}
		for _, id := range users {
			if id.Name == user {
				fmt.Fprintf(&csv, "%s,%s,%s,\"%s\"\n", token, id.Name, id.Name, strings.Join(id.Groups, ","))
			}
		}
	}
	file := filepath.Join(d.pki(), "tokens.csv")
	return file, os.WriteFile(file, []byte(csv.String()), 0o600)
}

func clientFor(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func nodeReady(c kubernetes.Interface, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	node, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// bootstrap creates what every GuildNet cluster of ours starts with: RBAC that lets
// guildnet:users work with Workspaces in namespace default, the namespace guildnet-system
// of GuildNet's components (their rights are the Helm chart's, applied by
// scripts/install-rbac.sh, not granted here), a fake Node for KWOK, and a default
// StorageClass served by the fake provisioner.
func bootstrap(ctx context.Context, c kubernetes.Interface, podCIDR string) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "guildnet:workspace-user"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"guildnet.io"},
			Resources: []string{"workspaces"},
			Verbs:     []string{"create", "get", "list", "watch", "update", "patch", "delete"},
		}, {
			APIGroups: []string{"guildnet.io"},
			Resources: []string{"workspaces/status"},
			Verbs:     []string{"get"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "guildnet:users", Namespace: "default"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "guildnet:users"}},
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fakeNodeName,
			Annotations: map[string]string{fakeNodeAnnotation: "fake"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": fakeNodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1000"),
			corev1.ResourceMemory: resource.MustParse("4Ti"),
			corev1.ResourcePods:   resource.MustParse("10000"),
		}, Capacity: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1000"),
			corev1.ResourceMemory: resource.MustParse("4Ti"),
			corev1.ResourcePods:   resource.MustParse("10000"),
		}},
	}
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	// The RBAC API may answer a moment after /readyz; retry within the ready deadline.
	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		if err = create(err); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.RbacV1().RoleBindings("default").Create(ctx, binding, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	// GuildNet's components run with full rights here; the Helm chart grants each only what
	// it needs.
	systemNamespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "guildnet-system"}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, systemNamespace, metav1.CreateOptions{}); create(err) != nil {
		return err
	}
	if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); create(err) != nil {
		return errors.Join(errors.New("create fake node"), err)
	}
	if _, err := c.StorageV1().StorageClasses().Create(ctx, defaultStorageClass(), metav1.CreateOptions{}); create(err) != nil {
		return errors.Join(errors.New("create default storage class"), err)
	}
	return nil
}
