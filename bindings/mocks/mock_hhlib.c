/*
 * mock_hhlib.c: a stand-in for PicoQuant's HydraHarp 400 library (libhh400.so, HHLib 3.0 ABI)
 * backed by the simulated optical bench. Same symbols and signatures as the vendor's hhlib.h for
 * the subset qkdnode uses, vendor error codes (errorcodes.h numbering) and short messages.
 *
 * One device, index 0, serial "01000042", 8 inputs, T2 mode only, 1 ps resolution. Records are
 * v2 (HHLib 2.x/3.x, record type rtHydraHarp2T2) unless qkdmock_set_record_version(1) makes the
 * library report version 1.2 and write v1 overflows (rtHydraHarpT2). The FIFO drops new events
 * when full, counts them and raises FLAG_FIFOFULL until the next HH_StartMeas.
 */
#include <stdio.h>
#include <time.h>

#include "qkdmock_common.h"
#include "qkdmock_t2.h"

#define MAXDEVNUM 8
#define HHMAXINPCHAN 8
#define TTREADMAX 131072
#define MODE_T2 2
#define FLAG_FIFOFULL 0x0002
#define SYNCDIVMIN 1
#define SYNCDIVMAX 16
#define ZCMIN 0
#define ZCMAX 40
#define DISCRMIN 0
#define DISCRMAX 1000
#define CHANOFFSMIN (-99999)
#define CHANOFFSMAX 99999
#define ACQTMIN 1
#define ACQTMAX 360000000
/* A HydraHarp FIFO holds on the order of 10^6..10^7 records; 2^22 events by default. */
#define DEFAULT_FIFO_EVENTS (1 << 22)

#define HH_ERROR_NONE 0
#define HH_ERROR_DEVICE_OPEN_FAIL (-1)
#define HH_ERROR_DEVICE_BUSY (-2)
#define HH_ERROR_DEVICE_NOT_OPEN (-10)
#define HH_ERROR_INSTANCE_RUNNING (-16)
#define HH_ERROR_INVALID_ARGUMENT (-17)
#define HH_ERROR_INVALID_MODE (-18)
#define HH_ERROR_NOT_INITIALIZED (-22)
#define HH_ERROR_USB_BULKRD_FAIL (-37)

typedef struct {
    int open, initialized, mode;
    int sync_div, sync_level, sync_zc, sync_offset;
    int level[HHMAXINPCHAN], zc[HHMAXINPCHAN];
    int64_t start_ns;
    int tacq_ms;
    int record_version;
} hh_device;

static hh_device dev;

static void hh_reset(void) {
    qm_reset_common(DEFAULT_FIFO_EVENTS, QM_POLICY_DROP_NEWEST, 1, 0);
    memset(&dev, 0, sizeof(dev));
    dev.sync_div = 1;
    dev.record_version = 2;
    qm_t2.base = 0;
    qm_t2.v2 = 1;
}

