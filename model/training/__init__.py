"""Training and evaluation: synthetic data, the Langevin sampler, training, baseline, evaluation."""
