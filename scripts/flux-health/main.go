// flux-health judges objects with a Flux Kustomization's healthCheckExprs the way Flux's
// kustomize-controller does (RFC 0009, fluxcd/pkg runtime/cel), so that tests can check the
// expressions in deploy/gitops/flux-kustomization.yaml without a cluster:
//
//   - the CEL environment Flux uses: optional types, the strings, sets and encoders
//     extensions, cross-type numeric comparisons; the expression is parsed, not type-checked,
//     and each top-level field of the object (apiVersion, kind, metadata, spec, status) is a
//     variable, so an absent `status` is an undeclared variable and an error;
//   - when status.observedGeneration exists and differs from metadata.generation: InProgress;
//   - then inProgress, failed, current, in that order: the first that is true decides;
//     none true: InProgress;
//   - an evaluation error (a field that does not exist): Unknown, which Flux keeps polling
//     until the Kustomization's timeout.
//
// Input (stdin): {"exprs": {"current": "...", "inProgress": "...", "failed": "..."},
// "objects": [ ... ]}. Output (stdout): a JSON list, one {"status", "error"} per object.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

type exprs struct {
	Current    string `json:"current"`
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
}

type input struct {
	Exprs   exprs            `json:"exprs"`
	Objects []map[string]any `json:"objects"`
}

type result struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func program(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return nil, err
	}
	ast, issues := env.Parse(expr)
	if issues != nil && issues.Err() != nil {
		return nil, fmt.Errorf("parsing %q: %w", expr, issues.Err())
	}
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
}

// number reads an integer field as JSON decodes it.
func number(obj map[string]any, path ...string) (float64, bool) {
	var v any = obj
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return 0, false
		}
		if v, ok = m[p]; !ok {
			return 0, false
		}
	}
	f, ok := v.(float64)
	return f, ok
}

func evaluate(progs []struct {
	prog   cel.Program
	status string
}, obj map[string]any) result {
	if observed, ok := number(obj, "status", "observedGeneration"); ok {
		if generation, ok := number(obj, "metadata", "generation"); ok && observed != generation {
			return result{Status: "InProgress"}
		}
	}
	for _, p := range progs {
		if p.prog == nil {
			continue
		}
		val, _, err := p.prog.Eval(obj)
		if err != nil {
			return result{Status: "Unknown", Error: err.Error()}
		}
		b, ok := val.(types.Bool)
		if !ok {
			return result{Status: "Unknown", Error: fmt.Sprintf("not a boolean: %v", val)}
		}
		if b {
			return result{Status: p.status}
		}
	}
	return result{Status: "InProgress"}
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "flux-health: reading the input:", err)
		os.Exit(2)
	}
	if in.Exprs.Current == "" {
		fmt.Fprintln(os.Stderr, "flux-health: the expression current is required")
		os.Exit(2)
	}
	progs := make([]struct {
		prog   cel.Program
		status string
	}, 3)
	for i, e := range []struct{ expr, status string }{
		{in.Exprs.InProgress, "InProgress"},
		{in.Exprs.Failed, "Failed"},
		{in.Exprs.Current, "Current"},
	} {
		progs[i].status = e.status
		if e.expr == "" {
			continue
		}
		p, err := program(e.expr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flux-health:", err)
			os.Exit(2)
		}
		progs[i].prog = p
	}
	out := make([]result, 0, len(in.Objects))
	for _, obj := range in.Objects {
		out = append(out, evaluate(progs, obj))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "flux-health:", err)
		os.Exit(2)
	}
}
