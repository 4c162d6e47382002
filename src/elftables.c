/*
 * The dynamic section and the tables the loader follows from it, for the ELF check: every
 * entry, relocation, hash bucket, symbol, name and version node dlopen will read must lie in
 * the file-backed part of a segment, in time linear in the file (elfcheck.c says why,
 * elfck.h how much). Calls elffacts.c for what the lint needs.
 */
#include "elfck.h"

static void dyn_note(dyninfo *d, const ElfW(Dyn) *e) {
  uint64_t tag = (uint64_t)e->d_tag, v = (uint64_t)e->d_un.d_val;
  if (tag < DT_NUM) {
    d->val[tag] = v;
    d->has[tag] = 1;
    return;
  }
  switch (e->d_tag) {
  case DT_GNU_HASH: d->gnu_hash = v, d->has_gnu_hash = 1; break;
  case DT_VERSYM: d->versym = v, d->has_versym = 1; break;
  case DT_VERNEED: d->verneed = v, d->has_verneed = 1; break;
  case DT_VERDEF: d->verdef = v, d->has_verdef = 1; break;
  case DT_FLAGS_1: d->flags_1 = v, d->has_flags_1 = 1; break;
  default: break;
  }
}

/* A table given by an address tag and a size tag: glibc reads the size entry through a
 * pointer without checking it exists (l_info[DT_RELASZ]->d_un.d_val), so an address without
 * its size is a NULL dereference inside dlopen, not merely an inconsistency. */
