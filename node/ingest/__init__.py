"""Receiving objects: archive, decode, record (receipt), reconciliation at start-up, batching."""
