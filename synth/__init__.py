"""mmreplay synth: synthetic workloads from distributions, fitted specs and presets."""
