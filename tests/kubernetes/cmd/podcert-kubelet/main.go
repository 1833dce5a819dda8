// podcert-kubelet runs the kubelet's own pod-certificate code, and nothing else of a kubelet,
// for the pods bound to one node: upstream's podcertificate.IssuingManager files and refreshes
// each pod's PodCertificateRequests as system:node:<name>, upstream's ClusterTrustBundle
// manager merges the trust bundles a pod selects, and upstream's AtomicWriter writes each
// projected volume into --out/<namespace>/<pod>/<volume>/ exactly as the kubelet lays it out.
// It is wired as upstream's own test/integration/kubelet/podcertificatemanager_integration_test.go
// wires the manager (informers on a node-identity client, a pod manager over the pod lister).
//
// What it sees goes to stdout as one JSON object per line (the tests read it):
//
//	{"kind":"ready"}                                        informers synced
//	{"kind":"volume","namespace":…,"pod":…,"volume":…,"files":{"name":"sha256"},"error":…}
//	{"kind":"event","type":…,"reason":…,"message":…,"namespace":…,"pod":…}
//	{"kind":"states","states":{"<signer> <state>":n}}      answer to "report"
//	{"kind":"clock","now":"RFC3339"}                        answer to "advance"
//
// Commands on stdin, one per line: "advance <Go duration>" steps the manager's clock forward
// (the API server's own clock cannot be compressed, so a refresh is reached by stepping the
// kubelet's past beginRefreshAt) and requeues every pod as the refresh pass would; "report"
// prints the manager's MetricReport; "sync" rewrites every volume now.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelistersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/podcertificate"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
	"k8s.io/utils/clock"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node's identity (system:node:<name>)")
	nodeName := flag.String("node-name", "", "the node whose pods this kubelet serves")
	out := flag.String("out", "", "directory the projected volumes are written under")
	every := flag.Duration("sync-every", 200*time.Millisecond, "how often every volume is collected again")
	klog.InitFlags(nil)
	flag.Parse()
	if *kubeconfig == "" || *nodeName == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "podcert-kubelet: --kubeconfig, --node-name and --out are required")
		os.Exit(2)
	}
	if err := run(*kubeconfig, types.NodeName(*nodeName), *out, *every); err != nil {
		fmt.Fprintf(os.Stderr, "podcert-kubelet: %v\n", err)
		os.Exit(1)
	}
}

// report writes one JSON line to stdout; lines never interleave.
var reportLock sync.Mutex

func report(v map[string]any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	reportLock.Lock()
	defer reportLock.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

func run(kubeconfig string, node types.NodeName, out string, every time.Duration) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}

	// Informers as upstream's integration test builds them: each narrowed to this node.
	byNode := func(field string) informers.SharedInformerFactory {
		return informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = field
		}))
	}
	podFactory := byNode("spec.nodeName=" + string(node))
	pcrFactory := byNode("spec.nodeName=" + string(node))
	nodeFactory := byNode("metadata.name=" + string(node))
	pods := &podManager{lister: podFactory.Core().V1().Pods().Lister()}
	podInformer := podFactory.Core().V1().Pods().Informer()

	// Events as the kubelet records them: to the API server, and to stdout for the tests.
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	broadcaster.StartEventWatcher(func(e *corev1.Event) {
		report(map[string]any{"kind": "event", "type": e.Type, "reason": e.Reason, "message": e.Message,
			"namespace": e.InvolvedObject.Namespace, "pod": e.InvolvedObject.Name})
	})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: string(node)})

	clk := &steppedClock{}
	manager := newIssuingManager(client, pods, recorder, pcrFactory, nodeFactory, node, clk)
	trustBundles := newTrustBundles(ctx, client)

	// Pods are tracked and forgotten as the kubelet's pod workers would.
	podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { manager.TrackPod(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) {
			manager.TrackPod(ctx, obj.(*corev1.Pod))
		},
		DeleteFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				manager.ForgetPod(ctx, pod)
			}
		},
	})

	podFactory.Start(ctx.Done())
	pcrFactory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	for _, f := range []informers.SharedInformerFactory{podFactory, pcrFactory, nodeFactory} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("the %v informer did not sync", typ)
			}
		}
	}
	go manager.Run(ctx)
	report(map[string]any{"kind": "ready"})

	volumes := &volumeWriter{root: out, last: map[string]string{}}
	syncNow := make(chan struct{}, 1)
	go commands(ctx, manager, pods, clk, syncNow)

	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		for _, pod := range pods.GetPods() {
			volumes.write(ctx, pod, manager, trustBundles)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-syncNow:
		}
	}
}

// commands reads the test's commands from stdin until it closes.
func commands(ctx context.Context, manager podcertificate.Manager, pods *podManager, clk *steppedClock, syncNow chan<- struct{}) {
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "advance":
			if len(fields) != 2 {
				report(map[string]any{"kind": "error", "error": "advance needs one duration"})
				continue
			}
			d, err := time.ParseDuration(fields[1])
			if err != nil {
				report(map[string]any{"kind": "error", "error": err.Error()})
				continue
			}
			now := clk.advance(d)
			// What the manager's one-minute refresh pass does, at once.
			for _, pod := range pods.GetPods() {
				manager.TrackPod(ctx, pod)
			}
			report(map[string]any{"kind": "clock", "now": now.UTC().Format(time.RFC3339)})
		case "report":
			states := map[string]int{}
			for k, n := range manager.MetricReport().PodCertificateStates {
				states[k.SignerName+" "+k.State] = n
			}
			report(map[string]any{"kind": "states", "states": states})
		case "sync":
			select {
			case syncNow <- struct{}{}:
			default:
			}
		default:
			report(map[string]any{"kind": "error", "error": "unknown command " + fields[0]})
		}
	}
}

