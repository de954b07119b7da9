package main

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Go's coverage blocks hold statements, not the expressions of a switch's
// case lists: gremlins finds the operators there (a token's issuer check,
// its kind) on no covered line and never tries them. coverCaseLists adds a
// block for each case list of a switch statement that a test reached (the
// switch's own line is in a covered block), so that those mutants are run.
// A case list the tests reach only in part is still tried: at worst a
// mutant lives and is looked at, never a kill counted that did not happen.

// coverProfileArg is the -coverprofile of a go test command line, or "".
func coverProfileArg(args []string) string {
	if len(args) == 0 || args[0] != "test" {
		return ""
	}
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "-coverprofile="); ok {
			return v
		}
		if a == "-coverprofile" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

type coverBlock struct {
	startLine, startCol, endLine, endCol int
	count                                int
}

func (b coverBlock) contains(p token.Position) bool {
	after := p.Line > b.startLine || p.Line == b.startLine && p.Column >= b.startCol
	before := p.Line < b.endLine || p.Line == b.endLine && p.Column <= b.endCol
	return after && before
}

func coverCaseLists(profile string) error {
	b, err := os.ReadFile(profile)
	if err != nil {
		return err
	}
	module, err := modulePath()
	if err != nil {
		return err
	}
	blocks := map[string][]coverBlock{} // by file, as the profile names it
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "mode:") || line == "" {
			continue
		}
		name, blk, ok := parseCoverLine(line)
		if !ok {
			return fmt.Errorf("unreadable line %q", line)
		}
		if _, seen := blocks[name]; !seen {
			order = append(order, name)
		}
		blocks[name] = append(blocks[name], blk)
	}
	var extra bytes.Buffer
	for _, name := range order {
		rel, ok := strings.CutPrefix(name, module+"/")
		if !ok {
			continue
		}
		src, err := os.ReadFile(filepath.FromSlash(rel))
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		covered := func(p token.Pos) bool {
			pos := fset.Position(p)
			for _, blk := range blocks[name] {
				if blk.count > 0 && blk.contains(pos) {
					return true
				}
			}
			return false
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sw, ok := n.(*ast.SwitchStmt)
			if !ok || !covered(sw.Switch) {
				return true
			}
			for _, st := range sw.Body.List {
				cc, ok := st.(*ast.CaseClause)
				if !ok || len(cc.List) == 0 {
					continue
				}
				from, to := fset.Position(cc.Case), fset.Position(cc.Colon)
				fmt.Fprintf(&extra, "%s:%d.%d,%d.%d 1 1\n", name, from.Line, from.Column, to.Line, to.Column)
			}
			return true
		})
	}
	if extra.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile(profile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(extra.Bytes()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// parseCoverLine reads "file:L.C,L.C statements count".
func parseCoverLine(line string) (string, coverBlock, bool) {
	var blk coverBlock
	colon := strings.LastIndexByte(line, ':')
	if colon < 0 {
		return "", blk, false
	}
	fields := strings.Fields(line[colon+1:])
	if len(fields) != 3 {
		return "", blk, false
	}
	n, err := fmt.Sscanf(fields[0], "%d.%d,%d.%d", &blk.startLine, &blk.startCol, &blk.endLine, &blk.endCol)
	if err != nil || n != 4 {
		return "", blk, false
	}
	if blk.count, err = strconv.Atoi(fields[2]); err != nil {
		return "", blk, false
	}
	return line[:colon], blk, true
}

// modulePath is the module of the current directory's go.mod (gremlins runs
// the coverage from the module's root).
func modulePath() (string, error) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`), nil
		}
	}
	return "", fmt.Errorf("go.mod names no module")
}
