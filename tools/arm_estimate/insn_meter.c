/*
 * insn_meter: a QEMU TCG plugin counting the guest instructions a user-mode process retires.
 *
 *   qemu-aarch64 -plugin insn_meter.so,out=FILE[,period_ms=N] PROGRAM...
 *
 * Written for tools/arm_estimate (python -m tools.arm_estimate) against the qemu-plugin.h of the
 * qemu-user package it runs with. QEMU's own tests/plugin/insn.c counts with an inline add on one
 * shared counter, which loses counts when guest threads run on several host CPUs at once; this one
 * adds each translation block's instruction count atomically, and it reports while the process
 * runs, not only at exit, so a window of a long run (a call, not the start-up) can be measured:
 *
 *   tick <CLOCK_MONOTONIC ns> <instructions so far>    every period_ms (default 20) from a thread
 *   mark <k> <CLOCK_MONOTONIC ns> <instructions so far> when the guest calls close(-424200 - k)
 *   exit <CLOCK_MONOTONIC ns> <instructions so far>    when the guest exits
 *
 * A TB's count is added when the TB starts, so a block left early (a fault mid-block) is counted
 * whole: an error well below 0.1 % on this kind of code.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_BASE 424200
#define AARCH64_NR_CLOSE 57

static uint64_t retired;
static FILE *out;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static long period_ms = 20;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void report(const char *what)
{
    uint64_t n = __atomic_load_n(&retired, __ATOMIC_RELAXED);
    pthread_mutex_lock(&out_lock);
    fprintf(out, "%s %" PRIu64 " %" PRIu64 "\n", what, now_ns(), n);
    fflush(out);
    pthread_mutex_unlock(&out_lock);
}

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    __atomic_fetch_add(&retired, (uint64_t)(uintptr_t)udata, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                       uint64_t a8)
{
    int64_t fd = (int64_t)a1;
    if (num == AARCH64_NR_CLOSE && fd <= -MARK_BASE && fd > -MARK_BASE - 1000) {
        char what[32];
        snprintf(what, sizeof what, "mark %" PRId64, -MARK_BASE - fd);
        report(what);
    }
}

static void *ticker(void *arg)
{
    struct timespec period = {period_ms / 1000, (period_ms % 1000) * 1000000L};
    for (;;) {
        report("tick");
        nanosleep(&period, NULL);
    }
    return NULL;
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    report("exit");
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    const char *path = NULL;
    pthread_t thread;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strncmp(argv[i], "period_ms=", 10) == 0) {
            period_ms = atol(argv[i] + 10);
        } else {
            fprintf(stderr, "insn_meter: unknown argument %s (out=FILE, period_ms=N)\n", argv[i]);
            return -1;
        }
    }
    if (path == NULL || period_ms <= 0) {
        fprintf(stderr, "insn_meter: needs out=FILE and period_ms > 0\n");
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    if (pthread_create(&thread, NULL, ticker, NULL) != 0) {
        perror("insn_meter: ticker thread");
        return -1;
    }
    pthread_detach(thread);
    return 0;
}