static int hh_ready = 0;
static void hh_init_once(void) {
    if (!hh_ready) {
        hh_reset();
        hh_ready = 1;
    }
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int check_dev(int devidx) {
    hh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return HH_ERROR_INVALID_ARGUMENT;
    if (devidx != 0 || !dev.open) return HH_ERROR_DEVICE_NOT_OPEN;
    return HH_ERROR_NONE;
}

static int check_init(int devidx) {
    int rc = check_dev(devidx);
    if (rc) return rc;
    return dev.initialized ? HH_ERROR_NONE : HH_ERROR_NOT_INITIALIZED;
}

static int check_input(int devidx, int channel) {
    int rc = check_init(devidx);
    if (rc) return rc;
    return (channel < 0 || channel >= HHMAXINPCHAN) ? HH_ERROR_INVALID_ARGUMENT : HH_ERROR_NONE;
}

/* ---- vendor API ---------------------------------------------------------------------- */

int HH_GetLibraryVersion(char *vers) {
    hh_init_once();
    strcpy(vers, dev.record_version == 1 ? "1.2" : "3.0");
    return HH_ERROR_NONE;
}

int HH_GetErrorString(char *errstring, int errcode) {
    const char *m;
    switch (errcode) {
    case HH_ERROR_NONE: m = "HH_ERROR_NONE"; break;
    case HH_ERROR_DEVICE_OPEN_FAIL: m = "HH_ERROR_DEVICE_OPEN_FAIL"; break;
    case HH_ERROR_DEVICE_BUSY: m = "HH_ERROR_DEVICE_BUSY"; break;
    case HH_ERROR_DEVICE_NOT_OPEN: m = "HH_ERROR_DEVICE_NOT_OPEN"; break;
    case HH_ERROR_INSTANCE_RUNNING: m = "HH_ERROR_INSTANCE_RUNNING"; break;
    case HH_ERROR_INVALID_ARGUMENT: m = "HH_ERROR_INVALID_ARGUMENT"; break;
    case HH_ERROR_INVALID_MODE: m = "HH_ERROR_INVALID_MODE"; break;
    case HH_ERROR_NOT_INITIALIZED: m = "HH_ERROR_NOT_INITIALIZED"; break;
    case HH_ERROR_USB_BULKRD_FAIL: m = "HH_ERROR_USB_BULKRD_FAIL"; break;
    default: m = "HH_ERROR_UNKNOWN"; break;
    }
    strcpy(errstring, m);
    return HH_ERROR_NONE;
}

int HH_OpenDevice(int devidx, char *serial) {
    hh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return HH_ERROR_INVALID_ARGUMENT;
    if (devidx != 0) return HH_ERROR_DEVICE_OPEN_FAIL;
    if (dev.open) return HH_ERROR_DEVICE_BUSY;
    dev.open = 1;
    strcpy(serial, "01000042");
    return HH_ERROR_NONE;
}

int HH_CloseDevice(int devidx) {
    hh_init_once();
    if (devidx < 0 || devidx >= MAXDEVNUM) return HH_ERROR_INVALID_ARGUMENT;
    if (devidx == 0) {
        dev.open = 0;
        dev.initialized = 0;
        qm.measuring = 0;
    }
    return HH_ERROR_NONE;
}

int HH_Initialize(int devidx, int mode, int refsource) {
    int rc = check_dev(devidx);
    if (rc) return rc;
    if (mode != MODE_T2) return HH_ERROR_INVALID_MODE;
    if (refsource != 0 && refsource != 1) return HH_ERROR_INVALID_ARGUMENT;
    dev.initialized = 1;
    dev.mode = mode;
    return HH_ERROR_NONE;
}

int HH_GetHardwareInfo(int devidx, char *model, char *partno, char *version) {
    int rc = check_init(devidx);
    if (rc) return rc;
    strcpy(model, "HydraHarp 400");
    strcpy(partno, "930021");
    strcpy(version, "2.0");
    return HH_ERROR_NONE;
}

int HH_GetSerialNumber(int devidx, char *serial) {
    int rc = check_init(devidx);
    if (rc) return rc;
    strcpy(serial, "01000042");
    return HH_ERROR_NONE;
}

int HH_GetNumOfInputChannels(int devidx, int *nchannels) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *nchannels = HHMAXINPCHAN;
    return HH_ERROR_NONE;
}

int HH_Calibrate(int devidx) { return check_init(devidx); }

int HH_SetSyncDiv(int devidx, int div) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (div < SYNCDIVMIN || div > SYNCDIVMAX) return HH_ERROR_INVALID_ARGUMENT;
    dev.sync_div = div;
    return HH_ERROR_NONE;
}

int HH_SetSyncCFD(int devidx, int level, int zc) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (level < DISCRMIN || level > DISCRMAX || zc < ZCMIN || zc > ZCMAX)
        return HH_ERROR_INVALID_ARGUMENT;
    dev.sync_level = level;
    dev.sync_zc = zc;
    return HH_ERROR_NONE;
}