static int check_table(ck *c, const dyninfo *d, int addr_tag, int size_tag, uint64_t entsize,
                       const char *name) {
  if (!d->has[addr_tag])
    return 0;
  if (!d->has[size_tag])
    return fail(c, HM_EBADELF, "corrupt: %s without its size entry", name);
  uint64_t addr = d->val[addr_tag], size = d->val[size_tag], off, avail;
  if (entsize > 1 && size % entsize != 0)
    return fail(c, HM_EBADELF, "corrupt: %s size %llu is not a multiple of %llu", name,
                (unsigned long long)size, (unsigned long long)entsize);
  if (size == 0)
    return 0; /* nothing is read */
  if (!map_vaddr(c, addr, size, &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: %s at 0x%llx (%llu bytes) is outside the file-backed segments", name,
                (unsigned long long)addr, (unsigned long long)size);
  return 0;
}

/* The symbol a relocation names must exist, and its name lie in the string table: glibc
 * indexes the symbol table with the relocation's symbol index, unchecked, then reads the
 * name to look the symbol up. *out gets the symbol. */
static int check_reloc_sym(ck *c, symtab *st, uint64_t sym, const char *name, uint64_t entry,
                           ElfW(Sym) *out) {
  ElfW(Sym) s;
  c->steps++;
  memset(out, 0, sizeof *out);
  if (sym >= st->count)
    return fail(c, HM_EBADELF, "corrupt: %s entry %llu names symbol %llu of %llu (counted from %s)",
                name, (unsigned long long)entry, (unsigned long long)sym,
                (unsigned long long)st->count, st->from);
  memcpy(&s, c->buf + st->off + sym * sizeof s, sizeof s);
  if (s.st_name >= st->strsz)
    return fail(c, HM_EBADELF,
                "corrupt: %s entry %llu names symbol %llu, whose name is outside the string "
                "table",
                name, (unsigned long long)entry, (unsigned long long)sym);
  if (sym >= st->named)
    st->named = sym + 1;
  *out = s;
  return 0;
}

/* The relocation tables must have the entry size the loader asserts (glibc's
 * elf_get_dynamic_info asserts DT_RELAENT == sizeof(Rela) whenever DT_RELA is present, and
 * reads DT_RELAENT through a pointer to do so), lie in the file, write inside the image and
 * name only symbols that exist. */
static int check_relocs(ck *c, const dyninfo *d, int addr_tag, int size_tag, uint64_t entsize,
                        int rela, symtab *st, const char *name) {
  int rc = check_table(c, d, addr_tag, size_tag, entsize, name);
  if (rc != 0 || !d->has[addr_tag] || d->val[size_tag] == 0)
    return rc;
  uint64_t off = 0, avail = 0;
  map_vaddr(c, d->val[addr_tag], d->val[size_tag], &off, &avail);
  for (uint64_t p = 0; p < d->val[size_tag]; p += entsize) {
    uint64_t info, where;
    c->steps++;
    if (rela) {
      ElfW(Rela) r;
      memcpy(&r, c->buf + off + p, sizeof r);
      info = r.r_info, where = r.r_offset;
    } else {
      ElfW(Rel) r;
      memcpy(&r, c->buf + off + p, sizeof r);
      info = r.r_info, where = r.r_offset;
    }
    if (!in_image(c, where, sizeof(ElfW(Addr))))
      return fail(c, HM_EBADELF, "corrupt: %s entry %llu writes 0x%llx, outside the image", name,
                  (unsigned long long)(p / entsize), (unsigned long long)where);
    ElfW(Sym) s;
    if ((rc = check_reloc_sym(c, st, HM__R_SYM(info), name, p / entsize, &s)) != 0)
      return rc;
#ifdef HM__TPOFF
    /* The module's own TLS: a local one (symbol 0: the offset is in the addend) or one it
     * defines. An undefined symbol is another library's TLS, already in the static area. */
    if (HM__TPOFF(HM__R_TYPE(info)) && (HM__R_SYM(info) == 0 || s.st_shndx != SHN_UNDEF))
      c->own_tpoff = 1;
#endif
  }
  return 0;
}

#ifdef DT_RELR
static int relr_fail(ck *c, uint64_t at) {
  return fail(c, HM_EBADELF, "corrupt: DT_RELR writes 0x%llx, outside the image",
              (unsigned long long)at);
}

/* One bitmap word: bit k of `bits` names the word at where + k * sizeof(Addr). In a real
 * file all the words a bitmap names lie in one segment, so the range from its lowest to its
 * highest set bit is checked with one lookup. Otherwise each set bit is checked in turn, in
 * ascending order, with a cursor that only moves forward through the sorted segments that
 * can hold a word (a smaller one cannot hold this bit's word, nor any later one's): at most
 * one step per set bit and one per segment passed. Failures name the lowest word outside
 * the image, as a walk over every bit would. */
static int check_relr_bitmap(ck *c, uint64_t bits, uint64_t where) {
  const uint64_t w = sizeof(ElfW(Addr));
  if (bits == 0)
    return 0;
  uint64_t lo = where + (uint64_t)__builtin_ctzll(bits) * w;
  uint64_t hi = where + (uint64_t)(63 - __builtin_clzll(bits)) * w;
  if (lo < where)
    return relr_fail(c, lo);
  const seg *s = find_seg(c, lo);
  if (s != NULL && hi >= lo && w <= s->end - lo && hi - lo <= s->end - lo - w)
    return 0;
  unsigned cur = s != NULL ? (unsigned)(s - c->load) : c->nload;
  for (uint64_t b = bits; b != 0; b &= b - 1) {
    uint64_t at = where + (uint64_t)__builtin_ctzll(b) * w;
    c->steps++;
    if (at < where)
      return relr_fail(c, at);
    while (cur < c->nload && c->load[cur].end <= at) {
      c->steps++;
      cur = c->word_next[cur + 1];
    }
    if (cur >= c->nload || at < c->load[cur].vaddr || w > c->load[cur].end - at)
      return relr_fail(c, at);
  }
  return 0;
}

/* DT_RELR: an even entry is the address of a relative relocation, an odd one a bitmap of the
 * (bits - 1) words that follow the last address. Every word it names is written. */
static int check_relr(ck *c, const dyninfo *d) {
  const unsigned bits = 8 * sizeof(ElfW(Addr));
  uint64_t off = 0, avail = 0, where = 0, size = d->has[DT_RELR] ? d->val[DT_RELRSZ] : 0;
  int rc;
  if (size == 0)
    return 0;
  map_vaddr(c, d->val[DT_RELR], size, &off, &avail); /* checked by check_table */
  c->word_next[c->nload] = (unsigned short)c->nload;
  for (unsigned i = c->nload; i-- > 0;) {
    c->steps++;
    c->word_next[i] = c->load[i].end - c->load[i].vaddr >= sizeof(ElfW(Addr))
                          ? (unsigned short)i
                          : c->word_next[i + 1];
  }
  for (uint64_t p = 0; p < size; p += sizeof(ElfW(Addr))) {
    ElfW(Addr) e;
    c->steps++;
    memcpy(&e, c->buf + off + p, sizeof e);
    if ((e & 1) == 0) {
      if (!in_image(c, e, sizeof e))
        return relr_fail(c, e);
      where = (uint64_t)e + sizeof e;
      continue;
    }
    if ((rc = check_relr_bitmap(c, (uint64_t)(e >> 1), where)) != 0)
      return rc;
    where += (uint64_t)(bits - 1) * sizeof e;
  }
  return 0;
}
#endif

/* DT_HASH: nbucket, nchain, buckets, chains. Every index must be a valid symbol (glibc
 * follows them into the symbol table), nbucket must be non-zero (it divides by it). The
 * symbol count is nchain. */
static int check_sysv_hash(ck *c, uint64_t addr, uint64_t *nsyms) {
  uint64_t off, avail, words, bytes;
  if (!map_vaddr(c, addr, 2 * sizeof(Elf_Symndx), &off, &avail))
    return fail(c, HM_EBADELF, "corrupt: DT_HASH at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  Elf_Symndx nb, nc;
  memcpy(&nb, c->buf + off, sizeof nb);
  memcpy(&nc, c->buf + off + sizeof nb, sizeof nc);
  if (nb == 0)
    return fail(c, HM_EBADELF, "corrupt: DT_HASH has no buckets");
  /* 2 + nb + nc cannot wrap: each is below 2^64 only if Elf_Symndx is 64-bit, so check. */
  words = 2 + (uint64_t)nb;
  if (words < 2 || words + (uint64_t)nc < words || !mul_ok(words + nc, sizeof(Elf_Symndx), &bytes) ||
      bytes > avail)
    return fail(c, HM_EBADELF, "corrupt: DT_HASH table (%llu buckets, %llu chains) is truncated",
                (unsigned long long)nb, (unsigned long long)nc);
  for (uint64_t i = 2; i < words + nc; i++) {
    Elf_Symndx v;
    c->steps++;
    memcpy(&v, c->buf + off + i * sizeof v, sizeof v);
    if (v >= nc)
      return fail(c, HM_EBADELF, "corrupt: DT_HASH entry %llu is %llu, past %llu symbols",
                  (unsigned long long)i, (unsigned long long)v, (unsigned long long)nc);
  }
  *nsyms = nc;
  return 0;
}

/* DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift, bloom words, buckets, then one
 * hash value per hashed symbol, each chain ending with a value whose low bit is set. glibc
 * divides by nbuckets, masks with bloom_size - 1 (so 0 means reading anywhere), and indexes
 * the chain array with bucket - symoffset. Chains are laid out in bucket order, so the chain
 * of the highest bucket is the last one; its end is the highest symbol index, which gives
 * the symbol count (the ELF file records it nowhere else). */
static int check_gnu_hash(ck *c, uint64_t addr, uint64_t *nsyms) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, 16, &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: DT_GNU_HASH at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  uint32_t nb = get_u32(c, off), symoff = get_u32(c, off + 4), bloom = get_u32(c, off + 8);
  if (nb == 0 || bloom == 0)
    return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH has %u buckets and %u bloom words", nb,
                bloom);
  /* 16 + bloom * 8 + nb * 4 < 2^37: no wrap in 64 bits. */
  uint64_t buckets = 16 + (uint64_t)bloom * sizeof(ElfW(Addr));
  uint64_t chains = buckets + (uint64_t)nb * 4;
  if (chains > avail)
    return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH table (%u buckets) is truncated", nb);
  uint32_t maxb = 0;
  for (uint32_t i = 0; i < nb; i++) {
    c->steps++;
    uint32_t b = get_u32(c, off + buckets + (uint64_t)i * 4);
    if (b != 0 && b < symoff)
      return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH bucket %u is %u, below symoffset %u", i,
                  b, symoff);
    if (b > maxb)
      maxb = b;
  }
  if (maxb == 0) { /* nothing hashed: only the unhashed symbols below symoffset */
    *nsyms = symoff;
    return 0;
  }
  for (uint64_t i = (uint64_t)(maxb - symoff);; i++) {
    uint64_t at = chains + i * 4;
    c->steps++;
    if (at > avail || avail - at < 4)
      return fail(c, HM_EBADELF, "corrupt: DT_GNU_HASH chain of symbol %u is unterminated",
                  maxb);
    if (get_u32(c, off + at) & 1) {
      *nsyms = (uint64_t)symoff + i + 1;
      return 0;
    }
  }
}

