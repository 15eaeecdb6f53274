package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Step names, in the order ADD runs them. Tests name them to inject a
// failure after a step (Options.AfterStep).
const (
	StepBridge     = "bridge"
	StepVeth       = "veth"
	StepIPAM       = "ipam"
	StepState      = "state"
	StepAddresses  = "addresses"
	StepGateway    = "gateway"
	StepRoutes     = "routes"
	StepRules      = "rules"
	StepMasquerade = "masquerade"
)

// step is one change ADD makes, with the function that takes it back.
// An undo takes back only what its own step did in this call (recorded by
// the step), so it is safe to run after a partial do, and a repeated ADD that
// found everything in place undoes nothing.
type step struct {
	name string
	do   func(context.Context) error
	undo func(context.Context) error
}

// runSteps runs steps in order. When one fails (or afterStep says so) every
// step started so far, the failing one included, is undone in reverse order;
// undo failures are logged and reported with the original error, which keeps
// its CNI error code.
func runSteps(ctx context.Context, log *slog.Logger, steps []step, afterStep func(string) error) error {
	var started []step
	for _, s := range steps {
		started = append(started, s)
		err := s.do(ctx)
		if err == nil && afterStep != nil {
			err = afterStep(s.name)
		}
		if err == nil {
			continue
		}
		log.Error("ADD failed, rolling back", "step", s.name, "error", err)
		var undoErrs []error
		for i := len(started) - 1; i >= 0; i-- {
			u := started[i]
			if u.undo == nil {
				continue
			}
			if uerr := u.undo(context.WithoutCancel(ctx)); uerr != nil {
				log.Error("rollback step failed", "step", u.name, "error", uerr)
				undoErrs = append(undoErrs, fmt.Errorf("undo %s: %w", u.name, uerr))
			}
		}
		if len(undoErrs) > 0 {
			return withDetails(err, "rollback incomplete: "+errors.Join(undoErrs...).Error())
		}
		return err
	}
	return nil
}
