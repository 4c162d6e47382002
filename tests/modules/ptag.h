/* The tag type of the group tests' modules (pa.c, pb.c): b's value() and a's handle on it,
 * int(void), or long(void) with -DWIDE. */
#ifdef WIDE
typedef long tag_t;
#define TAG_SIG "long(void)"
#else
typedef int tag_t;
#define TAG_SIG "int(void)"
#endif
