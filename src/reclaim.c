/*
 * Reclamation: run "free this once no reader can see it" callbacks, and the read side that
 * makes live calls cheap. It knows nothing of modules or files.
 *
 * The read side (hm_live_enter/leave in hotmod.h) is a memb-style RCU read section. Each
 * thread owns a struct hm__reader in initial-exec TLS. On entering its outermost live call,
 * it copies the process-wide counter hm__gp_ctr into its `ctr` and then loads the published
 * function table; on leaving it stores 0. No fence, no shared write.
 *
 * The write side publishes a new table, increments hm__gp_ctr (the new value is the grace
 * period's target), then calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a
 * full memory barrier on every thread of the process. After that, a reader's `ctr` is either
 *   0                 it is outside any call (anything it read before is finished), or
 *   >= target         it entered after the increment, so it loaded the new table, or
 *   < target          it may still hold the old table: wait until it changes.
 * A 64-bit counter never wraps, so one pass suffices (no parity flip as in liburcu).
 *
 * Without membarrier (old kernels, seccomp, or HOTMOD_NO_MEMBARRIER=1 in the environment),
 * readers store `ctr` with a sequentially consistent store instead, which orders it before
 * the table load on their own. ThreadSanitizer builds always take that path: TSan does not
 * model membarrier(), but it does model these atomics, so it checks the real ordering.
 *
 * Waiting never blocks anyone: the reclaimer thread polls hm__gp_passed with a growing sleep
 * (capped at 2 ms), so a reader that stays inside a call for a long time only delays its own
 * callbacks, and they run within 2 ms after it returns. Nor does queuing work: hm__defer
 * wakes the reclaimer only when it is parked (see POLL_NS below), so that a retired version
 * is picked up within 2 ms and the whole bound is about 4 ms, as hotmod.h states.
 */
#include "internal.h"

#include <linux/membarrier.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__thread struct hm__reader hm__self __attribute__((tls_model("initial-exec")));
unsigned long long hm__gp_ctr = 1;
int hm__reader_fenced = 1; /* until membarrier is known to work */

static pthread_mutex_t readers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hm__reader *readers; /* list of registered threads' readers */
static pthread_key_t exit_key;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int use_membarrier;

static void reader_exit(void *p) {
  struct hm__reader *r = p;
  pthread_mutex_lock(&readers_lock);
  if (r->prev)
    r->prev->next = r->next;
  else
    readers = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->mode = 0;
  pthread_mutex_unlock(&readers_lock);
}

static void init(void) {
  const char *no = getenv("HOTMOD_NO_MEMBARRIER");
  /* Without the key a thread could not leave the reader list when it exits, and the list
   * would point into freed thread storage; there is no safe way on. Only a process that
   * used up all PTHREAD_KEYS_MAX keys gets here. */
  if (pthread_key_create(&exit_key, reader_exit) != 0) {
    fputs("hotmod: pthread_key_create failed: cannot track threads that make live calls\n",
          stderr);
    abort();
  }
#ifndef HM__TSAN
  if (no == NULL || strcmp(no, "1") != 0) {
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0) {
      use_membarrier = 1;
      __atomic_store_n(&hm__reader_fenced, 0, __ATOMIC_SEQ_CST);
    }
  }
#else
  (void)no;
#endif
}

static void reader_register(struct hm__reader *r) {
  pthread_once(&init_once, init);
  pthread_mutex_lock(&readers_lock);
  r->prev = NULL;
  r->next = readers;
  if (readers)
    readers->prev = r;
  readers = r;
  /* Fixed for the thread's life: init() has run, so the process's choice is made. */
  r->mode = __atomic_load_n(&hm__reader_fenced, __ATOMIC_RELAXED) ? 2 : 1;
  pthread_mutex_unlock(&readers_lock);
  /* A non-NULL value makes the key's destructor run when this thread exits. */
  (void)pthread_setspecific(exit_key, r);
}

void hm__reader_unbalanced(void) {
  fputs("hotmod: hm_live_leave without a matching hm_live_enter on this thread\n", stderr);
  abort();
}

void hm__reader_enter_slow(unsigned long long g) {
  struct hm__reader *r = &hm__self;
  if (r->mode == 0)
    reader_register(r);
  /* Sequentially consistent, so the store is ordered before the table load that follows
   * even without the writer's membarrier(); after registering, either mode may use it. */
  __atomic_store_n(&r->ctr, g, __ATOMIC_SEQ_CST);
}

