"""The subset of qutools' ``tdcbase.h`` (quTAG standard library V1.5.x) that qkdnode uses.

Declared from tdcbase.h 1.15 / tdcdecl.h 1.4 as shipped with the quTAG library V1.5.x: there,
timestamps and the coincidence window are in timebase units, channel delays are set in ps (five
entries, read back in timebase units, eight entries), dead times in ps, and
``TDC_configureSignalConditioning`` takes four arguments. The quTAG MC/HR library (tdcbase.h
1.8) has different signatures (``TDC_enableChannels(Bln32, Int32)``, ``TDC_setChannelDelay``,
no ``TDC_setDeadTime``) and needs a binding of its own.
"""

from __future__ import annotations

__all__ = ["CDEF", "EXPECTED_VERSION"]

# TDC_getVersion() of the library this declaration matches: 1.5.x reports 1.5 <= v < 1.6.
EXPECTED_VERSION = (1.5, 1.6)

CDEF = """
typedef int32_t Int32;
typedef int64_t Int64;
typedef uint8_t Uint8;
typedef int32_t Bln32;

typedef enum {
    SCOND_LVTTL = 1,
    SCOND_NIM = 2,
    SCOND_MISC = 3,
    SCOND_NONE = 4
} TDC_SignalCond;

double TDC_getVersion(void);
const char *TDC_perror(int rc);
int TDC_getTimebase(double *timebase);
int TDC_init(int deviceId);
int TDC_deInit(void);
int TDC_enableChannels(Int32 channelMask);
int TDC_getChannelsEnabled(Int32 *channelMask);
int TDC_configureSignalConditioning(Int32 channel, TDC_SignalCond conditioning, Bln32 edge,
                                    double threshold);
int TDC_getSignalConditioning(Int32 channel, Bln32 *edge, double *threshold);
int TDC_setChannelDelays(const Int32 *delays);
int TDC_getChannelDelays(Int32 *delays);
int TDC_setDeadTime(Int32 channel, Int32 dTime);
int TDC_getDeadTime(Int32 channel, Int32 *dTime);
int TDC_setTimestampBufferSize(Int32 size);
int TDC_getTimestampBufferSize(Int32 *size);
int TDC_getDataLost(Bln32 *lost);
int TDC_getLastTimestamps(Bln32 reset, Int64 *timestamps, Uint8 *channels, Int32 *valid);
"""
