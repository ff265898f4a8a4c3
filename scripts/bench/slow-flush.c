// LD_PRELOAD shim for benchmarks: every fsync and fdatasync first waits SLOW_FLUSH_US
// microseconds, so a Postgres started with it commits as if its disk flushed that much
// slower (a network disk), on a machine whose local disk flushes in about 0.2 ms.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_flush(void) {
    const char *value = getenv("SLOW_FLUSH_US");
    long us = value ? atol(value) : 0;
    struct timespec pause = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&pause, NULL);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_flush();
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_flush();
    return real(fd);
}
