/*
 * qkdmock_common.h: what the three C mock libraries share (included by each, compiled into each).
 *
 * A mock holds one simulated device's event buffer: a ring of (time, channel) events in device
 * time units. The simulated bench fills it through the mock-only entry points below
 * (qkdmock_*), never through the vendor API; the vendor API only reads it, as the real library
 * reads the device. drivers/sim/clib.py declares these entry points for itself.
 *
 *   qkdmock_set_pull(fn, ctx)   the read functions of the vendor API call fn(ctx) once per
 *                               call while a measurement runs: the bench then advances and
 *                               pushes what its tagger delivered (a non-zero return is reported
 *                               by the vendor function as a transfer error).
 *   qkdmock_push_tags(t_ps, ch, n, lost)
 *                               n events (ps on the bench clock, channel numbers as the bench
 *                               numbers them: 0 = sync/start input, 1.. = inputs) plus `lost`
 *                               events the bench's tagger already dropped. Returns the number
 *                               stored, or a negative QM_PUSH_* code.
 *   qkdmock_lost_events()       events lost so far (full buffer, plus those pushed as lost).
 *   qkdmock_set_fifo_capacity(n), qkdmock_set_resolution_ps(r), qkdmock_reset(),
 *   qkdmock_library()           which vendor library this mock stands for.
 *
 * The device settings act on pushed events as the hardware would: disabled inputs record
 * nothing, a channel's dead time drops events that follow an accepted one too closely (not a
 * loss: the detector's input simply did not fire), and channel delays shift times (events are
 * re-sorted within one push; a delay change can only reorder events across two pushes).
 * Thresholds are recorded and read back: the bench has no pulse heights to apply them to.
 *
 * Not thread-safe: like the vendor libraries' per-device calls, one caller at a time (the
 * drivers hold a lock around each call).
 */
#ifndef QKDMOCK_COMMON_H
#define QKDMOCK_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define QM_EXPORT __declspec(dllexport)
#else
#define QM_EXPORT __attribute__((visibility("default")))
#endif

/* Channel numbers a mock accepts from the bench: 0 (sync or start input) .. 64 (inputs). */
#define QM_MAX_CHANNEL 64
#define QM_NCH (QM_MAX_CHANNEL + 1)

/* Push results. */
#define QM_PUSH_BAD_CHANNEL (-2)
#define QM_PUSH_NEGATIVE_TIME (-3)
#define QM_PUSH_NO_MEMORY (-4)
#define QM_PUSH_BAD_ARGUMENT (-5)

/* What a full buffer does to a new event: a FIFO drops it, a ring overwrites the oldest. */
#define QM_POLICY_DROP_NEWEST 0
#define QM_POLICY_OVERWRITE_OLDEST 1

typedef int (*qkdmock_pull_fn)(void *ctx);

typedef struct {
    int64_t t;  /* device time units */
    int32_t ch; /* bench channel number */
} qm_event;

typedef struct {
    qm_event *buf;
    int64_t cap, head, count;
    int64_t lost;       /* events lost since reset */
    int overflowed;     /* set when an event was lost since the flag was last cleared */
    int upstream_lost;  /* set when the bench pushed events its own tagger had dropped */
    int policy;
    int measuring;
    int64_t resolution_ps;
    int allow_negative; /* T2 records cannot carry negative times; tdcbase timestamps can */
    int enabled[QM_NCH];
    int64_t dead_ps[QM_NCH];
    int64_t delay_ps[QM_NCH];
    int64_t last_ps[QM_NCH];
    int has_last[QM_NCH];
    qkdmock_pull_fn pull;
    void *pull_ctx;
    qm_event *scratch;
    int64_t scratch_cap;
} qm_state;

static qm_state qm;

static void qm_clear_events(void) {
    qm.head = 0;
    qm.count = 0;
}

/* Forgets the inputs' last events (their dead time), as a new measurement does. */
static void qm_clear_dead_time(void) {
    for (int c = 0; c < QM_NCH; c++) qm.has_last[c] = 0;
}

