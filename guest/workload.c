/*
 * miglab guest workload: the /init of the test guest's initramfs.
 *
 * It dirties guest memory at paced rates while migration runs, checks that
 * every page it owns still holds what it wrote, and prints a heartbeat so
 * the host can see when the guest stops and resumes.  Configuration comes
 * from the kernel command line (miglab.NAME=VALUE, decimal, each must fit
 * an unsigned int); output goes to the console, one line per event, every
 * line starting with "ml:".
 *
 *   ml:READY <config> cpus=N hot_paddr0=0xP zero_paddr0=0xP
 *       set up, sets filled and locked, threads pinned, loop starting;
 *       <config> is hot_mib=N dirty_rate_mib=N zero_mib=N zero_rate_mib=N
 *       heartbeat_ms=N verify_rate_mib=N threads=N; cpus is how many CPUs
 *       the guest kernel has online; the paddrs are the guest-physical
 *       addresses of page 0 of the hot and of the zero set (0 when the set
 *       is empty)
 *   ml:H <seq>
 *       heartbeat, every heartbeat_ms
 *   ml:R <seq> dirty_bps=N zero_bps=N
 *       measured rewrite rates over the last second (dirty_bps: all the
 *       threads together)
 *   ml:V <pass> pages=N bad=N
 *       a verification pass ended: it swept N pages (hot set then zero set,
 *       every page the workload owns) and bad corrupt pages were found
 *       during it, by the sweep or before a rewrite
 *   ml:C set=hot page=I paddr=0xP want_gen=N got_index=N got_gen=N by=WHO
 *   ml:C set=zero page=I paddr=0xP nonzero_word=N got=0xW by=WHO
 *       page I of a set is corrupt; paddr is its guest-physical address;
 *       WHO is "sweep" (the verification sweep) or "rewrite" (the check made
 *       before the workload rewrites a page).  At most
 *       MAX_CORRUPT_LINES_PER_PASS lines per pass; "bad=" counts them all.
 *   ml:NUMA set=S pages_per_node=A,B,...
 *       with miglab.numa_nodes=N >= 2: the sets are interleaved over the N
 *       nodes; how many pages of set S each node holds (before READY)
 *   ml:T <thread> cpu=C first=I pages=N rate_pages=R paddr=0xP
 *       with miglab.threads=N >= 2: thread T is pinned to CPU C and rewrites
 *       hot pages [I, I + N) at R pages/s; paddr is the guest-physical
 *       address of page I (0 when the share is empty); before READY
 *   ml:WARN <text>, ml:FATAL <text>
 *       set-up problems; after FATAL (e.g. "ml:FATAL bad miglab.KEY=VALUE")
 *       the workload pauses forever
 *
 * Hot-set page layout: word 0 = page index, word 1 = generation, the rest a
 * pseudo-random stream seeded from both.  The generation table lives in its
 * own allocation, so a page lost by migration disagrees with it (and so does
 * a corrupted table entry: it is read, and checked against its page, before
 * every rewrite).  Zero-set pages must be all zeros.
 *
 * The sets are locked (mlockall), kept out of huge pages and out of
 * compaction, so that their physical addresses stay what READY and "C"
 * lines say: a test can corrupt a known page from outside the guest.
 *
 * Threads (miglab.threads=N, one per vCPU): thread i is pinned to CPU i and
 * rewrites only its own contiguous share of the hot set, at its share of the
 * rate.  Thread 0 is the main thread; it also keeps the heartbeat, the zero
 * set, the rate reports and the verification sweep, which reads every
 * thread's pages while their owners rewrite them.  Each hot page therefore
 * has a sequence count (see rewrite_hot() and sweep_hot()): a sweep that
 * overlapped a rewrite reads the page again instead of calling a half-written
 * page corrupt.  With one thread this is exactly the single-threaded
 * workload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define PAGE_WORDS (PAGE_BYTES / sizeof(uint64_t))
#define MIB (1024u * 1024u)
#define MAX_CORRUPT_LINES_PER_PASS 16
#define MAX_NUMA_NODES 16 /* nodes the interleave mask and NUMA line cover */
#define MAX_THREADS 64    /* rewriting threads, one per vCPU */
/*
 * Stack of threads 1 and up.  mlockall(MCL_FUTURE) faults every stack in
 * and locks it: glibc's default 8 MiB each would take guest RAM the sets
 * were sized against.  A rewriter's deepest path is say()'s vsnprintf.
 */
