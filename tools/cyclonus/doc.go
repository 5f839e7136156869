// Package cyclonus holds the tests that check weft's NetworkPolicy engine
// against github.com/mattfenwick/cyclonus: its generated cases and its own
// matcher are the truth table.
package cyclonus
