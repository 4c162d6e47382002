/* A stand-in for another version of libhotmod (built with the soname libhotmod.so.0.2), for
 * a module linked against it: the loader must refuse that module. */
int hm_other_hotmod_marker(void);
int hm_other_hotmod_marker(void) { return 2; }
