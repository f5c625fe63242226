// Package gen holds the code generated from proto/hac/v1. Regenerate it
// after changing a .proto file with: go generate ./gen
package gen

//go:generate sh -c "cd .. && go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate"
