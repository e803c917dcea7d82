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

static int logcopy(const char *dir, int n, char **argv) {
    sigset_t none;
    sigemptyset(&none);
    struct pollfd *fds = calloc(n, sizeof *fds);
    int *files = calloc(n, sizeof *files);
    pid_t *kids = calloc(n, sizeof *kids);
    char path[4096];
    for (int i = 0; i < n; i++) {
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
    static char buf[1 << 16];
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
                for (ssize_t off = 0; off < got;) {
                    ssize_t w = write(files[i], buf + off, got - off);
                    if (w < 0)
                        die("write");
                    off += w;
                }
            } else if (got == 0 || errno != EINTR) {
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
        return logcopy(argv[2], atoi(argv[3]), argv + 4);
    fprintf(stderr, "usage: baseline spawn N PROG ARG... | baseline log DIR N PROG ARG... | baseline touch MIB\n");
    return 2;
}