// podManager is the pod manager of upstream's integration test: the pods the node's pod
// informer holds.
type podManager struct {
	lister corelistersv1.PodLister
}

func (p *podManager) GetPods() []*corev1.Pod {
	pods, _ := p.lister.List(labels.Everything())
	sort.Slice(pods, func(i, j int) bool { return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name })
	return pods
}

func (p *podManager) GetPodByUID(uid types.UID) (*corev1.Pod, bool) {
	for _, pod := range p.GetPods() {
		if pod.UID == uid {
			return pod, true
		}
	}
	return nil, false
}

// steppedClock is the real clock plus an offset the tests step forward.
type steppedClock struct {
	lock   sync.Mutex
	offset time.Duration
}

var _ clock.WithTicker = (*steppedClock)(nil)

func (c *steppedClock) advance(d time.Duration) time.Time {
	c.lock.Lock()
	c.offset += d
	c.lock.Unlock()
	return c.Now()
}

func (c *steppedClock) shift() time.Duration {
	c.lock.Lock()
	defer c.lock.Unlock()
	return c.offset
}

func (c *steppedClock) Now() time.Time                         { return time.Now().Add(c.shift()) }
func (c *steppedClock) Since(t time.Time) time.Duration        { return c.Now().Sub(t) }
func (c *steppedClock) Until(t time.Time) time.Duration        { return t.Sub(c.Now()) }
func (c *steppedClock) After(d time.Duration) <-chan time.Time { return clock.RealClock{}.After(d) }
func (c *steppedClock) NewTimer(d time.Duration) clock.Timer   { return clock.RealClock{}.NewTimer(d) }
func (c *steppedClock) Sleep(d time.Duration)                  { time.Sleep(d) }
func (c *steppedClock) Tick(d time.Duration) <-chan time.Time  { return clock.RealClock{}.Tick(d) }
func (c *steppedClock) NewTicker(d time.Duration) clock.Ticker {
	return clock.RealClock{}.NewTicker(d)
}
func (c *steppedClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return clock.RealClock{}.AfterFunc(d, f)
}

// volumeWriter writes each pod's projected volumes, as the projected volume plugin collects
// them (pkg/volume/projected: a credential bundle is the key then the chain), through
// upstream's AtomicWriter, and reports each change.
type volumeWriter struct {
	root string
	last map[string]string // volume dir -> what was last reported
}

func (w *volumeWriter) write(ctx context.Context, pod *corev1.Pod, manager podcertificate.Manager, trustBundles trustBundleSource) {
	for _, vol := range pod.Spec.Volumes {
		if vol.Projected == nil {
			continue
		}
		payload := map[string]volumeutil.FileProjection{}
		var errs []string
		for i, source := range vol.Projected.Sources {
			switch {
			case source.PodCertificate != nil:
				key, chain, err := manager.GetPodCertificateCredentialBundle(ctx, pod.Namespace, pod.Name, string(pod.UID), vol.Name, i)
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				pc := source.PodCertificate
				if pc.CredentialBundlePath != "" {
					payload[pc.CredentialBundlePath] = volumeutil.FileProjection{Data: append(append([]byte{}, key...), chain...), Mode: 0o600}
				}
				if pc.KeyPath != "" {
					payload[pc.KeyPath] = volumeutil.FileProjection{Data: key, Mode: 0o600}
				}
				if pc.CertificateChainPath != "" {
					payload[pc.CertificateChainPath] = volumeutil.FileProjection{Data: chain, Mode: 0o600}
				}
			case source.ClusterTrustBundle != nil:
				ctb := source.ClusterTrustBundle
				optional := ctb.Optional != nil && *ctb.Optional
				var anchors []byte
				var err error
				switch {
				case ctb.Name != nil:
					anchors, err = trustBundles.byName(ctx, *ctb.Name, optional)
				case ctb.SignerName != nil:
					anchors, err = trustBundles.bySigner(ctx, *ctb.SignerName, ctb.LabelSelector, optional)
				default:
					err = fmt.Errorf("ClusterTrustBundle projection requires either name or signerName to be set")
				}
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				payload[ctb.Path] = volumeutil.FileProjection{Data: anchors, Mode: 0o644}
			}
		}
		dir := filepath.Join(w.root, pod.Namespace, pod.Name, vol.Name)
		files := map[string]string{}
		for name, f := range payload {
			sum := sha256.Sum256(f.Data)
			files[name] = hex.EncodeToString(sum[:])
		}
		// The kubelet does not mount a volume until every source has its data.
		if len(errs) == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				errs = append(errs, err.Error())
			} else if writer, err := volumeutil.NewAtomicWriter(dir, "podcert-kubelet"); err != nil {
				errs = append(errs, err.Error())
			} else if err := writer.Write(payload, nil); err != nil {
				errs = append(errs, err.Error())
			}
		}
		entry := map[string]any{"kind": "volume", "namespace": pod.Namespace, "pod": pod.Name, "uid": string(pod.UID), "volume": vol.Name, "dir": dir}
		if len(errs) > 0 {
			entry["error"] = strings.Join(errs, "; ")
		} else {
			entry["files"] = files
		}
		seen, _ := json.Marshal(entry)
		if w.last[dir] != string(seen) {
			w.last[dir] = string(seen)
			report(entry)
		}
	}
}

// trustBundleSource is the kubelet's ClusterTrustBundle manager, whichever signature the
// release gives it.
type trustBundleSource interface {
	byName(ctx context.Context, name string, allowMissing bool) ([]byte, error)
	bySigner(ctx context.Context, signer string, selector *metav1.LabelSelector, allowMissing bool) ([]byte, error)
}
