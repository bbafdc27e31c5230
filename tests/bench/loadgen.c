/* Load generator for the enforcer benchmark (tests/bench, issue 15).
 *
 * Compiled inside the guest at the start of each run (gcc -O2), so the
 * measured loop is a few instructions around each system call, not an
 * interpreter: the ratio between configurations is then the kernel's.
 *
 *   loadgen WORKLOAD ITERATIONS ARG...    prints "WORKLOAD NS_PER_OP"
 *   loadgen flood RATE SECONDS            blocked-attempt flood, prints counts
 *
 * Each measured loop is preceded by a warm-up of ITERATIONS/10 (dentry and
 * page caches, branch predictors), not counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what, const char *arg) {
    fprintf(stderr, "loadgen: %s %s: %s\n", what, arg, strerror(errno));
    exit(2);
}

static void open_close(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) die("open", path);
    close(fd);
}

/* One operation of the workload; for rename one call is one rename. */
static void op(const char *w, char **args, long i, int libfd) {
    if (!strcmp(w, "open_read") || !strcmp(w, "open_proc")) {
        open_close(args[0], O_RDONLY);
    } else if (!strcmp(w, "open_write")) {
        open_close(args[0], O_WRONLY);
    } else if (!strcmp(w, "stat")) {
        struct stat st;
        if (stat(args[0], &st) < 0) die("stat", args[0]);
    } else if (!strcmp(w, "mmap_exec")) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, libfd, 0);
        if (p == MAP_FAILED) die("mmap PROT_EXEC", args[0]);
        munmap(p, 4096);
    } else if (!strcmp(w, "exec")) {
        pid_t pid = fork();
        if (pid < 0) die("fork", "");
        if (pid == 0) {
            char *argv[] = {"true", NULL};
            char *envp[] = {NULL};
            execve(args[0], argv, envp);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0) die("waitpid", "");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "loadgen: %s exited with status %d\n", args[0], status);
            exit(3);
        }
    } else if (!strcmp(w, "rename")) {
        /* back and forth: even calls A->B, odd calls B->A */
        const char *from = (i & 1) ? args[1] : args[0], *to = (i & 1) ? args[0] : args[1];
        if (rename(from, to) < 0) die("rename", from);
    } else {
        fprintf(stderr, "loadgen: unknown workload %s\n", w);
        exit(2);
    }
}

static int flood(double rate, double seconds) {
    /* Opens /proc/sysrq-trigger for writing, which the policies under test
     * deny, paced in 1 ms ticks (rate/1000 attempts per tick) so the agent
     * sees a steady stream rather than bursts. One process: the rate is the
     * point, and forking 10,000 processes a second is beyond an emulated CPU. */
    long per_tick = (long)(rate / 1000.0 + 0.5), attempts = 0, denied = 0, opened = 0, other = 0;
    long long start = now_ns(), end = start + (long long)(seconds * 1e9), tick = start;
    while (now_ns() < end) {
        for (long k = 0; k < per_tick; k++) {
            int fd = open("/proc/sysrq-trigger", O_WRONLY);
            attempts++;
            if (fd >= 0) { opened++; close(fd); }
            else if (errno == EPERM || errno == EACCES) denied++;
            else other++;
        }
        tick += 1000000;
        struct timespec t = {tick / 1000000000LL, tick % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
    }
    double took = (now_ns() - start) / 1e9;
    printf("flood attempts=%ld denied=%ld opened=%ld other=%ld seconds=%.3f\n", attempts, denied, opened, other, took);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "flood")) return flood(atof(argv[2]), atof(argv[3]));
    if (argc < 4) {
        fprintf(stderr, "usage: loadgen WORKLOAD ITERATIONS ARG... | loadgen flood RATE SECONDS\n");
        return 2;
    }
    const char *w = argv[1];
    long n = atol(argv[2]);
    char **args = argv + 3;
    if (!strcmp(w, "rename") && argc < 5) { fprintf(stderr, "loadgen: rename needs two paths\n"); return 2; }
    int libfd = -1;
    if (!strcmp(w, "mmap_exec") && (libfd = open(args[0], O_RDONLY)) < 0) die("open", args[0]);
    long warm = n / 10;
    for (long i = 0; i < warm + (warm & 1); i++) op(w, args, i, libfd);
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) op(w, args, i, libfd);
    long long t1 = now_ns();
    /* leave a rename pair where it started */
    if (!strcmp(w, "rename") && (n & 1)) op(w, args, 1, libfd);
    printf("%s %.1f\n", w, (double)(t1 - t0) / n);
    return 0;
}
