"""Running a suite: presets, planning the runs, executing them in processes, the stages (grid, tuning,
sweep, analysis) and the tuning protocol (:mod:`.search`, :mod:`.choice`).

The command line is ``python -m experiments.suite`` (:mod:`.cli`)."""
