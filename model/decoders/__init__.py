"""Decoders: the analytic decoder and the energy-based model's inference, and the registry."""
