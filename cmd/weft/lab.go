package main

import (
	"context"
	"errors"
	"io"

	"github.com/weftnet/weft/internal/lab"
)

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := lab.Main(ctx, args, stdout, stderr)
	var ee lab.ExitError
	if errors.As(err, &ee) {
		return exitError(ee)
	}
	return err
}
