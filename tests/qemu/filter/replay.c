/*
 * Replays a series of TCP delivery-rate readings through QEMU's switchover
 * bandwidth filter (migration/switchover-bw.c of a patched tree, compiled
 * beside this file by tests/qemu/test_filter_agreement.py).
 *
 * stdin: one reading of a channel a line, "time_ms,channel,rate_bytes_per_s,
 * app_limited,delivered,bytes_acked,limited_us" (the fields of
 * SwitchoverBwReading), the readings of one time (every channel) on
 * adjacent lines.
 * stdout: one line a reading, "time_ms,bandwidth_bytes_per_s" after it has
 * been added, or "time_ms,-" while the filter has no estimate.
 */
#include <inttypes.h>
#include <stdio.h>

#include "qemu/osdep.h"
#include "switchover-bw.h"

#define MAX_CHANNELS 8

static void estimate(const SwitchoverBwWindow *w, unsigned int n, int64_t t)
{
    uint64_t bandwidth;

    if (switchover_bw_estimate(w, n, &bandwidth)) {
        printf("%" PRId64 ",%" PRIu64 "\n", t, bandwidth);
    } else {
        printf("%" PRId64 ",-\n", t);
    }
}

int main(void)
{
    SwitchoverBwWindow w[MAX_CHANNELS];
    SwitchoverBwReading r;
    unsigned int channels = 0, channel, app_limited, delivered, i;
    int64_t t, reading = -1;

    for (i = 0; i < MAX_CHANNELS; i++) {
        switchover_bw_window_reset(&w[i]);
    }
    while (scanf("%" SCNd64 ",%u,%" SCNu64 ",%u,%u,%" SCNu64 ",%" SCNu64, &t,
                 &channel, &r.delivery_rate, &app_limited, &delivered,
                 &r.bytes_acked, &r.limited_us) == 7) {
        if (channel >= MAX_CHANNELS) {
            fprintf(stderr, "channel %u: at most %d\n", channel, MAX_CHANNELS);
            return 2;
        }
        if (reading >= 0 && t != reading) {
            estimate(w, channels, reading);
        }
        reading = t;
        channels = channel + 1 > channels ? channel + 1 : channels;
        r.app_limited = app_limited;
        r.delivered = delivered;
        switchover_bw_window_add(&w[channel], t, &r);
    }
    if (reading >= 0) {
        estimate(w, channels, reading);
    }
    return 0;
}
