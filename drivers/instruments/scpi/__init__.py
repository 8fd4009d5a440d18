"""Generic SCPI instrument drivers."""