static void sleep_ns(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

/* Make every reader's earlier stores visible before we read the reader list. Once
 * registered, MEMBARRIER_CMD_PRIVATE_EXPEDITED does not fail; should it ever (a seccomp
 * filter added later, a kernel change), register again, then fall back to the global
 * command, which needs no registration; never spin on it. If nothing works the readers are
 * switched to fenced stores, and one slow round of the global-free fallback is waited out. */
static void writer_barrier(void) {
  if (!use_membarrier)
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0 &&
      syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0) == 0)
    return;
  {
    struct hm__reader *r;
    static int warned;
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      fputs("hotmod: membarrier() stopped working; live calls use fenced stores from now on\n",
            stderr);
    /* From here on every reader fences its own store; readers already inside a call keep
     * the grace period open until they leave, which the reader list shows. */
    __atomic_store_n(&hm__reader_fenced, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&readers_lock);
    for (r = readers; r != NULL; r = r->next)
      __atomic_store_n(&r->mode, 2, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&readers_lock);
    use_membarrier = 0;
    /* Stores that readers made before the switch without a fence are drained from their
     * store buffers long before this sleep ends. */
    sleep_ns(1000000);
  }
}

unsigned long long hm__gp_start(void) {
  unsigned long long target;
  pthread_once(&init_once, init);
  target = __atomic_add_fetch(&hm__gp_ctr, 1, __ATOMIC_SEQ_CST);
  writer_barrier();
  return target;
}

/* ---- fork() ---------------------------------------------------------------------------- */

void hm__readers_prefork(void) { pthread_mutex_lock(&readers_lock); }

void hm__readers_postfork(int child) {
  if (child) {
    /* Only the forking thread came along. The others' readers are in memory the child does
     * not own (glibc reuses dead threads' stacks, and their TLS with them): forget them, or
     * a grace period would wait forever for a call that will never return. This thread keeps
     * its reader, and its nesting, if it was inside a live call when it forked. */
    struct hm__reader *self = &hm__self;
    readers = NULL;
    if (self->mode != 0) {
      self->next = self->prev = NULL;
      readers = self;
    }
  }
  pthread_mutex_unlock(&readers_lock);
}

int hm__gp_passed(unsigned long long target) {
  const struct hm__reader *r;
  int passed = 1;
  pthread_mutex_lock(&readers_lock);
  for (r = readers; r != NULL; r = r->next) {
    unsigned long long c = __atomic_load_n(&r->ctr, __ATOMIC_SEQ_CST);
    if (c != 0 && c < target) {
      passed = 0;
      break;
    }
  }
  pthread_mutex_unlock(&readers_lock);
  return passed;
}

/* ---- The reclaimer thread -------------------------------------------------------------- */

/* How the reclaimer waits for work. Waking a parked thread costs the caller a futex call
 * (19-35 us on the reload's path on a 2-vCPU VM, most of it the switch to the woken thread),
 * so after doing work the reclaimer keeps looking for more every POLL_NS for LINGER_NS; only
 * then does it park, and only a deferral that finds it parked wakes it. Reloads that follow
 * one another within LINGER_NS never signal; an idle registry has no timer running. */
#define POLL_NS 2000000L         /* 2 ms: the most a deferral waits to be picked up */
#define LINGER_NS 2000000000LL   /* 2 s without work before parking */

struct hm__reclaimer {
  hm__allocator a;
  pthread_mutex_t lock;
  pthread_cond_t wake, idle;
  hm__defer_node *head, **tail;
  unsigned long long queued, done;
  int stop;
  int parked; /* waiting on `wake` without a timeout: a deferral must signal */
  pthread_t thread;
};

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wait (under rc->lock) until work is queued or the reclaimer is stopped: polling every
 * POLL_NS while work was done less than LINGER_NS ago, parked after that. */
static void wait_for_work(hm__reclaimer *rc, long long last_work) {
  while (rc->head == NULL && !rc->stop) {
    long long now = mono_ns();
    if (now - last_work < LINGER_NS) {
      long long until = now + POLL_NS;
      struct timespec ts = {(time_t)(until / 1000000000LL), (long)(until % 1000000000LL)};
      (void)pthread_cond_timedwait(&rc->wake, &rc->lock, &ts);
    } else {
      rc->parked = 1;
      pthread_cond_wait(&rc->wake, &rc->lock);
      rc->parked = 0;
    }
  }
}


/* Take everything queued (under rc->lock). */
static hm__defer_node *take_all(hm__reclaimer *rc) {
  hm__defer_node *all = rc->head;
  rc->head = NULL;
  rc->tail = &rc->head;
  return all;
}

/* Run the nodes of `list` that need no grace period; append the others to *gp_tail.
 * Returns how many ran. Called without rc->lock. */
static unsigned long long sort_out(hm__defer_node *list, hm__defer_node ***gp_tail) {
  unsigned long long ran = 0;
  hm__defer_node *n, *next;
  for (n = list; n != NULL; n = next) {
    next = n->next; /* fn may free the node */
    if (n->after_gp) {
      n->next = NULL;
      **gp_tail = n;
      *gp_tail = &n->next;
    } else {
      n->fn(n->arg);
      ran++;
    }
  }
  return ran;
}

static void count_done(hm__reclaimer *rc, unsigned long long ran) {
  if (ran == 0)
    return;
  pthread_mutex_lock(&rc->lock);
  rc->done += ran;
  pthread_cond_broadcast(&rc->idle);
  pthread_mutex_unlock(&rc->lock);
}