#define THREAD_STACK_BYTES (256u * 1024u)
#define MPOL_INTERLEAVE 3 /* <linux/mempolicy.h>, which libc does not ship */
/* Never catch up more than this much backlog at once (after a pause). */
#define MAX_BACKLOG_NS 100000000ull
#define NS_PER_S 1000000000ull
/* /proc/PID/pagemap entry: bits 0-54 PFN, bit 63 page present. */
#define PAGEMAP_PFN_MASK ((1ull << 55) - 1)
#define PAGEMAP_PRESENT (1ull << 63)

struct config {
    unsigned hot_mib;        /* hot set size */
    unsigned dirty_rate_mib; /* hot set rewrite rate, MiB/s */
    unsigned zero_mib;       /* zero set size */
    unsigned zero_rate_mib;  /* zero set rewrite rate, MiB/s */
    unsigned heartbeat_ms;
    unsigned verify_rate_mib; /* verification speed, MiB/s */
    unsigned numa_nodes;      /* guest NUMA nodes to interleave the sets over */
    unsigned threads;         /* hot-set rewriters, thread i pinned to CPU i */
};

static struct config cfg = {
    .hot_mib = 32, .dirty_rate_mib = 40, .zero_mib = 0, .zero_rate_mib = 0,
    .heartbeat_ms = 10, .verify_rate_mib = 64, .numa_nodes = 1, .threads = 1,
};

/*
 * One thread rewriting its share of the hot set.  Only it writes its pages,
 * their gen[] entries and their hot_seq[] counts; the main thread reads them
 * (the sweep) and reads @dirtied (the "R" line).
 */
struct rewriter {
    pthread_t thread;
    unsigned cpu;          /* pinned to it */
    size_t first, pages;   /* its share: hot pages [first, first + pages) */
    uint64_t rate_pages;   /* its share of the rate, pages/s */
    uint64_t rng;
    uint64_t dirtied;      /* rewrites paced so far; atomic: read for "R" */
    int pin_errno;         /* sched_setaffinity()'s errno, 0 if pinned */
};

static struct rewriter rewriters[MAX_THREADS];
/* Workers wait here twice: pinned (main checks), then started (READY out). */
static pthread_barrier_t pinned_barrier, start_barrier;
static uint64_t pacing_start_ns; /* set before start_barrier */

/* The memory the workload owns and checks. */
static uint64_t *hot, *zero, *gen;
static size_t hot_pages, zero_pages;
/*
 * Per hot page, a sequence count: odd while the page's owner rewrites it
 * (check, generation, contents), even otherwise.  A reader that saw the
 * same even count before and after reading a page read one generation.
 */
static _Atomic uint32_t *hot_seq;
static int pagemap_fd = -1;

/* The verification pass in progress; threads count what their checks find. */
static uint64_t verify_pass;
static _Atomic uint64_t verify_bad;
static _Atomic unsigned corrupt_lines;
/* One line at a time on the console, whichever thread prints it. */
static pthread_mutex_t say_lock = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...)
{
    char line[512];
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
    /* The console may be slow; write() can be short, and another thread's
     * line must not land in the middle of the rest. */
    pthread_mutex_lock(&say_lock);
    for (int off = 0; off < n;) {
        ssize_t w = write(STDOUT_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            break;
        }
        off += w;
    }
    pthread_mutex_unlock(&say_lock);
}

