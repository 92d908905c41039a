// LD_PRELOAD shim for ThreadSanitizer runs: maps glibc's C11 threads (thrd_*, mtx_*, cnd_*) onto
// pthreads. Debian's librdkafka creates its threads with thrd_create, which GCC 12's and clang
// 14/16's TSan runtimes do not intercept: every TSan process died in librdkafka's first thread.
// Routed through pthread_create / pthread_mutex_* / pthread_cond_* (which TSan intercepts),
// librdkafka's threads and locks become visible to TSan. glibc's C11 types are the pthread
// types' storage (same size and alignment), so the casts below are exact.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>
#include <time.h>

static int FromErrno(int error) {
  switch (error) {
    case 0: return thrd_success;
    case ETIMEDOUT: return thrd_timedout;
    case EBUSY: return thrd_busy;
    case ENOMEM: return thrd_nomem;
    default: return thrd_error;
  }
}

struct Start {
  thrd_start_t function;
  void* argument;
};

static void* Trampoline(void* opaque) {
  struct Start start = *(struct Start*)opaque;
  free(opaque);
  return (void*)(intptr_t)start.function(start.argument);
}

int thrd_create(thrd_t* thread, thrd_start_t function, void* argument) {
  struct Start* start = malloc(sizeof *start);
  if (start == NULL) return thrd_nomem;
  start->function = function;
  start->argument = argument;
  const int error = pthread_create((pthread_t*)thread, NULL, Trampoline, start);
  if (error != 0) free(start);
  return FromErrno(error);
}

int thrd_join(thrd_t thread, int* result) {
  void* value = NULL;
  const int error = pthread_join((pthread_t)thread, &value);
  if (error == 0 && result != NULL) *result = (int)(intptr_t)value;
  return FromErrno(error);
}

int thrd_detach(thrd_t thread) { return FromErrno(pthread_detach((pthread_t)thread)); }
thrd_t thrd_current(void) { return (thrd_t)pthread_self(); }
int thrd_equal(thrd_t a, thrd_t b) { return pthread_equal((pthread_t)a, (pthread_t)b); }
_Noreturn void thrd_exit(int result) { pthread_exit((void*)(intptr_t)result); }

int mtx_init(mtx_t* mutex, int type) {
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  if (type & mtx_recursive) pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_RECURSIVE);
  const int error = pthread_mutex_init((pthread_mutex_t*)mutex, &attributes);
  pthread_mutexattr_destroy(&attributes);
  return FromErrno(error);
}
int mtx_lock(mtx_t* mutex) { return FromErrno(pthread_mutex_lock((pthread_mutex_t*)mutex)); }
int mtx_trylock(mtx_t* mutex) { return FromErrno(pthread_mutex_trylock((pthread_mutex_t*)mutex)); }
int mtx_timedlock(mtx_t* restrict mutex, const struct timespec* restrict deadline) {
  return FromErrno(pthread_mutex_timedlock((pthread_mutex_t*)mutex, deadline));
}
int mtx_unlock(mtx_t* mutex) { return FromErrno(pthread_mutex_unlock((pthread_mutex_t*)mutex)); }
void mtx_destroy(mtx_t* mutex) { pthread_mutex_destroy((pthread_mutex_t*)mutex); }

int cnd_init(cnd_t* condition) { return FromErrno(pthread_cond_init((pthread_cond_t*)condition, NULL)); }
int cnd_signal(cnd_t* condition) { return FromErrno(pthread_cond_signal((pthread_cond_t*)condition)); }
int cnd_broadcast(cnd_t* condition) {
  return FromErrno(pthread_cond_broadcast((pthread_cond_t*)condition));
}
int cnd_wait(cnd_t* condition, mtx_t* mutex) {
  return FromErrno(pthread_cond_wait((pthread_cond_t*)condition, (pthread_mutex_t*)mutex));
}
int cnd_timedwait(cnd_t* restrict condition, mtx_t* restrict mutex,
                  const struct timespec* restrict deadline) {
  return FromErrno(
      pthread_cond_timedwait((pthread_cond_t*)condition, (pthread_mutex_t*)mutex, deadline));
}
void cnd_destroy(cnd_t* condition) { pthread_cond_destroy((pthread_cond_t*)condition); }