static void *reclaimer_main(void *arg) {
  hm__reclaimer *rc = arg;
  long long last_work = mono_ns() - LINGER_NS; /* parked until the first deferral */
  pthread_mutex_lock(&rc->lock);
  for (;;) {
    hm__defer_node *gp = NULL, **gp_tail = &gp, *batch, *n, *next;
    unsigned long long target, ran;
    long wait = 20000; /* 20 us, doubling up to 2 ms */
    wait_for_work(rc, last_work);
    if (rc->head == NULL)
      break;
    batch = take_all(rc);
    pthread_mutex_unlock(&rc->lock);

    /* Unloads that wait for nothing (a released snapshot was the last user) run at once;
     * retired tables wait for one grace period, started after they were queued. While it
     * lasts (a caller may sit inside an old version for long), newly queued work that needs
     * no grace period still runs at once; work that needs one waits for the next round. */
    count_done(rc, sort_out(batch, &gp_tail));
    if (gp != NULL) {
      target = hm__gp_start();
      while (!hm__gp_passed(target)) {
        hm__defer_node *more = NULL, **more_tail = &more;
        sleep_ns(wait);
        if (wait < 2000000)
          wait *= 2;
        pthread_mutex_lock(&rc->lock);
        batch = take_all(rc);
        pthread_mutex_unlock(&rc->lock);
        count_done(rc, sort_out(batch, &more_tail));
        if (more != NULL) {
          /* Put them back for the next round, ahead of anything queued since. */
          pthread_mutex_lock(&rc->lock);
          *more_tail = rc->head;
          if (rc->head == NULL)
            rc->tail = more_tail;
          rc->head = more;
          pthread_mutex_unlock(&rc->lock);
        }
      }
      ran = 0;
      for (n = gp; n != NULL; n = next) {
        next = n->next;
        n->fn(n->arg);
        ran++;
      }
      count_done(rc, ran);
    }
    last_work = mono_ns();
    pthread_mutex_lock(&rc->lock);
  }
  pthread_mutex_unlock(&rc->lock);
  return NULL;
}

int hm__reclaimer_new(hm__reclaimer **out, const hm__allocator *a) {
  hm__reclaimer *rc = hm__calloc(a, 1, sizeof *rc);
  int rv;
  if (rc == NULL)
    return HM_ENOMEM;
  rc->a = *a;
  rc->tail = &rc->head;
  pthread_mutex_init(&rc->lock, NULL);
  {
    pthread_condattr_t ca; /* the polling waits time out on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rc->wake, &ca);
    pthread_condattr_destroy(&ca);
  }
  pthread_cond_init(&rc->idle, NULL);
  rv = pthread_create(&rc->thread, NULL, reclaimer_main, rc);
  if (rv != 0) {
    pthread_cond_destroy(&rc->idle);
    pthread_cond_destroy(&rc->wake);
    pthread_mutex_destroy(&rc->lock);
    hm__free(a, rc);
    return -rv;
  }
  *out = rc;
  return 0;
}

void hm__defer(hm__reclaimer *rc, hm__defer_node *node, hm__defer_fn fn, void *arg,
               int after_gp) {
  node->next = NULL;
  node->fn = fn;
  node->arg = arg;
  node->after_gp = after_gp;
  int wake;
  pthread_mutex_lock(&rc->lock);
  *rc->tail = node;
  rc->tail = &node->next;
  rc->queued++;
  /* A polling reclaimer finds the node within POLL_NS by itself. */
  wake = rc->parked;
  rc->parked = 0;
  pthread_mutex_unlock(&rc->lock);
  /* Signalled after unlocking, so the woken thread does not block on the lock at once. It
   * was waiting when we held the lock, so the signal cannot be missed. */
  if (wake)
    pthread_cond_signal(&rc->wake);
}

void hm__reclaimer_drain(hm__reclaimer *rc) {
  pthread_mutex_lock(&rc->lock);
  /* Whoever drains waits for the work: do not leave it to the next poll. */
  pthread_cond_signal(&rc->wake);
  /* Callbacks may defer more work (a freed table drops the last reference of a version);
   * wait until nothing is queued at all. */
  while (rc->done < rc->queued)
    pthread_cond_wait(&rc->idle, &rc->lock);
  pthread_mutex_unlock(&rc->lock);
}

void hm__reclaimer_forget(hm__reclaimer *rc) {
  hm__allocator a;
  if (rc == NULL)
    return;
  /* Its thread is the parent's; its lock may be held by it. Only the memory is ours. */
  a = rc->a;
  hm__free(&a, rc);
}

void hm__reclaimer_free(hm__reclaimer *rc) {
  hm__allocator a;
  if (rc == NULL)
    return;
  pthread_mutex_lock(&rc->lock);
  rc->stop = 1;
  pthread_cond_signal(&rc->wake);
  pthread_mutex_unlock(&rc->lock);
  pthread_join(rc->thread, NULL);
  pthread_cond_destroy(&rc->idle);
  pthread_cond_destroy(&rc->wake);
  pthread_mutex_destroy(&rc->lock);
  a = rc->a;
  hm__free(&a, rc);
}
