/*
 * What the ELF check learns beyond safety: the reloadability lint's facts (unique symbols,
 * thread-local destructors and pthread keys, libraries it needs, $ORIGIN, who built it) and
 * where the symbols are for lookups by hand (symbols.c). Reads only what the checks in
 * elftables.c and elfcheck.c have already bounded.
 */
#include "elfck.h"

/* Libraries every version may share without harm: the C and C++ runtimes, the sanitizers'
 * runtimes, and hotmod itself (a module that calls its API directly). Any other DT_NEEDED
 * is loaded once, by SONAME, and shared by every version of the module: never reloaded. */
static int system_library(const char *name) {
  static const char *const prefixes[] = {
      "libc.so",    "libm.so",       "libdl.so",      "libpthread.so", "librt.so",
      "libutil.so", "libresolv.so",  "libanl.so",     "libcrypt.so",   "libstdc++.so",
      "libgcc_s.so", "libatomic.so", "ld-linux",      "libasan.so",    "libubsan.so",
      "libtsan.so", "liblsan.so",    "libclang_rt.",  "libhotmod.so",  "libmvec.so",
      "libc++.so",  "libc++abi.so",  "libunwind.so",  "ld64.so",       "libgomp.so"};
  size_t i;
  for (i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
      return 1;
  return 0;
}

/* One pass over the symbols the hash tables reach (one step per symbol): the module
 * descriptor's first two words (abi, size), read from the file's bytes so a module built
 * for another ABI is refused before dlopen runs any of its code (plain constants in an
 * initialised object: the file holds them as they will be); and what the lint looks for. */
void hm__elf_scan_symbols(ck *c, const dyninfo *d, const symtab *st, hm__elf_info *info) {
  static const char desc[] = HM_MODULE_DESC_SYMBOL;
  uint64_t stroff, stravail;
  if (info == NULL || !map_vaddr(c, d->val[DT_STRTAB], st->strsz, &stroff, &stravail))
    return;
  for (uint64_t i = 1; i < st->hashed; i++) {
    ElfW(Sym) s;
    uint64_t off, avail;
    const char *name;
    c->steps++;
    memcpy(&s, c->buf + st->off + i * sizeof s, sizeof s);
    name = (const char *)c->buf + stroff + s.st_name; /* NUL-terminated: check_strtab */
    if (s.st_shndx == SHN_UNDEF) {
      /* The C++ compilers call the C++ runtime's __cxa_thread_atexit, which calls glibc's
       * __cxa_thread_atexit_impl; either pins the module while the thread lives. */
      /* The first byte first: most names are neither (this runs on every reload). */
      if (name[0] == '_' && (strcmp(name, "__cxa_thread_atexit") == 0 ||
                             strcmp(name, "__cxa_thread_atexit_impl") == 0))
        info->lint |= HM__LINT_THREAD_ATEXIT;
      else if (name[0] == 'p' && strcmp(name, "pthread_key_create") == 0)
        info->lint |= HM__LINT_KEY_CREATE;
      continue;
    }
    if (ELF64_ST_BIND((unsigned)s.st_info) == STB_GNU_UNIQUE) {
      info->lint |= HM__LINT_UNIQUE;
      if (info->unique_count < HM__LINT_UNIQUE_NAMES)
        info->unique_syms[info->unique_count] = name;
      info->unique_count++;
    }
    if (!info->has_desc && strcmp(name, desc) == 0 && s.st_size >= 2 * sizeof(uint32_t) &&
        map_vaddr(c, s.st_value, 8, &off, &avail)) {
      const uint64_t flags_at = offsetof(hm_module_desc, flags);
      info->has_desc = 1;
      info->desc_abi = get_u32(c, off);
      info->desc_size = get_u32(c, off + 4);
      /* A plain constant too, read where this library's layout has it (the loader uses the
       * descriptor only when its ABI is this one). */
      if (info->desc_abi == HM_MODULE_ABI && info->desc_size >= flags_at + sizeof(unsigned) &&
          s.st_size >= flags_at + sizeof(unsigned) &&
          map_vaddr(c, s.st_value + flags_at, sizeof(unsigned), &off, &avail))
        info->desc_flags = get_u32(c, off);
    }
  }
}

/* A search of a whole string costs a step per 16 bytes of it (and one for the call). */
static uint64_t scan_steps(const char *s) { return 1 + strlen(s) / 16; }

/* The lint's look at the dynamic section's strings: libraries it needs (one step each: the
 * names are compared with short prefixes), and the search path the loader will use. That is
 * one string, searched once: glibc keeps the last DT_RUNPATH, or without one the last
 * DT_RPATH (it ignores DT_RPATH when there is a DT_RUNPATH). Searching every entry would be
 * quadratic: a crafted file can hold millions of entries naming one long string. */
void hm__elf_scan_strings(ck *c, const dyninfo *d, uint64_t doff, uint64_t count,
                             hm__elf_info *info) {
  uint64_t stroff, stravail;
  if (info == NULL || !map_vaddr(c, d->val[DT_STRTAB], d->val[DT_STRSZ], &stroff, &stravail))
    return;
  const char *strs = (const char *)c->buf + stroff; /* offsets checked: check_dyn_names */
  for (uint64_t i = 0; i < count && !((info->lint & HM__LINT_NEEDED) && info->hotmod_needed);
       i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + doff + i * sizeof e, sizeof e);
    if (e.d_tag == DT_NEEDED && info->hotmod_needed == NULL &&
        strncmp(strs + e.d_un.d_val, "libhotmod.so", 12) == 0)
      info->hotmod_needed = strs + e.d_un.d_val;
    if (e.d_tag == DT_NEEDED && !(info->lint & HM__LINT_NEEDED) &&
        !system_library(strs + e.d_un.d_val)) {
      info->lint |= HM__LINT_NEEDED;
      info->needed = strs + e.d_un.d_val;
    }
  }
  int tag = d->has[DT_RUNPATH] ? DT_RUNPATH : d->has[DT_RPATH] ? DT_RPATH : DT_NULL;
  if (tag != DT_NULL) {
    const char *path = strs + d->val[tag];
    c->steps += scan_steps(path);
    if (strstr(path, "$ORIGIN") != NULL) {
      info->lint |= HM__LINT_ORIGIN;
      info->runpath = path;
    }
  }
}

