package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

const usage = `usage: mcpguard <command> [flags]

commands:
  serve [--name value ...]   run the server (the default command). Every setting of
                             docs/CONFIGURATION.md is a flag: --port 8000 sets PORT,
                             --policy-dir sets POLICY_DIR
  token --dev [flags]        print a token from the embedded development identity provider
  keys generate              print fresh JWT_SIGNING_KEY and STORAGE_ENCRYPTION_KEY
  policy <command> [flags]   the policy authoring loop: test, eval, input, catalog, lint
  version                    print the version
  help [command ...]         print this help, or a command's

Run mcpguard <command> --help for a command's flags.
`

const serveUsage = `usage: mcpguard [serve] [--name value ...]

Runs the server. Settings come from flags, the environment and .env (ENV_FILE),
in that order; every setting of docs/CONFIGURATION.md is a flag named after it:
--port 8000 sets PORT, --policy-dir policies sets POLICY_DIR, --env-file FILE
reads another .env. A flag that names no setting is an error.
`

const policyUsage = `usage: mcpguard policy <command> [flags]

commands:
  test      run the Rego tests, compiled and evaluated as the server does
  eval      decide one input document (exit 0 allow, 3 deny, 1 error); --explain traces it
  input     print the input document the server would build for a request
  catalog   print the registered tools, resources, templates and prompts as JSON
  lint      find what the policies do silently wrong
  roles     print a roles registry (data.mcp.roles) from a roles file or realm export
  replay    decide a logged decision again (a decision log line) and show what differs

Each reads the policy folder --policy-dir (default policies).
Run mcpguard policy <command> --help for its flags.
`

// policyDirUsage is the one spelling of the policy folder's flag, as serve
// spells POLICY_DIR.
const policyDirUsage = "the policy folder (as POLICY_DIR)"

// errHelp ends a command that printed its help: exit status 0.
var errHelp = errors.New("help shown")

// usageError is a command line the command cannot run: exit status 2, with
// the command's usage.
type usageError struct {
	msg   string
	usage string
}

func (e *usageError) Error() string { return e.msg }

// newFlagSet makes a subcommand's flags; synopsis follows "usage: mcpguard ".
func newFlagSet(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: mcpguard %s\n\n%s\nflags:\n", synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

// flagUsage is fs's usage text.
func flagUsage(fs *flag.FlagSet) string {
	var b strings.Builder
	out := fs.Output()
	fs.SetOutput(&b)
	fs.Usage()
	fs.SetOutput(out)
	return b.String()
}

// parseFlags parses a subcommand's arguments. -h/--help prints the usage to
// stdout (errHelp); an unknown flag, a missing value or any argument that is
// not a flag is a usage error.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, flagUsage(fs))
			return errHelp
		}
		return &usageError{msg: fs.Name() + ": " + err.Error(), usage: flagUsage(fs)}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("%s: unexpected argument %q (arguments are flags here)", fs.Name(), fs.Arg(0)), usage: flagUsage(fs)}
	}
	return nil
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	end := slices.Index(args, "--")
	if end < 0 {
		end = len(args)
	}
	return slices.ContainsFunc(args[:end], isHelp)
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// exitCode is the process's exit status for what run returned.
func exitCode(err error) int {
	var ee exitError
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return int(ee)
	case errors.As(err, &ue):
		return 2
	}
	return 1
}