/* As pid 1 we must not exit (the kernel would panic): stop here for good. */
static void __attribute__((noreturn)) hang(void)
{
    for (;;) {
        pause();
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
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

/* Index of the first non-zero word of @page, PAGE_WORDS if there is none. */
static unsigned first_nonzero_word(const uint64_t *page)
{
    uint64_t any = 0;

    /* OR everything first: the common case is a clean page, and this loop
     * has no branch to mispredict or to slow TCG down. */
    for (unsigned k = 0; k < PAGE_WORDS; k++) {
        any |= page[k];
    }
    if (!any) {
        return PAGE_WORDS;
    }
    for (unsigned k = 0; k < PAGE_WORDS; k++) {
        if (page[k]) {
            return k;
        }
    }
    return PAGE_WORDS;
}

/* Guest-physical address of @p, 0 if unknown (no pagemap, page absent). */
static uint64_t phys_addr(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    uint64_t entry;
    off_t off = (off_t)(v / PAGE_BYTES) * (off_t)sizeof(entry);

    if (pagemap_fd < 0 ||
        pread(pagemap_fd, &entry, sizeof(entry), off) != sizeof(entry)) {
        return 0;
    }
    if (!(entry & PAGEMAP_PRESENT)) {
        return 0;
    }
    return (entry & PAGEMAP_PFN_MASK) * PAGE_BYTES + v % PAGE_BYTES;
}

/* Count a corrupt page in the current pass; may it print its "C" line? */
static int count_corrupt(void)
{
    atomic_fetch_add_explicit(&verify_bad, 1, memory_order_relaxed);
    return atomic_fetch_add_explicit(&corrupt_lines, 1, memory_order_relaxed) <
           MAX_CORRUPT_LINES_PER_PASS;
}

/* Report hot page @i, found holding @got_index/@got_gen instead of @want. */
static void report_hot(uint64_t i, uint64_t want, uint64_t got_index,
                       uint64_t got_gen, const char *by)
{
    if (!count_corrupt()) {
        return;
    }
    say("ml:C set=hot page=%llu paddr=0x%llx want_gen=%llu got_index=%llu "
        "got_gen=%llu by=%s",
        (unsigned long long)i, (unsigned long long)phys_addr(hot + i * PAGE_WORDS),
        (unsigned long long)want, (unsigned long long)got_index,
        (unsigned long long)got_gen, by);
}

/*
 * Rewrite hot page @i with its next generation, after checking that it still
 * holds the current one (a page corrupted in transit and rewritten before the
 * sweep reached it would never be seen otherwise).  Only the page's owner
 * calls this.
 *
 * The check, the new generation and the new contents all happen while the
 * page's sequence count is odd, so a sweep that overlaps any of it reads the
 * page again; the page was checked anyway, here.  The release fence orders
 * the odd count before the page's stores (a reader that sees any new word
 * sees the odd count afterwards), the release store orders them before the
 * even count.  Under TCG the guest's x86 ordering is kept across vCPU
 * threads (MTTCG emits the barriers), so this holds there as on hardware.
 */
static void rewrite_hot(uint64_t i)
{
    uint64_t *page = hot + i * PAGE_WORDS;
    uint32_t seq = atomic_load_explicit(&hot_seq[i], memory_order_relaxed);
    uint64_t want = gen[i];

    atomic_store_explicit(&hot_seq[i], seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    if (!page_ok(page, i, want)) {
        report_hot(i, want, page[0], page[1], "rewrite");
    }
    __atomic_store_n(&gen[i], want + 1, __ATOMIC_RELAXED);
    fill_page(page, i, want + 1);
    atomic_store_explicit(&hot_seq[i], seq + 2, memory_order_release);
}

/*
 * The sweep's check of hot page @i, which its owner may be rewriting on
 * another vCPU meanwhile.  A read that did not see one even sequence count
 * before and after may have seen half of two generations: it is retried,
 * never reported.  Retrying waits at most for one rewrite (microseconds,
 * or a host time slice if the owner's vCPU thread is descheduled), and the
 * retried read checks the new generation, while the old one was checked by
 * the rewrite itself: no page escapes the pass.
 */
static void sweep_hot(uint64_t i)
{
    const uint64_t *page = hot + i * PAGE_WORDS;

    for (;;) {
        uint32_t seq = atomic_load_explicit(&hot_seq[i], memory_order_acquire);
        uint64_t want, got_index, got_gen;
        int ok;

        if (seq & 1) {
            sched_yield();
            continue;
        }
        want = __atomic_load_n(&gen[i], __ATOMIC_RELAXED);
        ok = page_ok(page, i, want);
        got_index = page[0];
        got_gen = page[1];
        /* The page's loads before the count's second load. */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&hot_seq[i], memory_order_relaxed) != seq) {
            continue;
        }
        if (!ok) {
            report_hot(i, want, got_index, got_gen, "sweep");
        }
        return;
    }
}

/* Check that zero page @i is all zeros; report it if not. */
static void check_zero(uint64_t i, const char *by)
{
    const uint64_t *page = zero + i * PAGE_WORDS;
    unsigned k = first_nonzero_word(page);

    if (k == PAGE_WORDS || !count_corrupt()) {
        return;
    }
    say("ml:C set=zero page=%llu paddr=0x%llx nonzero_word=%u got=0x%llx by=%s",
        (unsigned long long)i, (unsigned long long)phys_addr(page), k,
        (unsigned long long)page[k], by);
}

/* A whole decimal number that fits an unsigned int, nothing after it. */
static int parse_unsigned(const char *s, unsigned *out)
{
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9') {
        return -1; /* strtoull would take "-1", " 1" or "" */
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > UINT_MAX) {
        return -1;
    }
    *out = (unsigned)v;
    return 0;
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
        { "miglab.numa_nodes=", &cfg.numa_nodes },
        { "miglab.threads=", &cfg.threads },
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
            if (strncmp(tok, keys[i].key, len) != 0) {
                continue;
            }
            /* A truncated value would run a workload nobody asked for. */
            if (parse_unsigned(tok + len, keys[i].val) != 0) {
                say("ml:FATAL bad %s", tok);
                hang();
            }
        }
    }
    if (cfg.heartbeat_ms == 0) {
        cfg.heartbeat_ms = 10;
    }
}

