"""SRO Decoder Ring model: conventions, SRO reading, synthetic data and decoders.

Nothing here imports ``node``.
"""

__version__ = "0.1.0"
