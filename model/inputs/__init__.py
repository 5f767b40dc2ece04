"""Input adapters: each kind of input (an SRO layout, a companion, a vendor's private tags)."""
