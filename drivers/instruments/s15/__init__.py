"""S-Fifteen-style instrument drivers."""
