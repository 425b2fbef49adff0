// Command argocd-application-controller is Argo CD's application controller, built from the
// argo-cd Go module for the GitOps end-to-end tests (tests/e2e/test_gitops.py).
//
// Upstream builds every Argo CD component into one binary that dispatches on its name
// (cmd/main.go); this wrapper runs only the controller's command package, with klog sent through
// Argo CD's logger as upstream does. Upstream's other start-up step, grpc.DisableSRVLookups, is
// left out on purpose: it turns off the DNS SRV lookups that gRPC's grpclb balancer switches on
// when linked, and panics if they are already off. This single-command binary does not link
// grpclb (`go list -deps`), so they are off from the start.
package main

import (
	"os"

	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func main() {
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
	if err := appcontroller.NewCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
