package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// position is where a data key was written.
type position struct {
	file string
	line int
	// folder: the key is a sub-folder's name, the path its data file
	// loads under, not a key written in the file.
	folder bool
}

// positions maps data paths (keys joined by NUL) to where they were written,
// so that findings about data name a file and line.
type positions struct{ at map[string]position }

func pathKey(p []string) string { return strings.Join(p, "\x00") }

func (p *positions) set(path []string, at position) {
	k := pathKey(path)
	if _, ok := p.at[k]; !ok {
		p.at[k] = at
	}
}

// lookup is where path, or else its nearest ancestor, was written.
func (p *positions) lookup(path []string) (position, bool) {
	for n := len(path); n >= 0; n-- {
		if at, ok := p.at[pathKey(path[:n])]; ok {
			return at, true
		}
	}
	return position{}, false
}

// indexDataFiles finds the data files the loader reads from dir, as it reads
// them: every .json, .yaml and .yml file, in any sub-folder, each under the
// path of its folder relative to dir. JSON keys get their line; YAML files
// their top-level keys' lines.
func indexDataFiles(dir string) (*positions, error) {
	p := &positions{at: map[string]position{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(path))
		if d.IsDir() || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(path))
		if err != nil {
			return err
		}
		var prefix []string
		if rel != "." {
			prefix = strings.Split(filepath.ToSlash(rel), "/")
		}
		for i := range prefix {
			p.set(prefix[:i+1], position{file: path, line: 1, folder: true})
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if ext == ".json" {
			// A file the loader rejects never gets here: Load failed first.
			_ = indexJSON(p, path, src, prefix)
			return nil
		}
		indexYAML(p, path, src, prefix)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", dir, err)
	}
	return p, nil
}

// indexJSON records the line of every object key and array element.
func indexJSON(p *positions, file string, src []byte, prefix []string) error {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	line := func() int { return 1 + bytes.Count(src[:dec.InputOffset()], []byte{'\n'}) }
	var walk func(path []string, tok json.Token) error
	walk = func(path []string, tok json.Token) error {
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		for i := 0; dec.More(); i++ {
			var key string
			if d == '{' {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ = kt.(string)
			} else {
				key = strconv.Itoa(i)
			}
			child := append(slices.Clone(path), key)
			if d == '{' {
				p.set(child, position{file: file, line: line()})
			}
			vt, err := dec.Token()
			if err != nil {
				return err
			}
			if d == '[' {
				p.set(child, position{file: file, line: line()})
			}
			if err := walk(child, vt); err != nil {
				return err
			}
		}
		_, err := dec.Token() // the closing delimiter
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return walk(prefix, tok)
}

var yamlTopKey = regexp.MustCompile(`^["']?([^"':#\s][^"':#]*?)["']?\s*:`)

// indexYAML records the lines of a YAML file's top-level keys.
func indexYAML(p *positions, file string, src []byte, prefix []string) {
	for i, ln := range strings.Split(string(src), "\n") {
		if m := yamlTopKey.FindStringSubmatch(ln); m != nil {
			p.set(append(slices.Clone(prefix), m[1]), position{file: file, line: i + 1})
		}
	}
	p.set(prefix, position{file: file, line: 1})
}
