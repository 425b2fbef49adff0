// Command argocd-repo-server is Argo CD's repository server (clones Git, renders kustomize and
// Helm sources into manifests), built from the argo-cd Go module for the GitOps end-to-end
// tests. Same start-up wiring as upstream's cmd/main.go for this one command (see
// ../argocd-application-controller/main.go for why grpc.DisableSRVLookups is not called).
package main

import (
	"os"

	"k8s.io/klog/v2"

	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func main() {
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
	if err := reposerver.NewCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
