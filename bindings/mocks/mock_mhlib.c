/*
 * mock_mhlib.c: a stand-in for PicoQuant's MultiHarp 150 library (mhlib.so, MHLib 3.x ABI)
 * backed by the simulated optical bench. Same symbols and signatures as the vendor's mhlib.h for
 * the subset qkdnode uses, vendor error codes (errorcodes.h numbering) and short messages.
 *
 * MultiHarp is not a HydraHarp: MH_ReadFiFo has no count argument (the buffer must hold
 * TTREADMAX = 1048576 records), inputs have edge triggers (MH_SetInputEdgeTrg, -1200..1200 mV)
 * instead of CFDs, a settable extended dead time (MH_SetInputDeadTime, 800..160000 ps) and no
 * calibration call. One device, index 0, serial "02000042", 8 inputs, T2 mode only, 80 ps
 * resolution (MultiHarp 150; qkdmock_set_resolution_ps changes it), v2 records only. The FIFO
 * drops new events when full, counts them and raises FLAG_FIFOFULL until the next MH_StartMeas.
 */
#include <stdio.h>
#include <time.h>

#include "qkdmock_common.h"
#include "qkdmock_t2.h"

#define MAXDEVNUM 8
#define MHMAXINPCHAN 8
#define TTREADMAX 1048576
#define MODE_T2 2
#define FLAG_FIFOFULL 0x0002
#define SYNCDIVMIN 1
#define SYNCDIVMAX 16
#define TRGLVLMIN (-1200)
#define TRGLVLMAX 1200
#define EXTDEADMIN 800
#define EXTDEADMAX 160000
#define CHANOFFSMIN (-99999)
#define CHANOFFSMAX 99999
#define ACQTMIN 1
#define ACQTMAX 360000000
/* A MultiHarp FIFO holds on the order of 10^6..10^7 records; 2^22 events by default. */
#define DEFAULT_FIFO_EVENTS (1 << 22)
/* MultiHarp 150 base resolution. */
#define DEFAULT_RESOLUTION_PS 80

#define MH_ERROR_NONE 0
#define MH_ERROR_DEVICE_OPEN_FAIL (-1)
#define MH_ERROR_DEVICE_BUSY (-2)
#define MH_ERROR_DEVICE_NOT_OPEN (-10)
#define MH_ERROR_INSTANCE_RUNNING (-16)
#define MH_ERROR_INVALID_ARGUMENT (-17)
#define MH_ERROR_INVALID_MODE (-18)
#define MH_ERROR_NOT_INITIALIZED (-22)
#define MH_ERROR_USB_BULKRD_FAIL (-37)

typedef struct {
    int open, initialized, mode;
    int sync_div, sync_level, sync_edge;
    int level[MHMAXINPCHAN], edge[MHMAXINPCHAN];
    int64_t start_ns;
    int tacq_ms;
} mh_device;

static mh_device dev;

static void mh_reset(void) {
    qm_reset_common(DEFAULT_FIFO_EVENTS, QM_POLICY_DROP_NEWEST, DEFAULT_RESOLUTION_PS, 0);
    memset(&dev, 0, sizeof(dev));
    dev.sync_div = 1;
    qm_t2.base = 0;
    qm_t2.v2 = 1;
}

