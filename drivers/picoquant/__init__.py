"""PicoQuant time taggers (HydraHarp, MultiHarp, TimeHarp 260): T2 records and PTU files.

:mod:`.records` decodes and encodes T2 time-tag records with overflow correction carried across
chunks; :mod:`.ptu` reads and writes PTU files and decodes their T2 records.
"""

from .ptu import PtuFile, PtuFormatError, Tag, TagType, decode_ptu_t2, read_ptu, write_ptu
from .records import T2Events, T2State, decode_t2, encode_t2

__all__ = [
    "PtuFile",
    "PtuFormatError",
    "T2Events",
    "T2State",
    "Tag",
    "TagType",
    "decode_ptu_t2",
    "decode_t2",
    "encode_t2",
    "read_ptu",
    "write_ptu",
]
