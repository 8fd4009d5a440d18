"""ID Quantique-style instrument drivers."""
