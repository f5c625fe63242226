// Package version holds the version of this hac build.
package version

// Version is the version of the hac binary, client and control plane alike.
// Release builds override it with -ldflags "-X .../version.Version=...".
var Version = "0.1.0"
