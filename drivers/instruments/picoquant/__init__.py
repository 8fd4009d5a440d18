"""PicoQuant time taggers (HydraHarp 400, MultiHarp) through their C libraries, in T2 mode."""