/* Anonymous memory for a set, not populated yet (see pin_memory()). */
static uint64_t *alloc_pages(size_t pages)
{
    void *p;

    if (pages == 0) {
        return NULL;
    }
    if (pages > SIZE_MAX / PAGE_BYTES) {
        say("ml:FATAL cannot allocate %zu pages: too many", pages);
        hang();
    }
    p = mmap(NULL, pages * PAGE_BYTES, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        say("ml:FATAL cannot allocate %zu pages: %s", pages, strerror(errno));
        hang();
    }
    /*
     * Before anything is faulted in: a huge page could be split or
     * collapsed later, moving our pages.  Without THP support the call
     * fails, and there is nothing to avoid.
     */
    madvise(p, pages * PAGE_BYTES, MADV_NOHUGEPAGE);
    return p;
}

/*
 * Keep every page at one physical address: locked pages are never swapped
 * or reclaimed, and with compact_unevictable_allowed=0 compaction leaves
 * them where they are too.  Failures are reported, not fatal: the checks
 * stay valid, only the addresses printed may go stale.
 */
static void pin_memory(void)
{
    int fd = open("/proc/sys/vm/compact_unevictable_allowed", O_WRONLY);

    if (fd >= 0) {
        if (write(fd, "0\n", 2) != 2) {
            say("ml:WARN cannot disable compaction of locked pages: %s",
                strerror(errno));
        }
        close(fd);
    }
    /* MCL_CURRENT faults every page in, writable ones by a write fault, so
     * each zero-set page gets a page of its own, not the shared zero page. */
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        say("ml:WARN mlockall: %s; physical addresses may change",
            strerror(errno));
    }
}

/*
 * With several NUMA nodes, the sets are interleaved page by page over all
 * of them (set_mempolicy(MPOL_INTERLEAVE) before the pages are faulted
 * in), so that every node's RAM block holds pages that are rewritten and
 * verified.  Raw syscalls: the static workload links no libnuma.
 */
static void spread_over_nodes(void)
{
    unsigned long mask = 0;

    if (cfg.numa_nodes < 2) {
        return;
    }
    if (cfg.numa_nodes > MAX_NUMA_NODES) {
        say("ml:FATAL bad miglab.numa_nodes=%u (at most %u)", cfg.numa_nodes,
            MAX_NUMA_NODES);
        hang();
    }
    for (unsigned i = 0; i < cfg.numa_nodes; i++) {
        mask |= 1ul << i;
    }
    if (syscall(SYS_set_mempolicy, MPOL_INTERLEAVE, &mask,
                (unsigned long)MAX_NUMA_NODES + 1) != 0) {
        say("ml:FATAL set_mempolicy(MPOL_INTERLEAVE, %u nodes): %s",
            cfg.numa_nodes, strerror(errno));
        hang();
    }
}