/* glibc's _dl_check_map_versions walks DT_VERNEED (vn_next / vna_next chains, each until a
 * zero link) and DT_VERDEF (vd_next, and the first Verdaux of each), reading names from the
 * string table. Every link is unsigned, so the walks only move forward; each node must lie
 * in the same file-backed segment as the first (they are one section) and each name offset
 * inside the string table. */
static int check_verneed(ck *c, uint64_t addr, uint64_t strsz, unsigned *budget) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, sizeof(ElfW(Verneed)), &off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: DT_VERNEED at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  for (uint64_t pos = 0;;) {
    ElfW(Verneed) vn;
    c->steps++;
    if (!in_range(pos, sizeof vn, avail) || --*budget == 0)
      return fail(c, HM_EBADELF, "corrupt: DT_VERNEED chain runs past its segment");
    memcpy(&vn, c->buf + off + pos, sizeof vn);
    if (vn.vn_file >= strsz)
      return fail(c, HM_EBADELF, "corrupt: DT_VERNEED file name is outside the string table");
    for (uint64_t aux = pos + vn.vn_aux;;) {
      ElfW(Vernaux) va;
      c->steps++;
      if (!in_range(aux, sizeof va, avail) || --*budget == 0)
        return fail(c, HM_EBADELF, "corrupt: DT_VERNEED aux chain runs past its segment");
      memcpy(&va, c->buf + off + aux, sizeof va);
      if (va.vna_name >= strsz)
        return fail(c, HM_EBADELF, "corrupt: DT_VERNEED version name is outside the string table");
      if (va.vna_next == 0)
        break;
      aux += va.vna_next;
    }
    if (vn.vn_next == 0)
      return 0;
    pos += vn.vn_next;
  }
}

