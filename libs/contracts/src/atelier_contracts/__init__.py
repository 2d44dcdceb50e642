"""Atelier's contracts: the only code services share about each other."""
