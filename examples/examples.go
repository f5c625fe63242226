// Package examples embeds the programs hac hands to users: the sample that
// every server gets in ~/sample (SPEC S8) and the reference models, ready
// to train, that a server can be created with or that hac reference-model
// get fetches (SPEC S10).
package examples

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
)

// SampleTrainPy is sample/train.py.
//
//go:embed sample/train.py
var SampleTrainPy []byte

//go:embed reference
var referenceFS embed.FS

// ReferenceModel is a ready-to-train model.
type ReferenceModel struct {
	Name        string
	Description string
	// Command trains it from its folder.
	Command string
	// Files maps file names (slash-separated, relative) to contents.
	Files map[string][]byte
}

var referenceInfo = []struct{ name, description, command string }{
	{"fashion-mlp", "A multi-layer perceptron on synthetic FashionMNIST-shaped images (the sample, with its data built in)", "hac run -- python3 train.py"},
	{"transformer-char", "A small character-level transformer language model; trains on corpus.txt (replace it with your text)", "hac run -- python3 train.py --steps 2000"},
}

// ReferenceModels returns the catalog in display order, read from the
// embedded files once.
var ReferenceModels = sync.OnceValue(readReferenceModels)

func readReferenceModels() []ReferenceModel {
	var out []ReferenceModel
	for _, info := range referenceInfo {
		m := ReferenceModel{Name: info.name, Description: info.description, Command: info.command, Files: map[string][]byte{}}
		if info.name == "fashion-mlp" {
			m.Files["train.py"] = SampleTrainPy
		} else {
			root := path.Join("reference", info.name)
			fs.WalkDir(referenceFS, root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					m.Files[strings.TrimPrefix(p, root+"/")], _ = referenceFS.ReadFile(p)
				}
				return nil
			})
		}
		out = append(out, m)
	}
	return out
}

// LookupReference returns the reference model with that name.
func LookupReference(name string) (ReferenceModel, error) {
	var names []string
	for _, m := range ReferenceModels() {
		if m.Name == name {
			return m, nil
		}
		names = append(names, m.Name)
	}
	return ReferenceModel{}, fmt.Errorf("unknown reference model %q (choose one of %s)", name, strings.Join(names, ", "))
}