/* Where the symbols are, for lookups by name once the file is loaded (symbols.c): the
 * table glibc itself looks names up in (DT_GNU_HASH if there is one, else DT_HASH), with
 * the counts its checks above found. None when a table's tag is there with address 0, as
 * glibc would then read a table at the load base. */
void hm__elf_note_syms(ck *c, const dyninfo *d, const symtab *st, const ElfW(Phdr) *dynph,
                      hm__elf_syms *s) {
  uint64_t off, avail;
  memset(s, 0, sizeof *s);
  if ((d->has_gnu_hash && d->gnu_hash == 0) || (d->has[DT_HASH] && d->val[DT_HASH] == 0) ||
      (d->has_versym && d->versym == 0))
    return;
  if (d->has_gnu_hash) {
    if (!map_vaddr(c, d->gnu_hash, 16, &off, &avail)) /* checked: always found */
      return;
    s->gnu_hash = d->gnu_hash;
    s->nbuckets = get_u32(c, off);
    s->symoffset = get_u32(c, off + 4);
    s->bloom_size = get_u32(c, off + 8);
    s->nsyms = st->gnu_count;
  } else if (d->has[DT_HASH]) {
    Elf_Symndx nb;
    if (!map_vaddr(c, d->val[DT_HASH], sizeof nb, &off, &avail))
      return;
    memcpy(&nb, c->buf + off, sizeof nb);
    s->sysv_hash = d->val[DT_HASH];
    s->nbuckets = (uint32_t)nb;
    s->nsyms = nb == s->nbuckets ? st->sysv_count : 0;
  }
  s->dynamic = dynph->p_vaddr;
  s->symtab = d->val[DT_SYMTAB];
  s->strtab = d->val[DT_STRTAB];
  s->strsz = d->val[DT_STRSZ];
  s->versym = d->has_versym ? d->versym : 0;
}