int HH_SetSyncChannelOffset(int devidx, int value) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (value < CHANOFFSMIN || value > CHANOFFSMAX) return HH_ERROR_INVALID_ARGUMENT;
    qm.delay_ps[0] = value;
    return HH_ERROR_NONE;
}

int HH_SetInputCFD(int devidx, int channel, int level, int zc) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (level < DISCRMIN || level > DISCRMAX || zc < ZCMIN || zc > ZCMAX)
        return HH_ERROR_INVALID_ARGUMENT;
    dev.level[channel] = level;
    dev.zc[channel] = zc;
    return HH_ERROR_NONE;
}

int HH_SetInputChannelOffset(int devidx, int channel, int value) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (value < CHANOFFSMIN || value > CHANOFFSMAX) return HH_ERROR_INVALID_ARGUMENT;
    qm.delay_ps[channel + 1] = value;
    return HH_ERROR_NONE;
}

int HH_SetInputChannelEnable(int devidx, int channel, int enable) {
    int rc = check_input(devidx, channel);
    if (rc) return rc;
    if (enable != 0 && enable != 1) return HH_ERROR_INVALID_ARGUMENT;
    qm.enabled[channel + 1] = enable;
    return HH_ERROR_NONE;
}

int HH_GetResolution(int devidx, double *resolution) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *resolution = (double)qm.resolution_ps;
    return HH_ERROR_NONE;
}

int HH_StartMeas(int devidx, int tacq) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (tacq < ACQTMIN || tacq > ACQTMAX) return HH_ERROR_INVALID_ARGUMENT;
    if (qm.measuring) return HH_ERROR_INSTANCE_RUNNING;
    qm_clear_events();
    qm_clear_dead_time();
    qm.overflowed = 0;
    qm_t2.base = 0;
    qm_t2.v2 = dev.record_version != 1;
    dev.tacq_ms = tacq;
    dev.start_ns = now_ns();
    qm.measuring = 1;
    return HH_ERROR_NONE;
}

int HH_StopMeas(int devidx) {
    int rc = check_init(devidx);
    if (rc) return rc;
    qm.measuring = 0;
    return HH_ERROR_NONE;
}

int HH_CTCStatus(int devidx, int *ctcstatus) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *ctcstatus = !qm.measuring || now_ns() - dev.start_ns >= (int64_t)dev.tacq_ms * 1000000LL;
    return HH_ERROR_NONE;
}

int HH_GetFlags(int devidx, int *flags) {
    int rc = check_init(devidx);
    if (rc) return rc;
    *flags = qm.overflowed ? FLAG_FIFOFULL : 0;
    return HH_ERROR_NONE;
}

int HH_ReadFiFo(int devidx, unsigned int *buffer, int count, int *nactual) {
    int rc = check_init(devidx);
    if (rc) return rc;
    if (buffer == NULL || nactual == NULL || count < 0 || count > TTREADMAX)
        return HH_ERROR_INVALID_ARGUMENT;
    if (qm_pull() != 0) return HH_ERROR_USB_BULKRD_FAIL;
    *nactual = qm_t2_fill(buffer, count);
    return HH_ERROR_NONE;
}

/* ---- mock-only ----------------------------------------------------------------------- */

QM_EXPORT const char *qkdmock_library(void) { return "hhlib"; }

QM_EXPORT void qkdmock_reset(void) {
    hh_reset();
    hh_ready = 1;
}

QM_EXPORT int qkdmock_set_record_version(int version) {
    hh_init_once();
    if (version != 1 && version != 2) return QM_PUSH_BAD_ARGUMENT;
    dev.record_version = version;
    return 0;
}

/* Lets setuptools build this file as an "extension module" (Windows links require the
   symbol); the library is loaded with cffi's dlopen, never imported. */
QM_EXPORT void *PyInit__mock_hhlib(void) { return NULL; }