static int mh_ready = 0;
static void mh_init_once(void) {
    if (!mh_ready) {
        mh_reset();
        mh_ready = 1;
    }
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int check_dev(int devidx) {
    mh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return MH_ERROR_INVALID_ARGUMENT;
    if (devidx != 0 || !dev.open) return MH_ERROR_DEVICE_NOT_OPEN;
    return MH_ERROR_NONE;
}

static int check_init(int devidx) {
    int rc = check_dev(devidx);
    if (rc) return rc;
    return dev.initialized ? MH_ERROR_NONE : MH_ERROR_NOT_INITIALIZED;
}

static int check_input(int devidx, int channel) {
    int rc = check_init(devidx);
    if (rc) return rc;
    return (channel < 0 || channel >= MHMAXINPCHAN) ? MH_ERROR_INVALID_ARGUMENT : MH_ERROR_NONE;
}

/* ---- vendor API ---------------------------------------------------------------------- */

int MH_GetLibraryVersion(char *vers) {
    mh_init_once();
    strcpy(vers, "3.1");
    return MH_ERROR_NONE;
}

int MH_GetErrorString(char *errstring, int errcode) {
    const char *m;
    switch (errcode) {
    case MH_ERROR_NONE: m = "MH_ERROR_NONE"; break;
    case MH_ERROR_DEVICE_OPEN_FAIL: m = "MH_ERROR_DEVICE_OPEN_FAIL"; break;
    case MH_ERROR_DEVICE_BUSY: m = "MH_ERROR_DEVICE_BUSY"; break;
    case MH_ERROR_DEVICE_NOT_OPEN: m = "MH_ERROR_DEVICE_NOT_OPEN"; break;
    case MH_ERROR_INSTANCE_RUNNING: m = "MH_ERROR_INSTANCE_RUNNING"; break;
    case MH_ERROR_INVALID_ARGUMENT: m = "MH_ERROR_INVALID_ARGUMENT"; break;
    case MH_ERROR_INVALID_MODE: m = "MH_ERROR_INVALID_MODE"; break;
    case MH_ERROR_NOT_INITIALIZED: m = "MH_ERROR_NOT_INITIALIZED"; break;
    case MH_ERROR_USB_BULKRD_FAIL: m = "MH_ERROR_USB_BULKRD_FAIL"; break;
    default: m = "MH_ERROR_UNKNOWN"; break;
    }
    strcpy(errstring, m);
    return MH_ERROR_NONE;
}

int MH_OpenDevice(int devidx, char *serial) {
    mh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return MH_ERROR_INVALID_ARGUMENT;
    if (devidx != 0) return MH_ERROR_DEVICE_OPEN_FAIL;
    if (dev.open) return MH_ERROR_DEVICE_BUSY;
    dev.open = 1;
    strcpy(serial, "02000042");
    return MH_ERROR_NONE;
}

int MH_CloseDevice(int devidx) {
    mh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return MH_ERROR_INVALID_ARGUMENT;
    if (devidx == 0) {
        dev.open = 0;
        dev.initialized = 0;
        qm.measuring = 0;
    }
    return MH_ERROR_NONE;
}

int MH_Initialize(int devidx, int mode, int refsource) {
    int rc = check_dev(devidx);
    if (rc) return rc;
    if (mode != MODE_T2) return MH_ERROR_INVALID_MODE;
    if (refsource != 0 && refsource != 1) return MH_ERROR_INVALID_ARGUMENT;
    dev.initialized = 1;
    dev.mode = mode;
    return MH_ERROR_NONE;
}

int MH_GetHardwareInfo(int devidx, char *model, char *partno, char *version) {
    int rc = check_init(devidx);
    if (rc) return rc;
    strcpy(model, "MultiHarp 150 8N");
    strcpy(partno, "930044");
    strcpy(version, "2.0");
    return MH_ERROR_NONE;
}

int MH_GetSerialNumber(int devidx, char *serial) {
    int rc = check_init(devidx);
    if (rc) return rc;
    strcpy(serial, "02000042");
    return MH_ERROR_NONE;
}

int MH_GetNumOfInputChannels(int devidx, int *nchannels) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *nchannels = MHMAXINPCHAN;
    return MH_ERROR_NONE;
}

int MH_SetSyncDiv(int devidx, int div) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (div < SYNCDIVMIN || div > SYNCDIVMAX) return MH_ERROR_INVALID_ARGUMENT;
    dev.sync_div = div;
    return MH_ERROR_NONE;
}

