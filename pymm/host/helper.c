/*
 * pymm-host: runs mmap/munmap/mremap/mprotect/madvise and memory accesses on
 * the real kernel, for pymm.host.HostMM.
 *
 * Usage: pymm-host WINDOW_LO WINDOW_HI (hex).  At start it maps PROT_NONE
 * "fences" (shared anonymous, MAP_NORESERVE: they cost nothing and never
 * merge with anything) over every free gap of the user address space outside
 * [WINDOW_LO, WINDOW_HI), so that the kernel's own address choices can only
 * land inside the window.  After that it allocates nothing: every buffer is
 * static.
 *
 * Protocol on stdin/stdout: a request is one opcode byte and six u64
 * arguments; a reply is one i64 (the syscall's return or -errno; for accesses
 * 0 or the signal number) plus, for accesses that faulted, si_code and
 * si_addr, plus any data.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (8UL << 20)
static unsigned char data[CHUNK];
static char text[1 << 20];
static sigjmp_buf env;
static volatile sig_atomic_t sig_no;
static volatile int sig_code;
static volatile uintptr_t sig_addr;

static void die(const char *msg) { (void)!write(2, msg, strlen(msg)); _exit(2); }

static void read_all(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n) {
		ssize_t r = read(0, p, n);
		if (r <= 0) _exit(0); /* parent went away */
		p += r; n -= (size_t)r;
	}
}

static void write_all(const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n) {
		ssize_t r = write(1, p, n);
		if (r <= 0) _exit(0);
		p += r; n -= (size_t)r;
	}
}

static void reply(int64_t v) { write_all(&v, sizeof(v)); }

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	sig_no = sig;
	sig_code = si->si_code;
	sig_addr = (uintptr_t)si->si_addr;
	siglongjmp(env, 1);
}

static long sys(long nr, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f)
{
	long r = syscall(nr, a, b, c, d, e, f);
	return r == -1 ? -errno : r;
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	size_t n = 0;
	if (fd < 0) return 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0) break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	return n;
}

static uint64_t map_start[4096], map_end[4096];
static int nmaps;
static uint64_t stack_start;

/* The current mappings, sorted (as /proc/self/maps lists them). */
static void load_maps(void)
{
	char *p = text;
	nmaps = 0;
	read_file("/proc/self/maps", text, sizeof(text));
	while (*p && nmaps < 4096) {
		char *end, *nl = strchr(p, '\n');
		map_start[nmaps] = strtoull(p, &end, 16);
		map_end[nmaps] = strtoull(end + 1, &end, 16);
		if (nl && memmem(p, (size_t)(nl - p), "[stack]", 7))
			stack_start = map_start[nmaps];
		nmaps++;
		if (!nl) break;
		p = nl + 1;
	}
}

