/* The interface between the pair example's two modules: module emit fills a struct sample,
 * module show takes it. Changing its layout (pair_layout.h) changes both builds: neither
 * may go live without the other. The layout is part of the declared signature, so hotmod
 * refuses either build alone, and the watcher's group applies both at one frame. */
#ifndef PAIR_H
#define PAIR_H

#include "pair_layout.h"

#if PAIR_LAYOUT == 1
struct sample {
  int layout;
  int id;
  float x, y;
};
#else
struct sample {
  int layout;
  double when; /* layout 2: a field in front of the others moves them all */
  int id;
  float x, y, z;
};
#endif

#define PAIR_STR2(x) #x
#define PAIR_STR(x) PAIR_STR2(x)
/* The signature of emit_sample, with the layout in it. */
#define PAIR_SAMPLE_SIG "void(struct sample/layout" PAIR_STR(PAIR_LAYOUT) " *)"

#endif