static int qm_set_capacity(int64_t cap) {
    if (cap < 1) return QM_PUSH_BAD_ARGUMENT;
    qm_event *b = (qm_event *)malloc((size_t)cap * sizeof(qm_event));
    if (b == NULL) return QM_PUSH_NO_MEMORY;
    free(qm.buf);
    qm.buf = b;
    qm.cap = cap;
    qm_clear_events();
    return 0;
}

/* Restores the power-on state (settings, buffer, counters); keeps the pull callback off. */
static void qm_reset_common(int64_t cap, int policy, int64_t resolution_ps, int allow_negative) {
    free(qm.buf);
    free(qm.scratch);
    memset(&qm, 0, sizeof(qm));
    qm.policy = policy;
    qm.resolution_ps = resolution_ps;
    qm.allow_negative = allow_negative;
    for (int c = 0; c < QM_NCH; c++) qm.enabled[c] = 1;
    qm_set_capacity(cap);
}

static int64_t qm_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static void qm_store(qm_event e) {
    if (qm.count == qm.cap) {
        qm.lost += 1;
        qm.overflowed = 1;
        if (qm.policy == QM_POLICY_DROP_NEWEST) return;
        qm.head = (qm.head + 1) % qm.cap; /* overwrite the oldest */
        qm.count -= 1;
    }
    qm.buf[(qm.head + qm.count) % qm.cap] = e;
    qm.count += 1;
}

/* Calls the bench (if attached and measuring); returns its non-zero status on failure. */
static int qm_pull(void) {
    if (qm.pull == NULL || !qm.measuring) return 0;
    return qm.pull(qm.pull_ctx);
}

QM_EXPORT void qkdmock_set_pull(qkdmock_pull_fn fn, void *ctx) {
    qm.pull = fn;
    qm.pull_ctx = ctx;
}

QM_EXPORT int64_t qkdmock_lost_events(void) { return qm.lost; }

QM_EXPORT int qkdmock_set_fifo_capacity(int64_t events) { return qm_set_capacity(events); }

QM_EXPORT int qkdmock_set_resolution_ps(int64_t ps) {
    if (ps < 1) return QM_PUSH_BAD_ARGUMENT;
    qm.resolution_ps = ps;
    return 0;
}

QM_EXPORT int64_t qkdmock_push_tags(const int64_t *t_ps, const int32_t *ch, int64_t n,
                                    int64_t lost) {
    if (n < 0 || lost < 0 || (n > 0 && (t_ps == NULL || ch == NULL))) return QM_PUSH_BAD_ARGUMENT;
    for (int64_t i = 0; i < n; i++) {
        if (ch[i] < 0 || ch[i] > QM_MAX_CHANNEL) return QM_PUSH_BAD_CHANNEL;
        if (!qm.allow_negative && t_ps[i] + qm.delay_ps[ch[i]] < 0) return QM_PUSH_NEGATIVE_TIME;
    }
    if (!qm.measuring) return 0; /* nothing is recorded while the device is idle */
    if (lost > 0) {
        qm.lost += lost;
        qm.overflowed = 1;
        qm.upstream_lost = 1;
    }
    if (n > qm.scratch_cap) {
        qm_event *s = (qm_event *)realloc(qm.scratch, (size_t)n * sizeof(qm_event));
        if (s == NULL) return QM_PUSH_NO_MEMORY;
        qm.scratch = s;
        qm.scratch_cap = n;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t c = ch[i];
        if (!qm.enabled[c]) continue;
        if (qm.has_last[c] && t_ps[i] - qm.last_ps[c] < qm.dead_ps[c]) continue;
        qm.has_last[c] = 1;
        qm.last_ps[c] = t_ps[i];
        qm_event e = {qm_floor_div(t_ps[i] + qm.delay_ps[c], qm.resolution_ps), c};
        /* insertion: the input is in time order, so delays move an event only a little */
        int64_t j = m;
        while (j > 0 && qm.scratch[j - 1].t > e.t) {
            qm.scratch[j] = qm.scratch[j - 1];
            j--;
        }
        qm.scratch[j] = e;
        m++;
    }
    for (int64_t i = 0; i < m; i++) qm_store(qm.scratch[i]);
    return m;
}

#endif