/*
 * "ml:NUMA set=S pages_per_node=A,B,...": where a set's pages are, as the
 * kernel reports them (move_pages() with no target nodes only asks).
 */
static void report_nodes(const char *set, uint64_t *base, size_t pages)
{
    enum { BATCH = 512 };
    size_t count[MAX_NUMA_NODES] = { 0 };
    char line[256];
    int off = 0;

    if (cfg.numa_nodes < 2 || pages == 0) {
        return;
    }
    for (size_t i = 0; i < pages; i += BATCH) {
        void *addr[BATCH];
        int status[BATCH];
        size_t n = pages - i < BATCH ? pages - i : BATCH;

        for (size_t k = 0; k < n; k++) {
            addr[k] = base + (i + k) * PAGE_WORDS;
        }
        if (syscall(SYS_move_pages, 0, n, addr, NULL, status, 0) != 0) {
            say("ml:WARN move_pages: %s", strerror(errno));
            return;
        }
        for (size_t k = 0; k < n; k++) {
            if (status[k] >= 0 && status[k] < MAX_NUMA_NODES) {
                count[status[k]]++;
            }
        }
    }
    for (unsigned node = 0; node < cfg.numa_nodes && off < (int)sizeof(line);
         node++) {
        off += snprintf(line + off, sizeof(line) - off, "%s%zu",
                        node ? "," : "", count[node]);
    }
    say("ml:NUMA set=%s pages_per_node=%s", set, line);
}

/* How many units a paced activity may do now; @done is what it did so far. */
static uint64_t paced_budget(uint64_t rate_per_s, uint64_t start_ns,
                             uint64_t now, uint64_t *done)
{
    /* 128-bit: rates up to UINT_MAX MiB/s would overflow within seconds. */
    uint64_t due = (uint64_t)((unsigned __int128)(now - start_ns) *
                              rate_per_s / NS_PER_S);
    uint64_t max_backlog = (uint64_t)((unsigned __int128)rate_per_s *
                                      MAX_BACKLOG_NS / NS_PER_S) + 1;

    if (due > *done + max_backlog) {
        *done = due - max_backlog; /* forget time we were stopped */
    }
    return due > *done ? due - *done : 0;
}

/*
 * Give thread @t its contiguous share of the hot set and of the rate.  The
 * bounds are floor(total * t / threads): the shares add up to the whole
 * exactly, and with one thread the share is everything.  The rate follows
 * the pages, so every page is rewritten about as often as with one thread.
 */
static void share_out(struct rewriter *r, unsigned t)
{
    uint64_t rate = (uint64_t)cfg.dirty_rate_mib * MIB / PAGE_BYTES;
    size_t end = (size_t)((unsigned __int128)hot_pages * (t + 1) / cfg.threads);

    r->cpu = t;
    r->first = (size_t)((unsigned __int128)hot_pages * t / cfg.threads);
    r->pages = end - r->first;
    r->rate_pages = hot_pages == 0 ? 0 :
        (uint64_t)((unsigned __int128)rate * end / hot_pages -
                   (unsigned __int128)rate * r->first / hot_pages);
    r->rng = t == 0 ? 0x853c49e6748fea9bull : splitmix64(t) | 1;
}

/* Pin the calling thread to @cpu; 0 or the errno. */
static int pin_to(unsigned cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : errno;
}

/* The rewrites @r is due at @now. */
static void rewrite_share(struct rewriter *r, uint64_t now)
{
    uint64_t done = r->dirtied;
    uint64_t n;

    if (r->pages == 0) {
        return;
    }
    n = paced_budget(r->rate_pages, pacing_start_ns, now, &done);
    for (; n; n--, done++) {
        rewrite_hot(r->first + xorshift64(&r->rng) % r->pages);
    }
    __atomic_store_n(&r->dirtied, done, __ATOMIC_RELAXED);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / NS_PER_S), (long)(ns % NS_PER_S) };

    nanosleep(&ts, NULL);
}

