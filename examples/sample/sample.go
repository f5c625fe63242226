// Package sample embeds the sample training program that every server
// made by hac gets in ~/sample (SPEC S8).
package sample

import _ "embed"

// TrainPy is examples/sample/train.py.
//
//go:embed train.py
var TrainPy []byte
