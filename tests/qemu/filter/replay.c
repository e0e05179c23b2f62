/*
 * Replays a series of TCP delivery-rate readings through QEMU's switchover
 * bandwidth filter (migration/switchover-bw.c of a patched tree, compiled
 * beside this file by tests/qemu/test_filter_agreement.py).
 *
 * stdin: one sample a line, "time_ms,channel,rate_bytes_per_s,app_limited",
 * the samples of one reading (every channel at one time) on adjacent lines.
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
    unsigned int channels = 0, channel, app_limited, i;
    int64_t t, reading = -1;
    uint64_t rate;

    for (i = 0; i < MAX_CHANNELS; i++) {
        switchover_bw_window_reset(&w[i]);
    }
    while (scanf("%" SCNd64 ",%u,%" SCNu64 ",%u", &t, &channel, &rate,
                 &app_limited) == 4) {
        if (channel >= MAX_CHANNELS) {
            fprintf(stderr, "channel %u: at most %d\n", channel, MAX_CHANNELS);
            return 2;
        }
        if (reading >= 0 && t != reading) {
            estimate(w, channels, reading);
        }
        reading = t;
        channels = channel + 1 > channels ? channel + 1 : channels;
        switchover_bw_window_add(&w[channel], t, rate, app_limited);
    }
    if (reading >= 0) {
        estimate(w, channels, reading);
    }
    return 0;
}
