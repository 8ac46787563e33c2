"""Benchmarks of the optimizers and of the suite, one module each, run as ``python -m experiments.bench.<name>``.

- ``overhead``: per-iteration cost of each optimizer relative to SGD, and the mL-BFGS direction kernel
  against the copy bandwidth (``results/overhead/``);
- ``compile``: the MLBFGS step eager against ``torch.compile(opt.step)`` (``results/compile/``);
- ``distributed``: per-rank curvature memory and direction time of block-sharded mL-BFGS
  (``results/distributed/``);
- ``threads``: torch threads per process, idle and beside other work (``results/threads/``);
- ``runner``: the runner's iteration against a bare PyTorch loop, and a run's start-up (``results/runner/``);
- ``fairness``: the quick comparison, lockstep and separate, idle and loaded (``results/fairness/``);
- ``acceptance``: the verdict of the device check ``bash experiments/gpu_check.sh OUTDIR`` (CUDA tests,
  mL-BFGS iteration / SGD in bf16, the direction kernel against the GPU's bandwidth) from what it wrote.

Shared pieces: :mod:`~experiments.bench.workload` (a workload's model and a synthetic batch of its shape),
:mod:`~experiments.bench.timing` (medians of repeated timings), :mod:`~experiments.bench.busy_load`
(background load that stops by itself), :mod:`~experiments.bench.records` (CSV rows and the provenance
every manifest carries). Every benchmark measures ratios inside one run (the contestants interleaved,
repeated, medians); ``python -m analysis`` draws what they write.
"""