/* Threads 1 and up: pinned, then rewriting their share for ever. */
static void *rewriter_main(void *arg)
{
    struct rewriter *r = arg;

    r->pin_errno = pin_to(r->cpu);
    pthread_barrier_wait(&pinned_barrier);
    pthread_barrier_wait(&start_barrier); /* never passed if one failed */
    for (;;) {
        rewrite_share(r, now_ns());
        /* Short steps, as the main thread's, keep the pacing smooth. */
        sleep_ns(1000000ull);
    }
    return NULL;
}

/*
 * Thread 0 is the caller; threads 1 and up are started, and each pins
 * itself.  They wait on start_barrier until READY is out, so a pinning that
 * failed (a CPU the guest does not have) is fatal before anything starts.
 */
static void start_rewriters(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_attr_t attr;
    int err;

    if (cfg.threads < 1 || cfg.threads > MAX_THREADS) {
        say("ml:FATAL bad miglab.threads=%u (1 to %u)", cfg.threads, MAX_THREADS);
        hang();
    }
    if (online < (long)cfg.threads) {
        say("ml:FATAL miglab.threads=%u but the guest has %ld CPUs online",
            cfg.threads, online);
        hang();
    }
    for (unsigned t = 0; t < cfg.threads; t++) {
        share_out(&rewriters[t], t);
    }
    if (pthread_barrier_init(&pinned_barrier, NULL, cfg.threads) != 0 ||
        pthread_barrier_init(&start_barrier, NULL, cfg.threads) != 0) {
        say("ml:FATAL pthread_barrier_init failed");
        hang();
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK_BYTES);
    for (unsigned t = 1; t < cfg.threads; t++) {
        err = pthread_create(&rewriters[t].thread, &attr, rewriter_main,
                             &rewriters[t]);
        if (err) {
            say("ml:FATAL cannot start thread %u: %s", t, strerror(err));
            hang();
        }
    }
    pthread_attr_destroy(&attr);
    rewriters[0].pin_errno = pin_to(0);
    pthread_barrier_wait(&pinned_barrier);
    for (unsigned t = 0; t < cfg.threads; t++) {
        struct rewriter *r = &rewriters[t];

        if (r->pin_errno) {
            say("ml:FATAL cannot pin thread %u to CPU %u: %s", t, r->cpu,
                strerror(r->pin_errno));
            hang();
        }
        if (cfg.threads >= 2) {
            say("ml:T %u cpu=%u first=%zu pages=%zu rate_pages=%llu paddr=0x%llx",
                t, r->cpu, r->first, r->pages,
                (unsigned long long)r->rate_pages,
                (unsigned long long)(r->pages ?
                                     phys_addr(hot + r->first * PAGE_WORDS) : 0));
        }
    }
}

