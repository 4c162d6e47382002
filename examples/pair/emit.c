/* Module emit of the pair example: fills a struct sample (pair.h) of its build's layout. */
#include "hotmod/module.h"

#include "pair.h"

static int next_id;

HM_MODULE_EXPORT void emit_sample(struct sample *s) {
  s->layout = PAIR_LAYOUT;
  s->id = ++next_id;
  s->x = (float)(s->id % 7);
  s->y = (float)(s->id % 5);
#if PAIR_LAYOUT != 1
  s->when = s->id / 100.0;
  s->z = 1.0f;
#endif
}
HM_MODULE_SIGNATURE(emit_sample, PAIR_SAMPLE_SIG);
