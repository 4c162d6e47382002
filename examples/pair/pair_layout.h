/* The layout of struct sample (pair.h). The example edits this file while it runs. */
#define PAIR_LAYOUT 1
