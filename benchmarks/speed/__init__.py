"""Speed benchmarks: wall times and their ratios, measured side by side in one run."""
