package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A tools/call's arguments reach the tool as the raw bytes the client sent:
// the MCP SDK passes CallToolParamsRaw.Arguments on untouched, and a typed
// tool decodes them with github.com/segmentio/encoding/json (the SDK's
// internal/json), which replaces invalid UTF-8 and lone surrogates with
// U+FFFD and lets the last of duplicate keys win. Other decoders differ on
// exactly those points, so the policy is shown the arguments only when every
// reading of the bytes agrees, and the call is refused otherwise:
//
//   - the arguments are a JSON object; absent or null is {} (as the SDK does);
//   - no object has two keys that are equal once unescaped ("a" and "\u0061");
//   - strings are valid UTF-8 and escape no lone UTF-16 surrogate;
//   - nesting is at most sdkMaxDepth objects and arrays;
//   - a number decodes to a finite float64, and the policy sees that float64
//     (1e-400 is 0, 0.30000000000000001 is 0.3); an integer written without
//     fraction or exponent lies within ±2^53, where float64 and integer
//     decoding agree;
//   - the JSON is well formed (RFC 8259), with nothing after the object.

// sdkMaxDepth is the go-sdk's internal/json defaultMaxDepth: the deepest
// nesting of objects and arrays its decoder accepts.
const sdkMaxDepth = 1000

// maxExactInteger is 2^53: every integer up to it in magnitude is exactly a
// float64, beyond it a float64 decoder rounds what an integer decoder keeps.
const maxExactInteger = "9007199254740992"

// argumentsError says why arguments were refused.
type argumentsError struct{ reason string }

func (e *argumentsError) Error() string { return "tool arguments refused: " + e.reason }

func refuse(format string, a ...any) error {
	return &argumentsError{reason: fmt.Sprintf(format, a...)}
}

// decodeArguments converts a call's arguments into the AST value the policy
// reads as input.mcp.tool.arguments, or refuses them (an *argumentsError).
// It reads the bytes straight into AST values, without the detour through Go
// maps: it runs on every call.
func decodeArguments(raw json.RawMessage) (ast.Value, error) {
	// JSON's whitespace only: bytes.TrimSpace would also take Unicode spaces.
	raw = bytes.Trim(raw, " \t\r\n")
	if len(raw) == 0 || string(raw) == "null" {
		return emptyObject, nil
	}
	if raw[0] != '{' {
		if kind := jsonKind(raw[0]); kind != "" {
			return nil, refuse("arguments must be a JSON object, not %s", kind)
		}
		return nil, refuse("malformed JSON at byte 0: expected an object")
	}
	p := parsers.Get().(*argParser)
	defer p.release()
	p.b, p.i = raw, 0
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.b) {
		return nil, p.malformed("data after the arguments object")
	}
	return v, nil
}

func jsonKind(c byte) string {
	switch {
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	}
	return ""
}

// checkArguments applies decodeArguments' rules to a call's arguments and
// builds nothing: the same refusal for the same bytes, no AST. A reused
// decision needs no input document, but the arguments are still refused
// exactly when an evaluation would refuse them.
func checkArguments(raw json.RawMessage) error {
	raw = bytes.Trim(raw, " \t\r\n")
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] != '{' {
		_, err := decodeArguments(raw)
		return err
	}
	p := parsers.Get().(*argParser)
	defer p.release()
	p.b, p.i, p.check = raw, 0, true
	if _, err := p.value(0); err != nil {
		return err
	}
	p.space()
	if p.i != len(p.b) {
		return p.malformed("data after the arguments object")
	}
	return nil
}