static int check_verdef(ck *c, uint64_t addr, uint64_t strsz, unsigned *budget) {
  uint64_t off, avail;
  if (!map_vaddr(c, addr, sizeof(ElfW(Verdef)), &off, &avail))
    return fail(c, HM_EBADELF, "corrupt: DT_VERDEF at 0x%llx is outside the file-backed segments",
                (unsigned long long)addr);
  for (uint64_t pos = 0;;) {
    ElfW(Verdef) vd;
    ElfW(Verdaux) va;
    c->steps++;
    if (!in_range(pos, sizeof vd, avail) || --*budget == 0)
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF chain runs past its segment");
    memcpy(&vd, c->buf + off + pos, sizeof vd);
    if (!in_range(pos + vd.vd_aux, sizeof va, avail))
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF aux entry runs past its segment");
    memcpy(&va, c->buf + off + pos + vd.vd_aux, sizeof va);
    if (va.vda_name >= strsz)
      return fail(c, HM_EBADELF, "corrupt: DT_VERDEF version name is outside the string table");
    if (vd.vd_next == 0)
      return 0;
    pos += vd.vd_next;
  }
}

/* Walk the dynamic section the way the loader does and record the entries we care about.
 * *doff is the file offset of the section as the loader sees it, *count the number of
 * entries before DT_NULL. */
