"""Experiment suite: data, models, workload configs, the training runner and the suite driver.

Entry points:
    python -m experiments.run --workload fmnist-cnn --optimizer sgd --seed 0
    python -m experiments.suite --preset quick
"""
