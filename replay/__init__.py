"""mmreplay replay: compile traces into op programs, run them natively, measure and report."""