int main(void)
{
    size_t verify_pages;
    uint64_t rng = 0x2545f4914f6cdd1dull; /* the zero set's page picks */
    uint64_t next_hb, next_report, hb_seq = 0, report_seq = 0;
    uint64_t zeroed = 0, verified = 0;
    uint64_t dirtied_at_report = 0, zeroed_at_report = 0;
    uint64_t verify_pos = 0;

    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    parse_cmdline();

    /* pid 1 as root: the PFNs in it are visible (they read 0 otherwise). */
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
    if (pagemap_fd < 0) {
        say("ml:WARN cannot open /proc/self/pagemap: %s; paddr=0x0 everywhere",
            strerror(errno));
    }
    hot_pages = (size_t)cfg.hot_mib * (MIB / PAGE_BYTES);
    zero_pages = (size_t)cfg.zero_mib * (MIB / PAGE_BYTES);
    verify_pages = hot_pages + zero_pages;
    hot = alloc_pages(hot_pages);
    zero = alloc_pages(zero_pages);
    gen = calloc(hot_pages ? hot_pages : 1, sizeof(*gen));
    hot_seq = calloc(hot_pages ? hot_pages : 1, sizeof(*hot_seq));
    if (!gen || !hot_seq) {
        say("ml:FATAL cannot allocate the generation table of %zu pages",
            hot_pages);
        hang();
    }
    spread_over_nodes();
    pin_memory();
    for (size_t i = 0; i < hot_pages; i++) {
        fill_page(hot + i * PAGE_WORDS, i, 0);
    }
    /* Write-fault each zero page even if mlockall failed (see pin_memory). */
    for (size_t i = 0; i < zero_pages; i++) {
        zero[i * PAGE_WORDS] = 0;
    }
    report_nodes("hot", hot, hot_pages);
    report_nodes("zero", zero, zero_pages);
    start_rewriters();
    say("ml:READY hot_mib=%u dirty_rate_mib=%u zero_mib=%u zero_rate_mib=%u "
        "heartbeat_ms=%u verify_rate_mib=%u threads=%u cpus=%ld "
        "hot_paddr0=0x%llx zero_paddr0=0x%llx",
        cfg.hot_mib, cfg.dirty_rate_mib, cfg.zero_mib, cfg.zero_rate_mib,
        cfg.heartbeat_ms, cfg.verify_rate_mib, cfg.threads,
        sysconf(_SC_NPROCESSORS_ONLN),
        (unsigned long long)(hot_pages ? phys_addr(hot) : 0),
        (unsigned long long)(zero_pages ? phys_addr(zero) : 0));

    pacing_start_ns = now_ns();
    /* The barrier publishes pacing_start_ns to the other threads. */
    pthread_barrier_wait(&start_barrier);
    next_hb = pacing_start_ns;
    next_report = pacing_start_ns + NS_PER_S;
    for (;;) {
        uint64_t t = now_ns();
        uint64_t n, dirtied, pause_ns;

        rewrite_share(&rewriters[0], t);
        if (zero_pages) {
            n = paced_budget((uint64_t)cfg.zero_rate_mib * MIB / PAGE_BYTES,
                             pacing_start_ns, t, &zeroed);
            for (; n; n--, zeroed++) {
                uint64_t i = xorshift64(&rng) % zero_pages;

                check_zero(i, "rewrite");
                memset(zero + i * PAGE_WORDS, 0, PAGE_BYTES);
            }
        }
        if (verify_pages) {
            n = paced_budget((uint64_t)cfg.verify_rate_mib * MIB / PAGE_BYTES,
                             pacing_start_ns, t, &verified);
            for (; n; n--, verified++) {
                /* One pass: the hot set, then the zero set. */
                if (verify_pos < hot_pages) {
                    sweep_hot(verify_pos);
                } else {
                    check_zero(verify_pos - hot_pages, "sweep");
                }
                if (++verify_pos == verify_pages) {
                    /* Bad pages the other threads find from now on count
                     * in the next pass. */
                    uint64_t bad = atomic_exchange(&verify_bad, 0);

                    say("ml:V %llu pages=%zu bad=%llu",
                        (unsigned long long)++verify_pass, verify_pages,
                        (unsigned long long)bad);
                    verify_pos = 0;
                    atomic_store(&corrupt_lines, 0);
                }
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
            dirtied = 0;
            for (unsigned k = 0; k < cfg.threads; k++) {
                dirtied += __atomic_load_n(&rewriters[k].dirtied,
                                           __ATOMIC_RELAXED);
            }
            say("ml:R %llu dirty_bps=%llu zero_bps=%llu",
                (unsigned long long)++report_seq,
                (unsigned long long)((dirtied - dirtied_at_report) * PAGE_BYTES),
                (unsigned long long)((zeroed - zeroed_at_report) * PAGE_BYTES));
            dirtied_at_report = dirtied;
            zeroed_at_report = zeroed;
            next_report += NS_PER_S;
            if (next_report <= t) {
                next_report = t + NS_PER_S;
            }
        }

        /* Sleep in short steps so that the paced work stays smooth. */
        pause_ns = next_hb > t ? next_hb - t : 0;
        if (pause_ns > 1000000ull) {
            pause_ns = 1000000ull;
        }
        if (pause_ns) {
            sleep_ns(pause_ns);
        }
    }
}