// argParser holds one conversion's state. Its stacks and buffers are reused
// from call to call (parsers), so that a call allocates little more than
// the AST it returns.
type argParser struct {
	b []byte
	i int
	// vals and keys hold the members of the containers being read,
	// innermost last; a container takes its own off the top when it closes.
	vals []ast.Value
	keys []ast.Value
	// items and sorted are scratch for closing an object.
	items  [][2]*ast.Term
	sorted []string
	// buf holds the last unescaped string.
	buf []byte
	// keyValues shares one value among the repeats of a key, as in arrays of
	// objects.
	keyValues map[string]ast.Value
	// check: only check the bytes (checkArguments), build no values. The
	// keys being read are then kept as spans of kbuf.
	check  bool
	kbuf   []byte
	kspans []keySpan
}

type keySpan struct{ start, end int }

var parsers = sync.Pool{New: func() any { return &argParser{keyValues: make(map[string]ast.Value)} }}

// maxKeptKeys bounds keyValues, and maxKeptSlots the stacks a pooled parser
// keeps: one huge call must not pin its memory in the pool.
const (
	maxKeptKeys  = 256
	maxKeptSlots = 4096
)

func (p *argParser) release() {
	if cap(p.vals) > maxKeptSlots || cap(p.keys) > maxKeptSlots || cap(p.items) > maxKeptSlots || cap(p.buf) > 64<<10 ||
		cap(p.kspans) > maxKeptSlots || cap(p.kbuf) > 64<<10 {
		return
	}
	// Drop references to this call's values before the parser is reused.
	clear(p.vals[:cap(p.vals)])
	clear(p.keys[:cap(p.keys)])
	clear(p.sorted[:cap(p.sorted)])
	clear(p.keyValues)
	p.b, p.vals, p.keys, p.sorted = nil, p.vals[:0], p.keys[:0], p.sorted[:0]
	p.check, p.kbuf, p.kspans = false, p.kbuf[:0], p.kspans[:0]
	parsers.Put(p)
}

func (p *argParser) malformed(what string) error {
	return refuse("malformed JSON at byte %d: %s", p.i, what)
}

func (p *argParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *argParser) value(depth int) (ast.Value, error) {
	p.space()
	if p.i >= len(p.b) {
		return nil, p.malformed("unexpected end")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		if p.check {
			_, err := p.strBytes()
			return nil, err
		}
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
		return p.number()
	}
	return nil, p.malformed("expected a value")
}

func (p *argParser) literal(word string, v ast.Value) (ast.Value, error) {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return nil, p.malformed("expected a value")
	}
	p.i += len(word)
	return v, nil
}

func (p *argParser) object(depth int) (ast.Value, error) {
	if depth > sdkMaxDepth {
		return nil, refuse("nested deeper than %d objects and arrays", sdkMaxDepth)
	}
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return emptyObject, nil
	}
	kbase, vbase, sbase := len(p.keys), len(p.vals), len(p.kspans)
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.malformed("expected a key")
		}
		k, err := p.strBytes()
		if err != nil {
			return nil, err
		}
		if p.check {
			start := len(p.kbuf)
			p.kbuf = append(p.kbuf, k...)
			p.kspans = append(p.kspans, keySpan{start, len(p.kbuf)})
		} else {
			p.keys = append(p.keys, p.keyValue(k))
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.malformed("expected ':' after a key")
		}
		p.i++
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		p.vals = append(p.vals, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, p.malformed("unexpected end")
		}
		if p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.b[p.i] == '}' {
			p.i++
			break
		}
		return nil, p.malformed("expected ',' or '}'")
	}
	if p.check {
		spans := p.kspans[sbase:]
		if k, dup := p.duplicateSpan(spans); dup {
			return nil, refuse("duplicate key %s", quoteKey(ast.String(k)))
		}
		p.kbuf, p.kspans, p.vals = p.kbuf[:spans[0].start], p.kspans[:sbase], p.vals[:vbase]
		return nil, nil
	}
	keys, vals := p.keys[kbase:], p.vals[vbase:]
	if k, dup := duplicateKey(keys, &p.sorted); dup {
		return nil, refuse("duplicate key %s", quoteKey(k))
	}
	// One block for the object's terms rather than one allocation each.
	terms := make([]ast.Term, 2*len(keys))
	items := p.items[:0]
	for j := range keys {
		terms[2*j].Value, terms[2*j+1].Value = keys[j], vals[j]
		items = append(items, [2]*ast.Term{&terms[2*j], &terms[2*j+1]})
	}
	obj := ast.NewObject(items...)
	clear(items)
	p.items = items[:0]
	p.keys, p.vals = p.keys[:kbase], p.vals[:vbase]
	return obj, nil
}

