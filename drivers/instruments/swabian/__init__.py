"""Swabian Instruments time taggers, through the vendor's own Python SDK (module ``TimeTagger``)."""