static int read_dynamic(ck *c, const ElfW(Phdr) *dynph, dyninfo *d, uint64_t *doff,
                        uint64_t *count) {
  uint64_t davail;
  /* The loader reads the dynamic section at load base + p_vaddr, not at p_offset: translate
   * the address, and walk the bytes it will actually see. */
  if (dynph->p_filesz < sizeof(ElfW(Dyn)) ||
      !map_vaddr(c, dynph->p_vaddr, dynph->p_filesz, doff, &davail))
    return fail(c, HM_EBADELF,
                "corrupt: PT_DYNAMIC (0x%llx, %llu bytes) is outside the file-backed segments",
                (unsigned long long)dynph->p_vaddr, (unsigned long long)dynph->p_filesz);

  /* glibc walks the entries until DT_NULL with no other bound; require the terminator
   * within p_filesz so the walk stops inside the file. */
  memset(d, 0, sizeof *d);
  uint64_t n = dynph->p_filesz / sizeof(ElfW(Dyn));
  for (uint64_t i = 0; i < n; i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + *doff + i * sizeof e, sizeof e);
    if (e.d_tag == DT_NULL) {
      *count = i;
      return 0;
    }
    dyn_note(d, &e);
  }
  return fail(c, HM_EBADELF, "corrupt: dynamic section has no DT_NULL terminator");
}

/* Tables every dynamic object has, and the string table: in the file and ending with NUL,
 * so that any offset below DT_STRSZ names a terminated string and "offset < strsz" is all
 * the name checks need. */
