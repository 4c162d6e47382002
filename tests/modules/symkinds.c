/* Test module with one symbol of each kind a lookup by name meets (test_symbols.c): plain
 * functions and data, which a version's own tables resolve without the loader's lock, and
 * the kinds left to dlsym: weak, thread-local, an indirect function, and (-DVERSIONED, with
 * symkinds.map) symbol versions, two of them under one name. -DVERSION=n. */
int plain_fn(void) { return VERSION; }
int plain_data = 7;
const char plain_const[] = "plain";
__attribute__((visibility("protected"))) int protected_fn(void) { return 3; }
__attribute__((weak)) int weak_fn(void) { return 2; }
__thread int tls_var = 5;
/* A name whose SysV hash carries out of bit 31 when computed wider than 32 bits. */
int xxxxybjz(void);
int xxxxybjz(void) { return 6; }

static int ifunc_impl(void) { return 4; }
__attribute__((used)) static int (*ifunc_resolver(void))(void) { return ifunc_impl; }
int ifunc_fn(void) __attribute__((ifunc("ifunc_resolver")));

#ifdef VERSIONED
int versioned_old(void);
int versioned_new(void);
int versioned_old(void) { return 10; }
int versioned_new(void) { return 11; }
__asm__(".symver versioned_old, versioned_fn@HM_SYM_1");
__asm__(".symver versioned_new, versioned_fn@@HM_SYM_2");
#endif
