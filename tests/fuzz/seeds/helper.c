/* The library lint_c.so needs: not a system library, so every version would share it. */
int hm_fuzz_helper(int x);
int hm_fuzz_helper(int x) { return x + 1; }