static int check_strtab(ck *c, const dyninfo *d) {
  /* A zeroed dynamic section (DT_NULL first) lands here. */
  if (!d->has[DT_STRTAB] || d->val[DT_STRTAB] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_STRTAB in the dynamic section");
  if (!d->has[DT_SYMTAB] || d->val[DT_SYMTAB] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_SYMTAB in the dynamic section");
  if (!d->has[DT_STRSZ] || d->val[DT_STRSZ] == 0)
    return fail(c, HM_EBADELF, "corrupt: no DT_STRSZ in the dynamic section");
  uint64_t stroff, stravail, strsz = d->val[DT_STRSZ];
  if (!map_vaddr(c, d->val[DT_STRTAB], strsz, &stroff, &stravail))
    return fail(c, HM_EBADELF,
                "corrupt: string table at 0x%llx (%llu bytes) is outside the file-backed "
                "segments",
                (unsigned long long)d->val[DT_STRTAB], (unsigned long long)strsz);
  if (c->buf[stroff + strsz - 1] != 0)
    return fail(c, HM_EBADELF, "corrupt: string table does not end with NUL");
  return 0;
}

/* Names the loader reads straight from the string table while mapping. */
static int check_dyn_names(ck *c, uint64_t doff, uint64_t count, uint64_t strsz) {
  for (uint64_t i = 0; i < count; i++) {
    ElfW(Dyn) e;
    c->steps++;
    memcpy(&e, c->buf + doff + i * sizeof e, sizeof e);
    switch (e.d_tag) {
    case DT_NEEDED:
    case DT_SONAME:
    case DT_RPATH:
    case DT_RUNPATH:
    case DT_AUXILIARY:
    case DT_FILTER:
      if ((uint64_t)e.d_un.d_val >= strsz)
        return fail(c, HM_EBADELF,
                    "corrupt: dynamic entry %llu (tag %lld) names string %llu, table has %llu "
                    "bytes",
                    (unsigned long long)i, (long long)e.d_tag,
                    (unsigned long long)e.d_un.d_val, (unsigned long long)strsz);
      break;
    default:
      break;
    }
  }
  return 0;
}

/* Symbol count, from whichever hash tables exist (glibc follows their indices into the
 * symbol table); 0 without either. */
static int hash_count(ck *c, const dyninfo *d, symtab *st) {
  int rc;
  st->hashed = 0;
  if (d->has[DT_HASH] && d->val[DT_HASH] != 0) {
    if ((rc = check_sysv_hash(c, d->val[DT_HASH], &st->sysv_count)) != 0)
      return rc;
    st->hashed = st->sysv_count;
  }
  if (d->has_gnu_hash && d->gnu_hash != 0) {
    if ((rc = check_gnu_hash(c, d->gnu_hash, &st->gnu_count)) != 0)
      return rc;
    if (st->gnu_count > st->hashed)
      st->hashed = st->gnu_count;
  }
  return 0;
}


/* .dynsym's number of symbols, from its section header: a SHT_DYNSYM of whole symbols at
 * DT_SYMTAB's address. 0 when the section headers are absent, not in the file, or do not
 * agree with the dynamic section (dlopen never reads them, so they are trusted only then). */
static uint64_t dynsym_count(ck *c, uint64_t symaddr) {
  const ElfW(Ehdr) *eh = c->eh;
  uint64_t shnum, bytes;
  if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(ElfW(Shdr)) ||
      !in_range(eh->e_shoff, sizeof(ElfW(Shdr)), c->len))
    return 0;
  shnum = section_count(c);
  if (!mul_ok(shnum, sizeof(ElfW(Shdr)), &bytes) || !in_range(eh->e_shoff, bytes, c->len))
    return 0;
  for (uint64_t i = 0; i < shnum; i++) {
    ElfW(Shdr) s;
    c->steps++;
    memcpy(&s, c->buf + eh->e_shoff + i * sizeof s, sizeof s);
    if (s.sh_type == SHT_DYNSYM && s.sh_addr == symaddr &&
        s.sh_entsize == sizeof(ElfW(Sym)) && s.sh_size % sizeof(ElfW(Sym)) == 0)
      return s.sh_size / sizeof(ElfW(Sym));
  }
  return 0;
}

/* How many symbols the relocations may name. The file records the count only in the hash
 * tables, so they give it when there are any. A file with neither still loads (nothing can
 * be looked up in it, but its relocations are processed), and then the count is .dynsym's
 * from its section header, or without one as many whole symbols as the file-backed part of
 * DT_SYMTAB's segment holds. That last may run past the real table, but every symbol read
 * stays in the file, and check_reloc_sym checks the name of each one a relocation names. */
static int check_symbols(ck *c, const dyninfo *d, symtab *st) {
  uint64_t addr = d->val[DT_SYMTAB], bytes, avail;
  int rc;
  memset(st, 0, sizeof *st);
  st->strsz = d->val[DT_STRSZ];
  if ((rc = hash_count(c, d, st)) != 0)
    return rc;
  if ((d->has[DT_HASH] && d->val[DT_HASH] != 0) || (d->has_gnu_hash && d->gnu_hash != 0)) {
    st->count = st->hashed;
    st->from = "the hash tables";
  } else if ((st->count = dynsym_count(c, addr)) != 0) {
    st->from = "the .dynsym section header";
  } else {
    st->from = "the room in its segment";
    if (map_vaddr(c, addr, sizeof(ElfW(Sym)), &st->off, &avail))
      st->count = avail / sizeof(ElfW(Sym));
  }
  if (st->count == 0)
    st->count = 1; /* the null symbol, which every table has */
  if (!mul_ok(st->count, sizeof(ElfW(Sym)), &bytes) ||
      !map_vaddr(c, addr, bytes, &st->off, &avail))
    return fail(c, HM_EBADELF,
                "corrupt: symbol table at 0x%llx (%llu symbols) is outside the file-backed "
                "segments",
                (unsigned long long)addr, (unsigned long long)st->count);
  /* glibc's lookups by name, from other objects, follow the hash chains to any of these. */
  for (uint64_t i = 0; i < st->hashed; i++) {
    ElfW(Sym) s;
    c->steps++;
    memcpy(&s, c->buf + st->off + i * sizeof s, sizeof s);
    if (s.st_name >= st->strsz)
      return fail(c, HM_EBADELF, "corrupt: symbol %llu's name is outside the string table",
                  (unsigned long long)i);
  }
  return 0;
}

/* glibc reads the version index of every symbol a relocation names (version[R_SYM] in
 * elf_dynamic_do_Rel) and of every symbol a lookup through the hash tables finds. */
static int check_versym(ck *c, const dyninfo *d, const symtab *st) {
  uint64_t n = st->hashed > st->named ? st->hashed : st->named, o, a;
  if (!d->has_versym || d->versym == 0 || n == 0)
    return 0;
  if (!map_vaddr(c, d->versym, n * sizeof(ElfW(Versym)), &o, &a))
    return fail(c, HM_EBADELF, "corrupt: DT_VERSYM is outside the file-backed segments");
  return 0;
}

/* Every relocation table the loader processes at dlopen. */
static int check_all_relocs(ck *c, const dyninfo *d, symtab *st) {
  int rc;
  if (d->has[DT_RELA] && (!d->has[DT_RELAENT] || d->val[DT_RELAENT] != sizeof(ElfW(Rela))))
    return fail(c, HM_EBADELF, "corrupt: DT_RELA without DT_RELAENT == %zu",
                sizeof(ElfW(Rela)));
  if (d->has[DT_REL] && (!d->has[DT_RELENT] || d->val[DT_RELENT] != sizeof(ElfW(Rel))))
    return fail(c, HM_EBADELF, "corrupt: DT_REL without DT_RELENT == %zu", sizeof(ElfW(Rel)));
  if ((rc = check_relocs(c, d, DT_RELA, DT_RELASZ, sizeof(ElfW(Rela)), 1, st, "DT_RELA")) ||
      (rc = check_relocs(c, d, DT_REL, DT_RELSZ, sizeof(ElfW(Rel)), 0, st, "DT_REL")))
    return rc;
  if (d->has[DT_JMPREL]) {
    if (!d->has[DT_PLTREL] || (d->val[DT_PLTREL] != DT_RELA && d->val[DT_PLTREL] != DT_REL))
      return fail(c, HM_EBADELF, "corrupt: DT_JMPREL without a valid DT_PLTREL");
    int rela = d->val[DT_PLTREL] == DT_RELA;
    if ((rc = check_relocs(c, d, DT_JMPREL, DT_PLTRELSZ,
                           rela ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel)), rela, st,
                           "DT_JMPREL")))
      return rc;
  }
