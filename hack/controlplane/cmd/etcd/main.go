// Command etcd is the etcd server at the version Kubernetes pins, built from Go modules
// (Debian's etcd 3.4 is too old for a current kube-apiserver).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
