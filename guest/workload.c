/*
 * miglab guest workload: the /init of the test guest's initramfs.
 *
 * It dirties guest memory at paced rates while migration runs, checks that
 * every page it wrote still holds what it wrote, and prints a heartbeat so
 * the host can see when the guest stops and resumes.  Configuration comes
 * from the kernel command line (miglab.NAME=VALUE); output goes to the
 * console, one line per event, every line starting with "ml:".
 *
 *   ml:READY <config>          set up, hot set filled, loop starting
 *   ml:H <seq>                 heartbeat, every heartbeat_ms
 *   ml:R <seq> dirty_bps=N zero_bps=N   measured rates over the last second
 *   ml:V <pass> pages=N bad=N  a full verification pass over the hot set ended
 *   ml:C <page> want_gen=N got_index=N got_gen=N   a corrupt page was found
 *
 * Hot-set page layout: word 0 = page index, word 1 = generation, the rest a
 * pseudo-random stream seeded from both.  The generation table lives in its
 * own allocation, so a page lost by migration disagrees with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define PAGE_WORDS (PAGE_BYTES / sizeof(uint64_t))
#define MIB (1024u * 1024u)
#define MAX_CORRUPT_LINES_PER_PASS 16
/* Never catch up more than this much backlog at once (after a pause). */
#define MAX_BACKLOG_NS 100000000ull

struct config {
    unsigned hot_mib;        /* hot set size */
    unsigned dirty_rate_mib; /* hot set rewrite rate, MiB/s */
    unsigned zero_mib;       /* zero set size */
    unsigned zero_rate_mib;  /* zero set rewrite rate, MiB/s */
    unsigned heartbeat_ms;
    unsigned verify_rate_mib; /* verification speed, MiB/s */
};

static struct config cfg = {
    .hot_mib = 32, .dirty_rate_mib = 40, .zero_mib = 0, .zero_rate_mib = 0,
    .heartbeat_ms = 10, .verify_rate_mib = 64,
};

