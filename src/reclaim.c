/*
 * Reclamation: run "free this once no reader can see it" callbacks, and the read side that
 * makes live calls cheap. It knows nothing of modules or files.
 *
 * The read side (hm_live_enter/leave in hotmod.h) is a memb-style RCU read section, as
 * liburcu's memb flavour reads. Each thread owns one word, hm__rdw, in initial-exec TLS: the
 * depth of its nested live calls and the flag HM__RD_SLOW in the low half, and the grace
 * period (GP) its outermost call entered in in the high half. The process-wide hm__gpw has the
 * same layout with a depth of 1. On entering its outermost call, a thread whose word has
 * neither depth nor flag copies hm__gpw into its word (so the depth becomes 1) and then loads
 * the published function table; a nested enter adds 1 and a leave subtracts 1. No fence, no
 * shared write. Everything else is in hm__rdw_enter_slow: a thread's first call registers it
 * (its word starts as HM__RD_SLOW), and while readers must fence (no membarrier, TSan) hm__gpw
 * carries HM__RD_SLOW, so every word copied from it sends the next outermost enter there too.
 *
 * The write side publishes a new table, adds one GP to hm__gpw (the new value is the grace
 * period's target), then calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a
 * full memory barrier on every thread of the process. After that, a reader's word has
 *   depth 0           it is outside any call (anything it read before is finished), or
 *   GP >= target      it entered after the increment, so it loaded the new table, or
 *   GP < target       it may still hold the old table: wait until the word changes.
 * GPs are compared modulo their width (32 bits on 64-bit systems): a reader inside a call
 * holds back every grace period after the one it entered in, and each reclaimer waits for
 * its grace period before it starts another, so hm__gpw runs ahead of a reader's GP by at
 * most the number of registries, far from wrapping.
 *
 * Without membarrier (old kernels, seccomp, or HOTMOD_NO_MEMBARRIER=1 in the environment),
 * the slow path stores the word with a sequentially consistent store, which orders it
 * before the table load on its own. ThreadSanitizer builds always take that path: TSan does
 * not model membarrier(), but it does model these atomics, so it checks the real ordering.
 *
 * Threads of the QSBR flavour (qsbr.c, hm_thread_qsbr) mark nothing per call: their word
 * carries HM__RD_QSBR and HM__RD_SLOW (so the enter's test sends them off the ordinary path,
 * to a second test only) and the GP of their last quiescent state. A grace period waits,
 * besides the words inside older calls, for every online QSBR word whose GP is older than
 * its target; offline ones (HM__RD_OFFLINE) only for the calls they make while offline,
 * which mark themselves through the slow path. A QSBR thread that stays silent for STALL_NS
 * is named on stderr, once.
 *
 * Waiting never blocks anyone: the reclaimer thread polls hm__gp_passed with a growing sleep
 * (capped at 2 ms), so a reader that stays inside a call for a long time only delays its own
 * callbacks, and they run within 2 ms after it returns. Nor does queuing work: hm__defer
 * wakes the reclaimer only when it is parked (see POLL_NS below), so that a retired version
 * is picked up within 2 ms and the whole bound is about 4 ms, as hotmod.h states.
 *
 * Layer 3 (docs/architecture.md): calls only the leaves.
 */
#include "internal.h"

#include <linux/membarrier.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GP_STEP (HM__RD_SLOW << 1) /* one grace period */
#define GP_MASK (~HM__RD_LOW)

__thread unsigned long hm__rdw __attribute__((tls_model("initial-exec"))) = HM__RD_SLOW;
/* GP 1, depth 1; fenced until membarrier is known to work. */
unsigned long hm__gpw = GP_STEP | HM__RD_SLOW | 1;
int hm__rdw_fenced = 1;

/* A registered thread: where its word is, in the list the writer scans. */
struct reader {
  unsigned long *word;
  struct reader *next, *prev;
  int registered;
  int tid; /* the kernel's id of the thread, for introspection */
  int warned; /* a QSBR thread named on stderr for holding a grace period back (once) */
};

static __thread struct reader self;
static pthread_mutex_t readers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reader *readers; /* list of registered threads */
static pthread_key_t exit_key;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
/* Shared by the reclaimers of all registries: accessed atomically. */
static int use_membarrier;
/* membarrier() stopped working after readers relied on it (see hm__gp_start). */
static int degraded;

static void reader_exit(void *p) {
  struct reader *r = p;
  pthread_mutex_lock(&readers_lock);
  if (r->prev)
    r->prev->next = r->next;
  else
    readers = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->registered = 0;
  pthread_mutex_unlock(&readers_lock);
  /* A live call made later in this thread's exit (another key's destructor) registers again. */
  __atomic_store_n(&hm__rdw, HM__RD_SLOW, __ATOMIC_RELAXED);
}

static void init(void) {
  const char *no = secure_getenv("HOTMOD_NO_MEMBARRIER");
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
      __atomic_store_n(&use_membarrier, 1, __ATOMIC_RELAXED);
      /* Before any reader registers (they all come through here first). */
      __atomic_and_fetch(&hm__gpw, ~HM__RD_SLOW, __ATOMIC_SEQ_CST);
      __atomic_store_n(&hm__rdw_fenced, 0, __ATOMIC_SEQ_CST);
    }
  }