func (p *argParser) array(depth int) (ast.Value, error) {
	if depth > sdkMaxDepth {
		return nil, refuse("nested deeper than %d objects and arrays", sdkMaxDepth)
	}
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return ast.NewArray(), nil
	}
	base := len(p.vals)
	for {
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		p.vals = append(p.vals, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, p.malformed("unexpected end")
		}
		if p.b[p.i] == ',' {
			p.i++
			continue
		}
		if p.b[p.i] == ']' {
			p.i++
			break
		}
		return nil, p.malformed("expected ',' or ']'")
	}
	if p.check {
		p.vals = p.vals[:base]
		return nil, nil
	}
	vals := p.vals[base:]
	terms := make([]ast.Term, len(vals))
	ptrs := make([]*ast.Term, len(vals))
	for j, v := range vals {
		terms[j].Value = v
		ptrs[j] = &terms[j]
	}
	p.vals = p.vals[:base]
	return ast.NewArray(ptrs...), nil
}

// keyValue is the AST string for an unescaped key, shared among its repeats.
func (p *argParser) keyValue(k []byte) ast.Value {
	if v, ok := p.keyValues[string(k)]; ok {
		return v
	}
	s := string(k)
	v := ast.Value(ast.String(s))
	if len(p.keyValues) < maxKeptKeys {
		p.keyValues[s] = v
	}
	return v
}

// duplicateKey finds two equal keys of one object: pairwise for the small
// objects arguments mostly are, by sorting for large ones.
func duplicateKey(keys []ast.Value, scratch *[]string) (ast.Value, bool) {
	if len(keys) <= 16 {
		for i := 1; i < len(keys); i++ {
			for j := range i {
				if keys[i] == keys[j] {
					return keys[i], true
				}
			}
		}
		return nil, false
	}
	sorted := (*scratch)[:0]
	for _, k := range keys {
		sorted = append(sorted, string(k.(ast.String)))
	}
	slices.Sort(sorted)
	*scratch = sorted
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return ast.String(sorted[i]), true
		}
	}
	return nil, false
}

// duplicateSpan is duplicateKey for the keys of a checked object, kept as
// spans of kbuf.
func (p *argParser) duplicateSpan(spans []keySpan) (string, bool) {
	key := func(s keySpan) []byte { return p.kbuf[s.start:s.end] }
	if len(spans) <= 16 {
		for i := 1; i < len(spans); i++ {
			for j := range i {
				if bytes.Equal(key(spans[i]), key(spans[j])) {
					return string(key(spans[i])), true
				}
			}
		}
		return "", false
	}
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, func(a, b keySpan) int { return bytes.Compare(key(a), key(b)) })
	for i := 1; i < len(sorted); i++ {
		if bytes.Equal(key(sorted[i]), key(sorted[i-1])) {
			return string(key(sorted[i])), true
		}
	}
	return "", false
}

