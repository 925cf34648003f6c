"""Files and runs: output folders written atomically, checkpoints, check records, input limits,
and the run spec that resolves a command's options into loaded models and a dataset."""