/* The section header string table, once check_sections found every section inside the
 * file: 1 with *str set, 0 if there is none to use. */
static int section_names(ck *c, uint64_t shnum, ElfW(Shdr) *str) {
  const ElfW(Ehdr) *eh = c->eh;
  uint64_t stridx = eh->e_shstrndx;
  if (stridx == SHN_XINDEX) {
    ElfW(Shdr) s0;
    memcpy(&s0, c->buf + eh->e_shoff, sizeof s0);
    stridx = s0.sh_link;
  }
  if (stridx == SHN_UNDEF || stridx >= shnum)
    return 0;
  memcpy(str, c->buf + eh->e_shoff + stridx * sizeof *str, sizeof *str);
  return str->sh_type == SHT_STRTAB;
}

/* Whether rustc built the file (or part of it): its .comment section says "rustc version",
 * which rustc writes and strip keeps. Asked only of a file whose imports the Rust finding
 * would replace, after check_sections found every section inside the file. A step per
 * section header, and one per 16 bytes of the first 4 KiB of .comment. */
int hm__elf_built_by_rustc(ck *c) {
  static const char name[] = ".comment", mark[] = "rustc version ";
  const ElfW(Ehdr) *eh = c->eh;
  uint64_t shnum, n, k;
  ElfW(Shdr) str;
  if (eh->e_shoff == 0)
    return 0;
  shnum = section_count(c);
  if (!section_names(c, shnum, &str))
    return 0;
  for (uint64_t i = 0; i < shnum; i++) {
    ElfW(Shdr) s;
    c->steps++;
    memcpy(&s, c->buf + eh->e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type != SHT_PROGBITS || !in_range(s.sh_name, sizeof name, str.sh_size) ||
        memcmp(c->buf + str.sh_offset + s.sh_name, name, sizeof name) != 0)
      continue;
    n = s.sh_size < 4096 ? s.sh_size : 4096;
    c->steps += 1 + n / 16;
    for (k = 0; k + (sizeof mark - 1) <= n; k++)
      if (memcmp(c->buf + s.sh_offset + k, mark, sizeof mark - 1) == 0)
        return 1;
    return 0;
  }
  return 0;
}

/* A .gnu_debuglink section (what objcopy --add-gnu-debuglink writes): the debug file's name,
 * NUL-terminated and padded to 4 bytes, then the CRC-32 of that file's bytes. Debuggers look
 * for the name beside the loaded file; the loader copies it there (debugfile.c). Only a
 * plain file name is kept: one with a '/' could name a file outside the directory it is
 * looked for in. A step, and one per 16 bytes of the name. */
void hm__elf_note_debuglink(ck *c, uint64_t i, hm__elf_info *info) {
  static const char name[] = ".gnu_debuglink";
  ElfW(Shdr) s, str;
  const char *link;
  uint64_t n, crc_at;
  c->steps++;
  if (!section_names(c, section_count(c), &str))
    return;
  memcpy(&s, c->buf + c->eh->e_shoff + i * sizeof s, sizeof s);
  if (!in_range(s.sh_name, sizeof name, str.sh_size) ||
      memcmp(c->buf + str.sh_offset + s.sh_name, name, sizeof name) != 0 || s.sh_size < 8)
    return;
  link = (const char *)c->buf + s.sh_offset;
  n = strnlen(link, s.sh_size < 256 ? s.sh_size : 256);
  c->steps += 1 + n / 16;
  crc_at = (n + 4) & ~(uint64_t)3; /* the name, its NUL, padding to 4 */
  if (n == 0 || n >= 256 || crc_at > s.sh_size - 4 || memchr(link, '/', n) != NULL ||
      strcmp(link, ".") == 0 || strcmp(link, "..") == 0)
    return;
  info->debuglink = link;
  info->debuglink_crc = get_u32(c, s.sh_offset + crc_at);
}
