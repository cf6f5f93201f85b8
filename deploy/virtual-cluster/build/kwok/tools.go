//go:build tools

// Package tools pins the kwok controller built by ../../up.sh. It is a separate
// module because kwok v0.7.0 depends on k8s.io/* v0.33 libraries, while the
// control plane in the parent module is pinned to v0.32.4.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