#else
  (void)no;
#endif
}

static void reader_register(struct reader *r) {
  pthread_once(&init_once, init);
  r->tid = (int)gettid();
  pthread_mutex_lock(&readers_lock);
  r->word = &hm__rdw;
  r->prev = NULL;
  r->next = readers;
  if (readers)
    readers->prev = r;
  readers = r;
  r->registered = 1;
  pthread_mutex_unlock(&readers_lock);
  /* A non-NULL value makes the key's destructor run when this thread exits. */
  (void)pthread_setspecific(exit_key, r);
}

void hm__reader_register_self(void) {
  if (!self.registered)
    reader_register(&self);
}

void hm__rdw_unbalanced(void) {
  fputs("hotmod: hm_live_leave without a matching hm_live_enter on this thread\n", stderr);
  abort();
}

/* The outermost enter of a thread whose word has HM__RD_SLOW: not registered yet, or
 * readers fence. Sequentially consistent, so the store is ordered before the table load
 * that follows even without the writer's membarrier(); hm__gpw is read after registering,
 * so the word takes the process's current mode. */
void hm__rdw_enter_slow(void) {
  unsigned long qsbr = hm__rdw & (HM__RD_QSBR | HM__RD_OFFLINE);
  if (!self.registered)
    reader_register(&self);
  /* An offline QSBR thread (qsbr.c): its calls mark themselves as ordinary calls do, and
   * keep its flags and HM__RD_SLOW, so each of its outermost enters comes here. */
  __atomic_store_n(&hm__rdw,
                   __atomic_load_n(&hm__gpw, __ATOMIC_SEQ_CST) | qsbr | (qsbr ? HM__RD_SLOW : 0),
                   __ATOMIC_SEQ_CST);
}

static void sleep_ns(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

/* Make every reader's earlier stores visible before we read the reader list. Once
 * registered, MEMBARRIER_CMD_PRIVATE_EXPEDITED does not fail; should it ever (a seccomp
 * filter added later, a kernel change), register again, then fall back to the global
 * command, which needs no registration; never spin on it. If nothing works, readers are
 * switched to fenced stores; hm__gp_start waits out the switch. */
static void writer_barrier(void) {
  /* Acquire: a writer that sees it 0 after a switch also sees `degraded`. */
  if (!__atomic_load_n(&use_membarrier, __ATOMIC_ACQUIRE))
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0 &&
      syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
    return;
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0) == 0)
    return;
  {
    static int warned;
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      fputs("hotmod: membarrier() stopped working; live calls use fenced stores from now on\n",
            stderr);
    /* From here on every word a reader copies sends its next outermost enter to the fenced
     * slow path. Readers already inside a call keep the grace period open until they leave,
     * as their words show. */
    __atomic_or_fetch(&hm__gpw, HM__RD_SLOW, __ATOMIC_SEQ_CST);
    __atomic_store_n(&hm__rdw_fenced, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&degraded, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&use_membarrier, 0, __ATOMIC_RELEASE);
  }
}

/* After the switch to fenced readers, 1 while a registered reader's word lacks HM__RD_SLOW:
 * its next outermost enter copies hm__gpw without a fence (once; the word it stores has the
 * flag). */
static int unfenced_readers(void) {
  const struct reader *r;
  int found = 0;
  pthread_mutex_lock(&readers_lock);
  for (r = readers; r != NULL && !found; r = r->next)
    found = !(__atomic_load_n(r->word, __ATOMIC_SEQ_CST) & HM__RD_SLOW);
  pthread_mutex_unlock(&readers_lock);
  return found;
}

unsigned long hm__gp_start(void) {
  unsigned long target;
  pthread_once(&init_once, init);
  target = __atomic_add_fetch(&hm__gpw, GP_STEP, __ATOMIC_SEQ_CST);
  writer_barrier();
  /* Since the switch, a thread whose word lacks the flag may still enter without a fence,
   * once, or may have done so just before the switch. Such a store leaves its thread's
   * store buffer long before this sleep ends: the words read after it show the call. */
  if (__atomic_load_n(&degraded, __ATOMIC_RELAXED) && unfenced_readers())
    sleep_ns(1000000);
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
    readers = NULL;
    self.tid = (int)gettid(); /* the child's, for introspection and warnings */
    if (self.registered) {
      self.next = self.prev = NULL;
      readers = &self;
    }
  }
  pthread_mutex_unlock(&readers_lock);
}

/* How long a grace period waits for QSBR threads before warn_stalled names them. */
#define STALL_NS 2000000000LL

/* Modulo the GP's width: older when the difference, as a signed number, is negative. */
static int gp_older(unsigned long word, unsigned long target) {
  return (long)((word & GP_MASK) - (target & GP_MASK)) < 0;
}