static void map_fence(uint64_t start, uint64_t end)
{
	void *r;
	if (end <= start) return;
	r = mmap((void *)start, end - start, PROT_NONE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (r == MAP_FAILED) die("pymm-host: cannot map a fence\n");
}

/*
 * Map PROT_NONE fences over every free gap of [lo, hi), except the room the
 * helper's own stack may grow into: 64 KiB (it needs little: every buffer is
 * static) plus the stack guard gap, where the kernel places nothing unasked
 * (a MAP_FIXED* there is refused by HostMM: it is outside the window).
 */
#define STACK_ROOM ((64UL << 10) + (1UL << 20))
static void fence(uint64_t lo, uint64_t hi)
{
	uint64_t cursor = lo, keep_lo = stack_start > STACK_ROOM ? stack_start - STACK_ROOM : 0;
	int i;
	for (i = 0; i <= nmaps && cursor < hi; i++) {
		uint64_t gap_end = i < nmaps ? map_start[i] : hi;
		if (gap_end > hi) gap_end = hi;
		if (gap_end > cursor) {
			if (stack_start && gap_end == stack_start && keep_lo > cursor)
				map_fence(cursor, keep_lo);
			else if (!(stack_start && gap_end == stack_start))
				map_fence(cursor, gap_end);
		}
		if (i < nmaps && map_end[i] > cursor) cursor = map_end[i];
	}
}

static int64_t access_mem(int op, uint64_t addr, uint64_t len, int value, uint64_t *done)
{
	*done = 0;
	sig_no = 0;
	if (sigsetjmp(env, 1))
		return sig_no;
	while (*done < len) {
		uint64_t a = addr + *done;
		uint64_t room = 4096 - (a & 4095), n = len - *done;
		volatile unsigned char *v = (volatile unsigned char *)a;
		if (n > room) n = room;
		if (op == 'r') {
			data[*done] = *v;                 /* fault here, at the exact byte */
			memcpy(data + *done + 1, (void *)(a + 1), n - 1);
		} else if (op == 'w') {
			*v = data[*done];
			memcpy((void *)(a + 1), data + *done + 1, n - 1);
		} else {
			*v = (unsigned char)value;
			memset((void *)(a + 1), value, n - 1);
		}
		*done += n;
	}
	return 0;
}

/*
 * Touch every page the helper will ever use (its static buffers and the
 * stack a fault's signal frame needs) now, so that its own RSS and page
 * tables stay constant after start: /proc/PID/status figures then change
 * only by what the requests do in the window (HostMM.status()).
 */
static void __attribute__((noinline)) touch_stack(void)
{
	volatile unsigned char pad[32UL << 10];   /* well inside the 64 KiB left free */
	for (size_t i = 0; i < sizeof(pad); i += 512)
		pad[i] = 0;
}

static void prefault(void)
{
	memset(data, 0, sizeof(data));
	memset(text, 0, sizeof(text));
	memset(map_start, 0, sizeof(map_start));
	memset(map_end, 0, sizeof(map_end));
	touch_stack();
}

/* An unprivileged process, as pymm.MM models one: RLIMIT_MEMLOCK 8 MiB,
 * RLIMIT_AS unlimited (where the hard limit allows), and without
 * CAP_IPC_LOCK or CAP_SYS_RESOURCE even when started by root. */
static void unprivileged(void)
{
	struct rlimit memlock = {8UL << 20, 8UL << 20}, as = {RLIM_INFINITY, RLIM_INFINITY};
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	uint32_t drop = (1u << CAP_IPC_LOCK) | (1u << CAP_SYS_RESOURCE);

	(void)setrlimit(RLIMIT_AS, &as);
	(void)setrlimit(RLIMIT_MEMLOCK, &memlock);
	if (syscall(SYS_capget, &h, d) == 0) {
		d[0].effective &= ~drop;
		d[0].permitted &= ~drop;
		d[0].inheritable &= ~drop;
		(void)syscall(SYS_capset, &h, d);
	}
}

int main(int argc, char **argv)
{
	uint64_t lo, hi;
	struct sigaction sa;
	int pagemap_fd;
	if (argc != 3) die("usage: pymm-host WINDOW_LO WINDOW_HI\n");
	lo = strtoull(argv[1], 0, 16);
	hi = strtoull(argv[2], 0, 16);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, 0);
	sigaction(SIGBUS, &sa, 0);
	/* Fence everything a mapping could land on outside the window. */
	load_maps();
	if (nmaps >= 4096) die("pymm-host: too many mappings at start\n");
	for (int i = 0; i < nmaps; i++)
		if (map_start[i] < hi && map_end[i] > lo)
			die("pymm-host: the window overlaps the helper's own mappings (its image, "
			    "heap, stack or vdso); choose another window\n");
	fence(0x10000, lo);
	fence(hi, 0x800000000000ULL - 4096);
	prefault();
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	unprivileged();
	reply(0x706d796d686f7374LL); /* "pymmhost": ready */
	for (;;) {
		unsigned char op;
		uint64_t a[6], done;
		int64_t r;
		read_all(&op, 1);
		read_all(a, sizeof(a));
		switch (op) {
		case 'M': reply(sys(SYS_mmap, a[0], a[1], a[2], a[3], a[4], a[5])); break;
		case 'U': reply(sys(SYS_munmap, a[0], a[1], 0, 0, 0, 0)); break;
		case 'R': reply(sys(SYS_mremap, a[0], a[1], a[2], a[3], a[4], 0)); break;
		case 'P': reply(sys(SYS_mprotect, a[0], a[1], a[2], 0, 0, 0)); break;
		case 'A': reply(sys(SYS_madvise, a[0], a[1], a[2], 0, 0, 0)); break;
		case 'L': reply(sys(SYS_mlock2, a[0], a[1], a[2], 0, 0, 0)); break;
		case 'K': reply(sys(SYS_munlock, a[0], a[1], 0, 0, 0, 0)); break;
		case 'Z': reply(sys(462 /* SYS_mseal, 6.10+ */, a[0], a[1], a[2], 0, 0, 0)); break;
		case 'X': { /* prlimit64(0, a[0], a[1] ? {a[2], a[3]} : NULL, &old) */
			struct rlimit nw = {a[2], a[3]}, old;
			r = sys(SYS_prlimit64, 0, a[0], a[1] ? (uint64_t)(uintptr_t)&nw : 0,
				(uint64_t)(uintptr_t)&old, 0, 0);
			reply(r);
			reply((int64_t)old.rlim_cur);
			reply((int64_t)old.rlim_max);
			break;
		}
		case 'T': { /* timed mremap: a[5] repetitions are the caller's business */
			struct timespec t0, t1;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			r = sys(SYS_mremap, a[0], a[1], a[2], a[3], a[4], 0);
			clock_gettime(CLOCK_MONOTONIC, &t1);
			reply(r);
			reply((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
			break;
		}
		case 'r': case 'w': case 's':
			if (a[1] > CHUNK) { reply(-E2BIG); break; }
			if (op == 'w') read_all(data, a[1]);
			r = access_mem(op, a[0], a[1], (int)a[2], &done);
			reply(r);
			reply((int64_t)done);
			if (r) { reply(sig_code); reply((int64_t)sig_addr); }
			if (op == 'r') write_all(data, done);
			break;
		case 'm': { /* /proc/self/maps in pieces: lengths then bytes, 0 ends */
			int fd = open("/proc/self/maps", O_RDONLY);
			for (;;) {
				ssize_t n = fd < 0 ? 0 : read(fd, text, sizeof(text));
				if (n < 0) n = 0;
				reply((int64_t)n);
				if (!n) break;
				write_all(text, (size_t)n);
			}
			if (fd >= 0) close(fd);
			break;
		}
		case 'g': { /* pagemap: a[0] address, a[1] pages */
			uint64_t n = a[1] > CHUNK / 8 ? CHUNK / 8 : a[1];
			ssize_t got = pread(pagemap_fd, data, n * 8, (off_t)((a[0] / 4096) * 8));
			reply(got < 0 ? -errno : got / 8);
			if (got > 0) write_all(data, (size_t)got);
			break;
		}
		case 'q': _exit(0);
		default: die("pymm-host: bad opcode\n");
		}
	}
}
