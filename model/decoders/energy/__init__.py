"""The energy-based decoder: learned energies ``E(x, h)`` over the 96 conventions (issue 3).

``features`` turns an input into per-hypothesis residual features, ``network`` maps them to
energies, ``sampler`` draws Langevin negatives from a replay buffer, ``training`` fits the
model, ``inference`` decodes with it, ``baseline`` is the raw-feature MLP it is compared with,
``evaluation`` measures decoders side by side and ``card`` writes the model card.
"""
