//go:build race

package integration

// raceEnabled says whether the tests run with -race; the hac binary under
// test is then built with -race too.
const raceEnabled = true