static void say(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if (n > (int)sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* The console may be slow; write() can be short. */
    for (int off = 0; off < n;) {
        ssize_t w = write(STDOUT_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        off += w;
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* First word of the stream of page @index at generation @gen. */
static uint64_t page_seed(uint64_t index, uint64_t gen)
{
    return splitmix64(index * 0x100000001b3ull ^ splitmix64(gen)) | 1;
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void fill_page(uint64_t *page, uint64_t index, uint64_t gen)
{
    uint64_t s = page_seed(index, gen);

    page[0] = index;
    page[1] = gen;
    for (unsigned k = 2; k < PAGE_WORDS; k++) {
        page[k] = xorshift64(&s);
    }
}

static int page_ok(const uint64_t *page, uint64_t index, uint64_t gen)
{
    uint64_t s = page_seed(index, gen);

    if (page[0] != index || page[1] != gen) {
        return 0;
    }
    for (unsigned k = 2; k < PAGE_WORDS; k++) {
        if (page[k] != xorshift64(&s)) {
            return 0;
        }
    }
    return 1;
}

static void parse_cmdline(void)
{
    static const struct {
        const char *key;
        unsigned *val;
    } keys[] = {
        { "miglab.hot_mib=", &cfg.hot_mib },
        { "miglab.dirty_rate_mib=", &cfg.dirty_rate_mib },
        { "miglab.zero_mib=", &cfg.zero_mib },
        { "miglab.zero_rate_mib=", &cfg.zero_rate_mib },
        { "miglab.heartbeat_ms=", &cfg.heartbeat_ms },
        { "miglab.verify_rate_mib=", &cfg.verify_rate_mib },
    };
    char buf[4096];
    ssize_t n;
    int fd;

    mkdir("/proc", 0555);
    if (mount("proc", "/proc", "proc", 0, NULL) != 0 && errno != EBUSY) {
        say("ml:WARN cannot mount /proc: %s; using defaults", strerror(errno));
        return;
    }
    fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0) {
        return;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return;
    }
    buf[n] = '\0';
    for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            size_t len = strlen(keys[i].key);
            if (strncmp(tok, keys[i].key, len) == 0) {
                *keys[i].val = strtoul(tok + len, NULL, 10);
            }
        }
    }
    if (cfg.heartbeat_ms == 0) {
        cfg.heartbeat_ms = 10;
    }
}

static void *alloc_pages(size_t pages)
{
    void *p;

    if (pages == 0) {
        return NULL;
    }
    p = mmap(NULL, pages * PAGE_BYTES, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        say("ml:FATAL cannot allocate %zu pages: %s", pages, strerror(errno));
        for (;;) {
            pause();
        }
    }
    return p;
}

/* How many units a paced activity may do now; @done is what it did so far. */
static uint64_t paced_budget(uint64_t rate_per_s, uint64_t start_ns,
                             uint64_t now, uint64_t *done)
{
    uint64_t due = (now - start_ns) * rate_per_s / 1000000000ull;
    uint64_t max_backlog = rate_per_s * MAX_BACKLOG_NS / 1000000000ull + 1;

    if (due > *done + max_backlog) {
        *done = due - max_backlog; /* forget time we were stopped */
    }
    return due > *done ? due - *done : 0;
}

int main(void)
{
    size_t hot_pages, zero_pages;
    uint64_t *hot, *gen, *zero;
    uint64_t rng = 0x853c49e6748fea9bull;
    uint64_t start, next_hb, next_report, hb_seq = 0, report_seq = 0;
    uint64_t dirtied = 0, zeroed = 0, verified = 0;
    uint64_t dirtied_at_report = 0, zeroed_at_report = 0;
    uint64_t verify_pos = 0, verify_pass = 0, verify_bad = 0;
    unsigned corrupt_lines = 0;

    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    parse_cmdline();

    hot_pages = (size_t)cfg.hot_mib * (MIB / PAGE_BYTES);
    zero_pages = (size_t)cfg.zero_mib * (MIB / PAGE_BYTES);
    hot = alloc_pages(hot_pages);
    zero = alloc_pages(zero_pages);
    gen = calloc(hot_pages ? hot_pages : 1, sizeof(*gen));
    for (size_t i = 0; i < hot_pages; i++) {
        fill_page(hot + i * PAGE_WORDS, i, 0);
    }
    say("ml:READY hot_mib=%u dirty_rate_mib=%u zero_mib=%u zero_rate_mib=%u "
        "heartbeat_ms=%u verify_rate_mib=%u",
        cfg.hot_mib, cfg.dirty_rate_mib, cfg.zero_mib, cfg.zero_rate_mib,
        cfg.heartbeat_ms, cfg.verify_rate_mib);

    start = now_ns();
    next_hb = start;
    next_report = start + 1000000000ull;
    for (;;) {
        uint64_t t = now_ns();
        uint64_t n, sleep_ns;

        if (hot_pages) {
            n = paced_budget((uint64_t)cfg.dirty_rate_mib * MIB / PAGE_BYTES,
                             start, t, &dirtied);
            for (; n; n--, dirtied++) {
                uint64_t i = xorshift64(&rng) % hot_pages;
                gen[i]++;
                fill_page(hot + i * PAGE_WORDS, i, gen[i]);
            }
            n = paced_budget((uint64_t)cfg.verify_rate_mib * MIB / PAGE_BYTES,
                             start, t, &verified);
            for (; n; n--, verified++) {
                uint64_t *page = hot + verify_pos * PAGE_WORDS;
                if (!page_ok(page, verify_pos, gen[verify_pos])) {
                    verify_bad++;
                    if (corrupt_lines++ < MAX_CORRUPT_LINES_PER_PASS) {
                        say("ml:C %llu want_gen=%llu got_index=%llu got_gen=%llu",
                            (unsigned long long)verify_pos,
                            (unsigned long long)gen[verify_pos],
                            (unsigned long long)page[0],
                            (unsigned long long)page[1]);
                    }
                }
                if (++verify_pos == hot_pages) {
                    say("ml:V %llu pages=%zu bad=%llu",
                        (unsigned long long)++verify_pass, hot_pages,
                        (unsigned long long)verify_bad);
                    verify_pos = 0;
                    verify_bad = 0;
                    corrupt_lines = 0;
                }
            }
        }
        if (zero_pages) {
            n = paced_budget((uint64_t)cfg.zero_rate_mib * MIB / PAGE_BYTES,
                             start, t, &zeroed);
            for (; n; n--, zeroed++) {
                memset(zero + (xorshift64(&rng) % zero_pages) * PAGE_WORDS, 0,
                       PAGE_BYTES);
            }
        }

        t = now_ns();
        if (t >= next_hb) {
            say("ml:H %llu", (unsigned long long)++hb_seq);
            next_hb += cfg.heartbeat_ms * 1000000ull;
            if (next_hb <= t) {
                next_hb = t + cfg.heartbeat_ms * 1000000ull;
            }
        }
        if (t >= next_report) {
            say("ml:R %llu dirty_bps=%llu zero_bps=%llu",
                (unsigned long long)++report_seq,
                (unsigned long long)((dirtied - dirtied_at_report) * PAGE_BYTES),
                (unsigned long long)((zeroed - zeroed_at_report) * PAGE_BYTES));
            dirtied_at_report = dirtied;
            zeroed_at_report = zeroed;
            next_report += 1000000000ull;
            if (next_report <= t) {
                next_report = t + 1000000000ull;
            }
        }

        /* Sleep in short steps so that the paced work stays smooth. */
        sleep_ns = next_hb > t ? next_hb - t : 0;
        if (sleep_ns > 1000000ull) {
            sleep_ns = 1000000ull;
        }
        if (sleep_ns) {
            struct timespec ts = { 0, (long)sleep_ns };
            nanosleep(&ts, NULL);
        }
    }
}
