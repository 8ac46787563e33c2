"""Running one run: its spec, the training loop (:mod:`.training`), its records (CSV schema, manifest,
checkpoints, TensorBoard) and the process plumbing (lockstep, distributed, interrupts, locks).

The command line is ``python -m experiments.run`` (:mod:`experiments.run`)."""
