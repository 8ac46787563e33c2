"""Tests of mlbfgs."""
