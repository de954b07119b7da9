package policy

import (
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// parseJSON converts JSON text straight into an AST value, without the
// detour through Go maps that util.UnmarshalJSON plus InterfaceToValue take:
// tool arguments are converted on every call. Numbers keep their JSON text,
// as OPA keeps them.
func parseJSON(b []byte) (ast.Value, error) {
	p := jsonParser{b: b}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.b) {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

// maxJSONDepth bounds nesting, so hostile arguments cannot exhaust the stack.
const maxJSONDepth = 128

type jsonParser struct {
	b []byte
	i int
}

var errJSON = errors.New("malformed JSON")

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (ast.Value, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	p.space()
	if p.i >= len(p.b) {
		return nil, errJSON
	}
	switch c := p.b[p.i]; {
	case c == '{':
		p.i++
		obj := ast.NewObject()
		p.space()
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			return obj, nil
		}
		for {
			p.space()
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, errJSON
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			obj.Insert(ast.StringTerm(k), ast.NewTerm(v))
			p.space()
			if p.i >= len(p.b) {
				return nil, errJSON
			}
			if p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.b[p.i] == '}' {
				p.i++
				return obj, nil
			}
			return nil, errJSON
		}
	case c == '[':
		p.i++
		var terms []*ast.Term
		p.space()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return ast.NewArray(), nil
		}
		for {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			terms = append(terms, ast.NewTerm(v))
			p.space()
			if p.i >= len(p.b) {
				return nil, errJSON
			}
			if p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.b[p.i] == ']' {
				p.i++
				return ast.NewArray(terms...), nil
			}
			return nil, errJSON
		}
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return ast.String(s), nil
	case c == 't':
		return p.literal("true", ast.Boolean(true))
	case c == 'f':
		return p.literal("false", ast.Boolean(false))
	case c == 'n':
		return p.literal("null", ast.Null{})
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		for p.i < len(p.b) {
			c := p.b[p.i]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				p.i++
				continue
			}
			break
		}
		num := json.Number(p.b[start:p.i])
		if _, err := num.Float64(); err != nil || !json.Valid(p.b[start:p.i]) {
			return nil, errJSON
		}
		return ast.Number(num), nil
	}
	return nil, errJSON
}

func (p *jsonParser) literal(word string, v ast.Value) (ast.Value, error) {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return nil, errJSON
	}
	p.i += len(word)
	return v, nil
}

// str reads a JSON string; escapes are decoded by encoding/json.
func (p *jsonParser) str() (string, error) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", errJSON
	}
	start := p.i
	p.i++
	escaped := false
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			p.i++
			raw := p.b[start:p.i]
			if !escaped {
				if !utf8.Valid(raw) {
					return "", errJSON
				}
				return string(raw[1 : len(raw)-1]), nil
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", errJSON
			}
			return s, nil
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return "", errJSON
		default:
			p.i++
		}
	}
	return "", errJSON
}
