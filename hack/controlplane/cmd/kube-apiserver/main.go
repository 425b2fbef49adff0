// Command kube-apiserver is the upstream Kubernetes API server, built from Go modules so the
// tests and the local demo run against the real thing rather than a fake.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