// quoteKey quotes a key for a reason, cut short: it is the caller's text.
func quoteKey(k ast.Value) string {
	s := string(k.(ast.String))
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

func (p *argParser) str() (string, error) {
	b, err := p.strBytes()
	return string(b), err
}

// strBytes reads the string at p.i and returns its unescaped bytes: a slice
// of the input, or of p.buf when it has escapes, valid until the next call.
func (p *argParser) strBytes() ([]byte, error) {
	p.i++ // "
	start := p.i
	escaped, ascii := false, true
	for {
		if p.i >= len(p.b) {
			return nil, p.malformed("unterminated string")
		}
		c := p.b[p.i]
		if c == '"' {
			break
		}
		switch {
		case c == '\\':
			escaped = true
			p.i += 2 // the escape's letter is checked by unescape
		case c < 0x20:
			return nil, p.malformed("control character in a string")
		case c >= utf8.RuneSelf:
			ascii = false
			p.i++
		default:
			p.i++
		}
	}
	raw := p.b[start:p.i]
	p.i++
	// Escapes are ASCII, so the raw text is valid UTF-8 exactly when every
	// unescaped part of the string is.
	if !ascii && !utf8.Valid(raw) {
		return nil, refuse("invalid UTF-8 in a string at byte %d", start+invalidAt(raw))
	}
	if !escaped {
		return raw, nil
	}
	return p.unescape(raw, start)
}

func invalidAt(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// unescape decodes the escapes of a string's raw text, which starts at byte
// offset of the input.
func (p *argParser) unescape(raw []byte, offset int) ([]byte, error) {
	buf := p.buf[:0]
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			j := bytes.IndexByte(raw[i:], '\\')
			if j < 0 {
				j = len(raw) - i
			}
			buf = append(buf, raw[i:i+j]...)
			i += j
			continue
		}
		if i+1 >= len(raw) {
			return nil, refuse("malformed JSON at byte %d: bad escape", offset+i)
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			buf = append(buf, raw[i+1])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(raw[i+2:])
			if !ok {
				return nil, refuse("malformed JSON at byte %d: bad \\u escape", offset+i)
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate must be followed by an escaped low one.
				lo, ok := rune(-1), false
				if r < 0xdc00 && i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
					lo, ok = hex4(raw[i+8:])
				}
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return nil, refuse("a string escapes a lone UTF-16 surrogate at byte %d", offset+i)
				}
				r = utf16.DecodeRune(r, lo)
				i += 6
			}
			buf = utf8.AppendRune(buf, r)
			i += 6
			continue
		default:
			return nil, refuse("malformed JSON at byte %d: bad escape", offset+i)
		}
		i += 2
	}
	p.buf = buf
	return buf, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number as RFC 8259 writes it, and gives the policy the
// float64 a decoder makes of it.
func (p *argParser) number() (ast.Value, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.skipDigits()
	default:
		return nil, p.malformed("bad number")
	}
	intEnd := p.i
	plain := true
	if p.i < len(p.b) && p.b[p.i] == '.' {
		plain = false
		p.i++
		if !p.skipDigits() {
			return nil, p.malformed("bad number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		plain = false
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if !p.skipDigits() {
			return nil, p.malformed("bad number")
		}
	}
	text := p.b[start:p.i]
	if plain {
		// An integer decodes to the same value as float64 and as any
		// integer type only up to 2^53; beyond, the tool's type decides.
		if n := intEnd - digits; n > len(maxExactInteger) || (n == len(maxExactInteger) && string(p.b[digits:intEnd]) > maxExactInteger) {
			return nil, refuse("integer %s is beyond ±2^53, where float64 and integer decoding disagree (send it as a string)", text)
		}
		if p.check {
			return nil, nil
		}
		if t := ast.InternedIntNumberTermFromString(string(text)); t != nil {
			return t.Value, nil
		}
		return ast.Number(string(text)), nil
	}
	s := string(text)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, refuse("number %s is out of the range of float64", quoteNumber(s))
	}
	if p.check {
		return nil, nil
	}
	var canon [32]byte
	if c := appendFloat(canon[:0], f); string(c) != s {
		s = string(c)
	}
	return ast.Number(s), nil
}

// quoteNumber cuts a number's text short for a reason.
func quoteNumber(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func (p *argParser) skipDigits() bool {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}

// appendFloat writes f as encoding/json does: plain digits from 1e-6 up to
// 1e21, an exponent outside, so integral values read as integers in Rego.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}
