/*
 * The raw baseline: what a supervisor costs at the very least. No config, no
 * state machine, no control interface: fork+exec and waitpid.
 *
 *   baseline spawn N PROG ARG...     start N copies of PROG; restart any copy
 *                                    the moment it exits; on SIGTERM/SIGINT
 *                                    send SIGTERM to every copy, wait for all,
 *                                    exit 0.
 *   baseline log DIR N PROG ARG...   start N copies of PROG with stdout and
 *                                    stderr on a pipe each; copy pipe i to
 *                                    DIR/w<i>.log verbatim (no timestamps)
 *                                    until every pipe is at EOF and every copy
 *                                    has exited.
 *   baseline logstamp DIR N PROG ARG...
 *                                    the same, but every line gets the prefix
 *                                    blackhole writes (RFC 3339 time in
 *                                    microseconds, once per read; stream;
 *                                    pid), as a one-thread C copier would:
 *                                    what the prefix itself costs. The
 *                                    stream is always stdout (stderr shares
 *                                    the pipe). A line is cut only when
 *                                    reads end inside it and it grows past
 *                                    16 KiB (a newline is added then);
 *                                    blackhole cuts every line at 16 KiB.
 *   baseline touch MIB               not a supervisor: writes to MIB MiB of
 *                                    fresh memory and frees it (W4 runs it
 *                                    before each trial; see bench/README.md).
 *
 * Built by bench/run with: gcc -O2 -o baseline baseline.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(111);
}

/* Forks PROG with fd `out` (if >= 0) as stdout and stderr; returns the pid. */
static pid_t launch(char **argv, const sigset_t *oldmask, int out) {
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int spawn(int n, char **argv) {
    /* Signals are taken synchronously: no handler, nothing async-signal-unsafe. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, &old);

    pid_t *kids = calloc(n, sizeof *kids);
    for (int i = 0; i < n; i++)
        kids[i] = launch(argv, &old, -1);

    int stopping = 0, alive = n;
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            die("sigwaitinfo");
        }
        if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
            stopping = 1;
            for (int i = 0; i < n; i++)
                if (kids[i] > 0)
                    kill(kids[i], SIGTERM);
        }
        /* SIGCHLD coalesces: reap everything that is ready. */
        pid_t pid;
        while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (kids[i] != pid)
                    continue;
                if (stopping) {
                    kids[i] = 0;
                    alive--;
                } else {
                    kids[i] = launch(argv, &old, -1);
                }
            }
        }
        if (stopping && alive == 0)
            return 0;
    }
}

/* `2026-12-07T22:47:57.954721Z stdout PID ` at the current time (taken once per read). */
static size_t stamp(char *out, pid_t pid) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ stdout %d ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, (int)pid);
    if (n < 0 || n >= 64)
        die("stamp");
    return (size_t)n;
}

static void write_all(int fd, const char *from, size_t len) {
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, from + off, len - off);
        if (w < 0)
            die("write");
        off += (size_t)w;
    }
}

#define READ_MAX (1 << 16)
#define LINE_MAX_CARRY (1 << 14)

/* The lines of `buf`, each after the prefix, into `out`; an unfinished
 * last line waits in `carry` (written out when it reaches LINE_MAX_CARRY). */
static size_t stamp_lines(const char *buf, size_t got, pid_t pid, char *carry, size_t *carried, char *out) {
    char prefix[64];
    size_t plen = stamp(prefix, pid), o = 0;
    const char *p = buf, *end = buf + got;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        size_t take = (nl ? nl + 1 : end) - p;
        if (!nl || *carried) {
            size_t room = LINE_MAX_CARRY - *carried;
            size_t part = take < room ? take : room;
            memcpy(carry + *carried, p, part);
            *carried += part;
            if (!nl && *carried < LINE_MAX_CARRY)
                return o;
            memcpy(out + o, prefix, plen);
            memcpy(out + o + plen, carry, *carried);
            o += plen + *carried;
            if (out[o - 1] != '\n')
                out[o++] = '\n';
            *carried = 0;
            p += part;
            continue;
        }
        memcpy(out + o, prefix, plen);
        memcpy(out + o + plen, p, take);
        o += plen + take;
        p += take;
    }
    return o;
}

static int logcopy(const char *dir, int n, char **argv, int stamped) {
    sigset_t none;
    sigemptyset(&none);
    struct pollfd *fds = calloc(n, sizeof *fds);
    int *files = calloc(n, sizeof *files);
    pid_t *kids = calloc(n, sizeof *kids);
    char **carry = calloc(n, sizeof *carry);
    size_t *carried = calloc(n, sizeof *carried);
    char path[4096];
    for (int i = 0; i < n; i++) {
        if (stamped && !(carry[i] = malloc(LINE_MAX_CARRY)))
            die("malloc");
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            die("pipe");
        snprintf(path, sizeof path, "%s/w%03d.log", dir, i);
        files[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (files[i] < 0)
            die(path);
        kids[i] = launch(argv, &none, p[1]);
        close(p[1]);
        fds[i].fd = p[0];
        fds[i].events = POLLIN;
    }
    static char buf[READ_MAX];
    /* Each line of a read may gain a prefix (and a carried line its newline). */
    static char out[READ_MAX * 66 + LINE_MAX_CARRY + 128];
    int open_pipes = n;
    while (open_pipes > 0) {
        if (poll(fds, n, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        for (int i = 0; i < n; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            ssize_t got = read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                const char *from = buf;
                size_t len = (size_t)got;
                if (stamped) {
                    len = stamp_lines(buf, len, kids[i], carry[i], &carried[i], out);
                    from = out;
                }
                write_all(files[i], from, len);
            } else if (got == 0 || errno != EINTR) {
                if (stamped && carried[i]) {
                    /* The unfinished last line, ended. */
                    char prefix[64];
                    size_t plen = stamp(prefix, kids[i]);
                    write_all(files[i], prefix, plen);
                    write_all(files[i], carry[i], carried[i]);
                    write_all(files[i], "\n", 1);
                }
                close(fds[i].fd);
                fds[i].fd = -1;
                open_pipes--;
            }
        }
    }
    for (int i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}

static int touch(size_t mib) {
    size_t n = mib << 20;
    char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    for (size_t off = 0; off < n; off += 4096)
        p[off] = 1;
    munmap(p, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "touch") == 0)
        return touch(strtoul(argv[2], NULL, 10));
    if (argc >= 4 && strcmp(argv[1], "spawn") == 0)
        return spawn(atoi(argv[2]), argv + 3);
    if (argc >= 5 && strcmp(argv[1], "log") == 0)
        return logcopy(argv[2], atoi(argv[3]), argv + 4, 0);
    if (argc >= 5 && strcmp(argv[1], "logstamp") == 0)
        return logcopy(argv[2], atoi(argv[3]), argv + 4, 1);
    fprintf(stderr, "usage: baseline spawn N PROG ARG... | baseline log|logstamp DIR N PROG ARG... | baseline touch MIB\n");
    return 2;
}