/* Whether a reader's word keeps grace period `target` open: it is inside a call that began
 * before it (a depth), or it is an online QSBR thread whose last quiescent state came
 * before it (qsbr.c). An offline QSBR thread's calls have a depth, as ordinary ones do, and
 * so do an online one's hm_live_enter calls, whose GP is its last quiescent state's. */
static int holds(unsigned long w, unsigned long target) {
  return ((w & HM__RD_DEPTH) != 0 || HM__RD_QSBR_ON(w)) && gp_older(w, target);
}

int hm__gp_passed(unsigned long target) {
  const struct reader *r;
  int passed = 1;
  pthread_mutex_lock(&readers_lock);
  for (r = readers; r != NULL; r = r->next) {
    if (holds(__atomic_load_n(r->word, __ATOMIC_SEQ_CST), target)) {
      passed = 0;
      break;
    }
  }
  pthread_mutex_unlock(&readers_lock);
  return passed;
}

/* Name on stderr, once each, the online QSBR threads that keep grace period `target` open:
 * a thread that blocks without going offline stalls reclamation in every registry. */
static void warn_stalled(unsigned long target) {
  struct reader *r;
  pthread_mutex_lock(&readers_lock);
  for (r = readers; r != NULL; r = r->next) {
    unsigned long w = __atomic_load_n(r->word, __ATOMIC_SEQ_CST);
    int online_qsbr = (w & (HM__RD_QSBR | HM__RD_OFFLINE)) == HM__RD_QSBR;
    if (online_qsbr && gp_older(w, target) && !r->warned) {
      r->warned = 1;
      fprintf(stderr,
              "hotmod: thread %d (QSBR, hm_thread_qsbr) has not passed a quiescent state for "
              "%d s: no version retired since is unloaded, in any registry, until it calls "
              "hm_thread_quiescent, hm_thread_offline or hm_registry_poll\n",
              r->tid, (int)(STALL_NS / 1000000000LL));
    }
  }
  pthread_mutex_unlock(&readers_lock);
}

unsigned long hm__gp_now(void) { return __atomic_load_n(&hm__gpw, __ATOMIC_SEQ_CST); }

size_t hm__readers_inside(unsigned long gp, int *tids, size_t max) {
  const struct reader *r;
  size_t n = 0;
  pthread_mutex_lock(&readers_lock);
  for (r = readers; r != NULL; r = r->next) {
    /* Inside a call (a depth) that it entered in grace period gp or an older one, or a QSBR
     * thread that has not passed a quiescent state since. */
    if (holds(__atomic_load_n(r->word, __ATOMIC_SEQ_CST), gp + GP_STEP)) {
      if (n < max)
        tids[n] = r->tid;
      n++;
    }
  }
  pthread_mutex_unlock(&readers_lock);
  return n;
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
    unsigned long target;
    unsigned long long ran;
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
      long long since = mono_ns();
      int warned = 0;
      target = hm__gp_start();
      while (!hm__gp_passed(target)) {
        hm__defer_node *more = NULL, **more_tail = &more;
        if (!warned && mono_ns() - since > STALL_NS) {
          warn_stalled(target);
          warned = 1;
        }
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

/* A thread that waits for a reclaimer is outside every live call, so an online QSBR thread
 * (qsbr.c) goes offline while it waits: the grace periods it waits for must not wait for
 * it. Returns its word, for qsbr_resume. */
static unsigned long qsbr_pause(void) {
  unsigned long w = __atomic_load_n(&hm__rdw, __ATOMIC_RELAXED);
  if (HM__RD_QSBR_ON(w))
    __atomic_store_n(&hm__rdw, w | HM__RD_OFFLINE, __ATOMIC_SEQ_CST);
  return w;
}

/* Online again, with a quiescent state now (as hm_thread_online). */
static void qsbr_resume(unsigned long w) {
  if (HM__RD_QSBR_ON(w))
    __atomic_store_n(&hm__rdw,
                     (__atomic_load_n(&hm__gpw, __ATOMIC_SEQ_CST) & GP_MASK) | (w & HM__RD_LOW),
                     __ATOMIC_SEQ_CST);
}

void hm__reclaimer_drain(hm__reclaimer *rc) {
  unsigned long w = qsbr_pause();
  pthread_mutex_lock(&rc->lock);
  /* Whoever drains waits for the work: do not leave it to the next poll. */
  pthread_cond_signal(&rc->wake);
  /* Callbacks may defer more work (a freed table drops the last reference of a version);
   * wait until nothing is queued at all. */
  while (rc->done < rc->queued)
    pthread_cond_wait(&rc->idle, &rc->lock);
  pthread_mutex_unlock(&rc->lock);
  qsbr_resume(w);
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
  unsigned long w;
  if (rc == NULL)
    return;
  pthread_mutex_lock(&rc->lock);
  rc->stop = 1;
  pthread_cond_signal(&rc->wake);
  pthread_mutex_unlock(&rc->lock);
  w = qsbr_pause();
  pthread_join(rc->thread, NULL);
  qsbr_resume(w);
  pthread_cond_destroy(&rc->idle);
  pthread_cond_destroy(&rc->wake);
  pthread_mutex_destroy(&rc->lock);
  a = rc->a;
  hm__free(&a, rc);
}
