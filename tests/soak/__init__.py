"""The soak run (`python -m tests.soak.run`, `make soak`): long calls, resources sampled. Not in CI."""
