/*
 * mock_tdcbase.c: a stand-in for the qutools quTAG library tdcbase, standard quTAG library
 * V1.5.x ABI (tdcbase.h 1.15 / tdcdecl.h 1.4), backed by the simulated optical bench. Same
 * symbols and signatures as the vendor's for the subset qkdnode uses, the vendor's return codes
 * (TDC_Ok = 0, TDC_NotConnected = 2, TDC_OutOfRange = 10, ...) and short messages (TDC_perror).
 * Not the quTAG MC/HR library (tdcbase.h 1.8), whose signatures differ.
 *
 * One device with device ID 0 (TDC_init(-1) or TDC_init(0) connects), timebase 1 ps, five
 * inputs numbered as in TDC_enableChannels' mask: 0 (start) and 1..4. Events are recorded while
 * any channel is enabled and a timestamp buffer is set. The timestamp buffer is the vendor's
 * ring of the last N events (TDC_setTimestampBufferSize, 0 by default, so nothing is kept until
 * it is set): a full ring overwrites its oldest events, which the mock counts as lost
 * (qkdmock_lost_events). Events the bench's own tagger dropped latch the data-loss flag that
 * TDC_getDataLost reports, as the device latches a USB overrun; so does a failing bench pull.
 */
#include "qkdmock_common.h"

typedef int32_t Int32;
typedef int64_t Int64;
typedef uint8_t Uint8;
typedef int32_t Bln32;

#define TDC_Ok 0
#define TDC_Error (-1)
#define TDC_Timeout 1
#define TDC_NotConnected 2
#define TDC_DriverError 3
#define TDC_DeviceLocked 7
#define TDC_Unknown 8
#define TDC_NoDevice 9
#define TDC_OutOfRange 10
#define TDC_CantOpen 11
#define TDC_NotInitialized 12
#define TDC_NotEnabled 13
#define TDC_NotAvailable 14

#define TDC_QUTAG_CHANNELS 5
/* TDC_getChannelDelays fills at least this many entries (tdcbase.h). */
#define TDC_DELAY_SLOTS 8
#define SCOND_LVTTL 1
#define SCOND_MISC 3
#define THRESHOLD_MIN_V (-2.0)
#define THRESHOLD_MAX_V 3.0
#define DELAY_MAX_PS 100000
#define DEAD_TIME_MAX_PS 1000000000
#define BUFFER_SIZE_MAX 1000000
#define MOCK_DEVICE_ID 0

typedef struct {
    int initialized;
    Int32 mask;
    int cond[TDC_QUTAG_CHANNELS];
    Bln32 edge[TDC_QUTAG_CHANNELS];
    double threshold[TDC_QUTAG_CHANNELS];
    Int32 buffer_size;
    int data_lost;
} tdc_device;

static tdc_device dev;
static int tdc_ready = 0;

static void tdc_reset(void) {
    /* The ring exists from the start; its size is the vendor's buffer size once set. */
    qm_reset_common(1, QM_POLICY_OVERWRITE_OLDEST, 1, 1);
    memset(&dev, 0, sizeof(dev));
    for (int c = 0; c < TDC_QUTAG_CHANNELS; c++) {
        dev.cond[c] = SCOND_MISC;
        dev.edge[c] = 1;
        dev.threshold[c] = 1.0;
    }
    for (int c = 0; c < QM_NCH; c++) qm.enabled[c] = 0;
}

static void tdc_init_once(void) {
    if (!tdc_ready) {
        tdc_reset();
        tdc_ready = 1;
    }
}

static int check_init(void) {
    tdc_init_once();
    return dev.initialized ? TDC_Ok : TDC_NotInitialized;
}

static int check_channel(Int32 channel) {
    int rc = check_init();
    if (rc) return rc;
    return (channel < 0 || channel >= TDC_QUTAG_CHANNELS) ? TDC_OutOfRange : TDC_Ok;
}

static void apply_mask(void) {
    for (int c = 0; c < QM_NCH; c++)
        qm.enabled[c] = c < TDC_QUTAG_CHANNELS && ((dev.mask >> c) & 1);
    /* with no timestamp buffer (size 0, the default) the library keeps nothing */
    qm.measuring = dev.initialized && dev.mask != 0 && dev.buffer_size > 0;
}

/* ---- vendor API ---------------------------------------------------------------------- */

double TDC_getVersion(void) { return 1.52; }

const char *TDC_perror(int rc) {
    switch (rc) {
    case TDC_Ok: return "Success";
    case TDC_Error: return "Unspecified error";
    case TDC_Timeout: return "Receive timed out";
    case TDC_NotConnected: return "No connection was established";
    case TDC_DriverError: return "Error accessing the USB driver";
    case TDC_DeviceLocked: return "Can't connect device because already in use";
    case TDC_Unknown: return "Unknown error";
    case TDC_NoDevice: return "Invalid device number used in call";
    case TDC_OutOfRange: return "Parameter in function call is out of range";
    case TDC_CantOpen: return "Failed to open specified file";
    case TDC_NotInitialized: return "Library has not been initialized";
    case TDC_NotEnabled: return "Requested feature is not enabled";
    case TDC_NotAvailable: return "Requested feature is not available";
    default: return "Unknown error code";
    }
}

int TDC_getTimebase(double *timebase) {
    int rc = check_init();
    if (rc) return rc;
    *timebase = (double)qm.resolution_ps * 1e-12;
    return TDC_Ok;
}

