"""Successive-halving sweeps on WSD trunks with cooldown branches: `python -m minigpt.halving` (docs/halving.md)."""
