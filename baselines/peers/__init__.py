"""The optimizers practitioners choose today, from their own well-kept libraries: SOAP, Shampoo, Muon and
schedule-free AdamW. Each is built on its library with its authors' recommended defaults (its config's
docstring) and driven like every other optimizer (:class:`baselines.external.ExternalOptimizer`: one gradient,
then ``step()``; the runner switches ``train()``/``eval()`` modes where the optimizer has them).

One module per peer, each needing only its own library (the registry's ``requires``):

- :mod:`baselines.peers.adamw_schedulefree` (schedulefree), :mod:`baselines.peers.muon`,
  :mod:`baselines.peers.soap` and :mod:`baselines.peers.shampoo` (pytorch-optimizer);
- :mod:`baselines.peers.common`: what their wrappers share (lr and counter conventions, checkpointable lists).

Which library: SOAP and Shampoo each have two implementations on PyPI. ``python -m
experiments.bench.peer_implementations`` times both at the same settings (``results/peers/implementations.md``):
pytorch_optimizer's SOAP is faster than heavyball's on both workloads measured, runs eagerly (heavyball compiles
its step, which fails in float64), and follows a rotation of the problem to 1e-4; ScalableShampoo is several
times faster than pytorch_optimizer's plain ``Shampoo`` on the CNN (blocks of 512 instead of one factor per
dimension), where the plain one also stands still until its first root computation.

Weight decay is the workload's, applied as each library applies it: decoupled (AdamW's way) by schedule-free,
Muon (both halves) and SOAP, added to the gradient by ScalableShampoo (its default).

All four pass the conformance suite (``tests/baselines/test_conformance*.py``), soap refusing by name the one
input it cannot hold (gradients whose outer products overflow), and are checked against their papers' updates
in ``tests/baselines/test_peers.py``.
"""
