"""Tests of the repository as a whole: README, the docs site, packaging, the verdict's words."""