#ifdef DT_RELR
  if (d->has[DT_RELR] && (!d->has[DT_RELRENT] || d->val[DT_RELRENT] != sizeof(ElfW(Addr))))
    return fail(c, HM_EBADELF, "corrupt: DT_RELR without DT_RELRENT == %zu",
                sizeof(ElfW(Addr)));
  if ((rc = check_table(c, d, DT_RELR, DT_RELRSZ, sizeof(ElfW(Addr)), "DT_RELR")) ||
      (rc = check_relr(c, d)))
    return rc;
#endif
  return 0;
}

/* Constructors and destructors: the arrays are read, their sizes read through a pointer;
 * DT_INIT / DT_FINI are called, so they must at least point into the file's code. */
static int check_init_fini(ck *c, const dyninfo *d) {
  int rc;
  if ((rc = check_table(c, d, DT_INIT_ARRAY, DT_INIT_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_INIT_ARRAY")) ||
      (rc = check_table(c, d, DT_FINI_ARRAY, DT_FINI_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_FINI_ARRAY")) ||
      (rc = check_table(c, d, DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, sizeof(ElfW(Addr)),
                        "DT_PREINIT_ARRAY")))
    return rc;
  const int fn_tags[] = {DT_INIT, DT_FINI};
  for (size_t i = 0; i < sizeof fn_tags / sizeof fn_tags[0]; i++) {
    uint64_t o, a;
    if (d->has[fn_tags[i]] && d->val[fn_tags[i]] != 0 &&
        !map_vaddr(c, d->val[fn_tags[i]], 1, &o, &a))
      return fail(c, HM_EBADELF, "corrupt: %s at 0x%llx is outside the file-backed segments",
                  fn_tags[i] == DT_INIT ? "DT_INIT" : "DT_FINI",
                  (unsigned long long)d->val[fn_tags[i]]);
  }
  return 0;
}

static int check_versions(ck *c, const dyninfo *d) {
  /* In a well-formed file each step visits a distinct entry of at least 16 bytes, so one
   * step per 8 bytes of file is never reached; it keeps the walks linear in small files. */
  unsigned budget = HM__WALK_BUDGET;
  if (c->len / 8 + 16 < budget)
    budget = (unsigned)(c->len / 8 + 16);
  uint64_t strsz = d->val[DT_STRSZ];
  int rc;
  if (d->has_verneed && d->verneed != 0 && (rc = check_verneed(c, d->verneed, strsz, &budget)))
    return rc;
  if (d->has_verdef && d->verdef != 0 && (rc = check_verdef(c, d->verdef, strsz, &budget)))
    return rc;
  return 0;
}

int hm__elf_check_dynamic(ck *c, const ElfW(Phdr) *dynph, hm__elf_info *info) {
  dyninfo d;
  symtab st;
  uint64_t doff = 0, count = 0;
  int rc;
  if ((rc = read_dynamic(c, dynph, &d, &doff, &count)) || (rc = check_strtab(c, &d)) ||
      (rc = check_dyn_names(c, doff, count, d.val[DT_STRSZ])) ||
      (rc = check_symbols(c, &d, &st)) || (rc = check_all_relocs(c, &d, &st)) ||
      (rc = check_versym(c, &d, &st)) ||
      (rc = check_init_fini(c, &d)) || (rc = check_versions(c, &d)))
    return rc;

#ifdef DF_1_PIE
  /* A position-independent executable is ET_DYN too, but glibc refuses to dlopen it. */
  if (d.has_flags_1 && (d.flags_1 & DF_1_PIE) != 0)
    return fail(c, HM_ENOTELF, "not a shared object: a position-independent executable");
#endif

  hm__elf_scan_symbols(c, &d, &st, info);
  hm__elf_scan_strings(c, &d, doff, count, info);
  /* A module that deletes its keys in its unload hook, and says so, has dealt with them. */
  if (info != NULL && (info->desc_flags & HM_MODULE_KEYS_DELETED) != 0)
    info->lint &= ~(unsigned)HM__LINT_KEY_CREATE;
  if (info != NULL) {
    hm__elf_note_syms(c, &d, &st, dynph, &info->syms);
    info->nodelete = d.has_flags_1 && (d.flags_1 & DF_1_NODELETE) != 0;
    info->static_tls = d.has[DT_FLAGS] && (d.val[DT_FLAGS] & DF_STATIC_TLS) != 0;
    if (info->nodelete)
      info->lint |= HM__LINT_NODELETE;
    /* Only TLS it defines itself and reaches by offset from the thread pointer: a module
     * that uses an already-loaded library's initial-exec TLS (the live-call fast path does)
     * gets DF_STATIC_TLS too, harmlessly, and so does its own TLS of the default (dynamic)
     * model, which is not in the static area. */
#ifdef HM__TPOFF
    int own_static = c->own_tpoff;
#else
    int own_static = 1;
#endif
    if (info->static_tls && c->tls_size != 0 && own_static) {
      info->lint |= HM__LINT_STATIC_TLS;
      info->tls_size = c->tls_size;
    }
  }
  return 0;
}