int TDC_init(int deviceId) {
    tdc_init_once();
    dev.initialized = 0;
    qm.measuring = 0;
    if (deviceId != -1 && deviceId != MOCK_DEVICE_ID) return TDC_NotConnected;
    dev.initialized = 1;
    qm_clear_dead_time();
    apply_mask();
    return TDC_Ok;
}

int TDC_deInit(void) {
    tdc_init_once();
    dev.initialized = 0;
    qm.measuring = 0;
    return TDC_Ok;
}

int TDC_enableChannels(Int32 channelMask) {
    int rc = check_init();
    if (rc) return rc;
    if (channelMask < 0 || channelMask >= (1 << TDC_QUTAG_CHANNELS)) return TDC_OutOfRange;
    dev.mask = channelMask;
    apply_mask();
    return TDC_Ok;
}

int TDC_getChannelsEnabled(Int32 *channelMask) {
    int rc = check_init();
    if (rc) return rc;
    *channelMask = dev.mask;
    return TDC_Ok;
}

int TDC_configureSignalConditioning(Int32 channel, int conditioning, Bln32 edge,
                                    double threshold) {
    int rc = check_channel(channel);
    if (rc) return rc;
    if (conditioning < SCOND_LVTTL || conditioning > SCOND_MISC) return TDC_OutOfRange;
    if (!(threshold >= THRESHOLD_MIN_V && threshold <= THRESHOLD_MAX_V)) return TDC_OutOfRange;
    dev.cond[channel] = conditioning;
    dev.edge[channel] = edge ? 1 : 0;
    dev.threshold[channel] = threshold;
    return TDC_Ok;
}

int TDC_getSignalConditioning(Int32 channel, Bln32 *edge, double *threshold) {
    int rc = check_channel(channel);
    if (rc) return rc;
    if (edge) *edge = dev.edge[channel];
    if (threshold) *threshold = dev.threshold[channel];
    return TDC_Ok;
}

int TDC_setChannelDelays(const Int32 *delays) {
    int rc = check_init();
    if (rc) return rc;
    for (int c = 0; delays != NULL && c < TDC_QUTAG_CHANNELS; c++)
        if (delays[c] < -DELAY_MAX_PS || delays[c] > DELAY_MAX_PS) return TDC_OutOfRange;
    for (int c = 0; c < TDC_QUTAG_CHANNELS; c++) qm.delay_ps[c] = delays ? delays[c] : 0;
    return TDC_Ok;
}

int TDC_getChannelDelays(Int32 *delays) {
    int rc = check_init();
    if (rc) return rc;
    for (int c = 0; c < TDC_DELAY_SLOTS; c++)
        delays[c] = c < TDC_QUTAG_CHANNELS ? (Int32)(qm.delay_ps[c] / qm.resolution_ps) : 0;
    return TDC_Ok;
}

int TDC_setDeadTime(Int32 channel, Int32 dTime) {
    int rc = check_channel(channel);
    if (rc) return rc;
    if (dTime < 0 || dTime > DEAD_TIME_MAX_PS) return TDC_OutOfRange;
    qm.dead_ps[channel] = dTime;
    return TDC_Ok;
}

int TDC_getDeadTime(Int32 channel, Int32 *dTime) {
    int rc = check_channel(channel);
    if (rc) return rc;
    *dTime = (Int32)qm.dead_ps[channel];
    return TDC_Ok;
}

int TDC_setTimestampBufferSize(Int32 size) {
    int rc = check_init();
    if (rc) return rc;
    if (size < 1 || size > BUFFER_SIZE_MAX) return TDC_OutOfRange;
    if (qm_set_capacity(size) != 0) return TDC_Error;
    dev.buffer_size = size;
    apply_mask();
    return TDC_Ok;
}

int TDC_getTimestampBufferSize(Int32 *size) {
    int rc = check_init();
    if (rc) return rc;
    *size = dev.buffer_size;
    return TDC_Ok;
}

int TDC_getDataLost(Bln32 *lost) {
    int rc = check_init();
    if (rc) return rc;
    *lost = dev.data_lost;
    dev.data_lost = 0;
    return TDC_Ok;
}

int TDC_getLastTimestamps(Bln32 reset, Int64 *timestamps, Uint8 *channels, Int32 *valid) {
    int rc = check_init();
    if (rc) return rc;
    if (qm_pull() != 0) dev.data_lost = 1;
    /* Loss the bench reported (pushed as lost) latches the flag; ring overwrites do not. */
    if (qm.upstream_lost) {
        dev.data_lost = 1;
        qm.upstream_lost = 0;
    }
    int64_t n = dev.buffer_size > 0 ? qm.count : 0;
    for (int64_t i = 0; i < n; i++) {
        qm_event e = qm.buf[(qm.head + i) % qm.cap];
        if (timestamps) timestamps[i] = e.t;
        if (channels) channels[i] = (Uint8)e.ch;
    }
    if (valid) *valid = (Int32)n;
    if (reset) qm_clear_events();
    return TDC_Ok;
}

/* ---- mock-only ----------------------------------------------------------------------- */

QM_EXPORT const char *qkdmock_library(void) { return "tdcbase"; }

QM_EXPORT void qkdmock_reset(void) {
    tdc_reset();
    tdc_ready = 1;
}

/* Lets setuptools build this file as an "extension module" (Windows links require the
   symbol); the library is loaded with cffi's dlopen, never imported. */
QM_EXPORT void *PyInit__mock_tdcbase(void) { return NULL; }
