package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// allowList is the reviewed list of equivalent survivors: mutants no test
// can kill because they change no behaviour. Each line reads
//
//	file | rule#n | kind | expression | reason
//
// as the tool prints a survivor's key, followed by why the mutant is
// equivalent. Blank lines and lines starting with # are comments.
type allowList struct {
	reasons map[string]string // key -> reason
	lines   map[string]int    // key -> line in the file, for stale entries
}

func parseAllowList(r io.Reader, name string) (*allowList, error) {
	a := &allowList{reasons: map[string]string{}, lines: map[string]int{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, " | ")
		if len(f) < 5 {
			return nil, fmt.Errorf("%s:%d: want file | rule#n | kind | expression | reason, got %q", name, n, line)
		}
		// The expression may itself hold " | " (a set union): the reason is
		// the last field, the expression everything between.
		key := strings.Join(f[:len(f)-1], " | ")
		reason := strings.TrimSpace(f[len(f)-1])
		if reason == "" {
			return nil, fmt.Errorf("%s:%d: an allowed survivor needs the reason it is equivalent", name, n)
		}
		if _, dup := a.reasons[key]; dup {
			return nil, fmt.Errorf("%s:%d: %q is listed twice", name, n, key)
		}
		a.reasons[key] = reason
		a.lines[key] = n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return a, nil
}

// stale lists the entries that no survivor used: a test now kills them, or
// the policy changed. Either way the list must be reviewed again.
func (a *allowList) stale(used map[string]bool) []string {
	var out []string
	for key := range a.reasons {
		if !used[key] {
			out = append(out, fmt.Sprintf("line %d: %s", a.lines[key], key))
		}
	}
	return out
}
