/*
 * qkdmock_t2.h: PicoQuant T2 record encoding for the HydraHarp and MultiHarp mocks.
 *
 * A T2 record is 32 bits: bit 31 special, bits 30..25 channel, bits 24..0 time. A detector event
 * on input i (API index i - 1) is a regular record with channel field i - 1; a sync event is a
 * special record with channel 0; an overflow is a special record with channel 0x3F. v2 records
 * carry the number of wraps (2^25 time units each) in the time field; v1 records add 33552000
 * units each and carry no count.
 */
#ifndef QKDMOCK_T2_H
#define QKDMOCK_T2_H

#include "qkdmock_common.h"

#define QM_T2_WRAP_V1 33552000LL
#define QM_T2_WRAP_V2 33554432LL
#define QM_T2_TIME_MASK 0x1FFFFFFu
#define QM_T2_OVERFLOW 0xFE000000u /* special | channel 0x3F */
#define QM_T2_SPECIAL 0x80000000u

typedef struct {
    int64_t base; /* running overflow offset of the records written so far */
    int v2;
} qm_t2_encoder;

static qm_t2_encoder qm_t2 = {0, 1};

/*
 * Moves events from the buffer into up to `max` records. An event needing more records than
 * fit stays in the buffer with its overflows partly written: the next read continues, exactly
 * as a FIFO read cut at any record boundary would.
 */
static int qm_t2_fill(uint32_t *out, int max) {
    int n = 0;
    int64_t wrap = qm_t2.v2 ? QM_T2_WRAP_V2 : QM_T2_WRAP_V1;
    while (n < max && qm.count > 0) {
        qm_event e = qm.buf[qm.head];
        if (e.t - qm_t2.base >= wrap) {
            int64_t k = (e.t - qm_t2.base) / wrap;
            if (qm_t2.v2) {
                if (k > (int64_t)QM_T2_TIME_MASK) k = QM_T2_TIME_MASK;
                out[n++] = QM_T2_OVERFLOW | (uint32_t)k;
                qm_t2.base += k * wrap;
            } else {
                out[n++] = QM_T2_OVERFLOW;
                qm_t2.base += wrap;
            }
            continue;
        }
        /* A delay changed between two pushes can put an event before records already written;
           it is stamped at the current offset rather than dropped. */
        int64_t rel = e.t - qm_t2.base;
        if (rel < 0) rel = 0;
        if (e.ch == 0)
            out[n++] = QM_T2_SPECIAL | (uint32_t)rel;
        else
            out[n++] = ((uint32_t)(e.ch - 1) << 25) | (uint32_t)rel;
        qm.head = (qm.head + 1) % qm.cap;
        qm.count -= 1;
    }
    return n;
}

#endif