int MH_SetSyncEdgeTrg(int devidx, int level, int edge) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (level < TRGLVLMIN || level > TRGLVLMAX || (edge != 0 && edge != 1))
        return MH_ERROR_INVALID_ARGUMENT;
    dev.sync_level = level;
    dev.sync_edge = edge;
    return MH_ERROR_NONE;
}

int MH_SetSyncChannelOffset(int devidx, int value) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (value < CHANOFFSMIN || value > CHANOFFSMAX) return MH_ERROR_INVALID_ARGUMENT;
    qm.delay_ps[0] = value;
    return MH_ERROR_NONE;
}

int MH_SetInputEdgeTrg(int devidx, int channel, int level, int edge) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (level < TRGLVLMIN || level > TRGLVLMAX || (edge != 0 && edge != 1))
        return MH_ERROR_INVALID_ARGUMENT;
    dev.level[channel] = level;
    dev.edge[channel] = edge;
    return MH_ERROR_NONE;
}

int MH_SetInputDeadTime(int devidx, int channel, int on, int deadtime) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if ((on != 0 && on != 1) || (on && (deadtime < EXTDEADMIN || deadtime > EXTDEADMAX)))
        return MH_ERROR_INVALID_ARGUMENT;
    qm.dead_ps[channel + 1] = on ? deadtime : 0;
    return MH_ERROR_NONE;
}

int MH_SetInputChannelOffset(int devidx, int channel, int value) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (value < CHANOFFSMIN || value > CHANOFFSMAX) return MH_ERROR_INVALID_ARGUMENT;
    qm.delay_ps[channel + 1] = value;
    return MH_ERROR_NONE;
}

int MH_SetInputChannelEnable(int devidx, int channel, int enable) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (enable != 0 && enable != 1) return MH_ERROR_INVALID_ARGUMENT;
    qm.enabled[channel + 1] = enable;
    return MH_ERROR_NONE;
}

int MH_GetResolution(int devidx, double *resolution) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *resolution = (double)qm.resolution_ps;
    return MH_ERROR_NONE;
}

int MH_StartMeas(int devidx, int tacq) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (tacq < ACQTMIN || tacq > ACQTMAX) return MH_ERROR_INVALID_ARGUMENT;
    if (qm.measuring) return MH_ERROR_INSTANCE_RUNNING;
    qm_clear_events();
    qm_clear_dead_time();
    qm.overflowed = 0;
    qm_t2.base = 0;
    dev.tacq_ms = tacq;
    dev.start_ns = now_ns();
    qm.measuring = 1;
    return MH_ERROR_NONE;
}

int MH_StopMeas(int devidx) {
    int rc = check_init(devidx);
    if (rc) return rc;
    qm.measuring = 0;
    return MH_ERROR_NONE;
}

int MH_CTCStatus(int devidx, int *ctcstatus) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *ctcstatus = !qm.measuring || now_ns() - dev.start_ns >= (int64_t)dev.tacq_ms * 1000000LL;
    return MH_ERROR_NONE;
}

int MH_GetFlags(int devidx, int *flags) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *flags = qm.overflowed ? FLAG_FIFOFULL : 0;
    return MH_ERROR_NONE;
}

int MH_ReadFiFo(int devidx, unsigned int *buffer, int *nactual) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (buffer == NULL || nactual == NULL) return MH_ERROR_INVALID_ARGUMENT;
    if (qm_pull() != 0) return MH_ERROR_USB_BULKRD_FAIL;
    *nactual = qm_t2_fill(buffer, TTREADMAX);
    return MH_ERROR_NONE;
}

/* ---- mock-only ----------------------------------------------------------------------- */

QM_EXPORT const char *qkdmock_library(void) { return "mhlib"; }

QM_EXPORT void qkdmock_reset(void) {
    mh_reset();
    mh_ready = 1;
}

/* Lets setuptools build this file as an "extension module" (Windows links require the
   symbol); the library is loaded with cffi's dlopen, never imported. */
QM_EXPORT void *PyInit__mock_mhlib(void) { return NULL; }
