"""qutools instruments: the quTAG time tagger (through its C library)."""
