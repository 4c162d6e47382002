/* elfcheck.c: decide, from the bytes alone, whether glibc's dlopen can map a file without
 * faulting.
 *
 * dlopen trusts the file: it mmaps the PT_LOAD segments and then follows pointers found in
 * the mapped memory (the dynamic section, the symbol and string tables, the hash tables,
 * the relocations, the version chains). A file that is still being written, or that was
 * cut short, gives mappings past the end of the file (SIGBUS on first touch) or zeroed /
 * garbage pointers (SIGSEGV), inside dlopen, where nothing can recover. So before the copy
 * is handed to dlopen we walk the same structures the loader walks and require everything
 * it will touch to lie in the file-backed part of a PT_LOAD segment.
 *
 * This is a pure function over bytes: no I/O, no allocation, no globals. Every read goes
 * through a bounds check with overflow-safe arithmetic (offsets and sizes are 64-bit file
 * quantities, compared as `off <= len && size <= len - off`, never as `off + size <= len`),
 * and every structure is copied out with memcpy because the buffer has no alignment
 * guarantee. It is fuzzed; keep it that way.
 *
 * It must also take time linear in the file size, whatever the file: the loader reads files
 * up to 1 GiB, and a crafted one can hold 65,535 program headers and millions of relocations.
 * So every loop walks one table once, and addresses are looked up in a small sorted array of
 * the PT_LOAD segments, never by walking the program headers. "Work bound" in elfck.h says
 * how much work that is; tests/test_elf.c holds the check to it.
 *
 * This file checks the file as a whole (its header, program headers and section headers)
 * and is the entry point; elftables.c checks the dynamic section and its tables, elffacts.c
 * notes what the lint needs; elfck.h holds their context and accessors. */
#include "elfck.h"

/* ---- Section headers: optional, but if announced they must be in the file -------------- */

/* dlopen never reads section headers and a stripped file without them loads fine. But a
 * linker writes them last, after everything else, so a file whose announced section header
 * table (or a section it describes) runs past the end is one still being written or cut
 * short: exactly what this check exists to catch, even when the loadable part is already
 * complete. */
static int check_sections(ck *c, const ElfW(Ehdr) *eh, hm__elf_info *info) {
  /* Sections that may be the .gnu_debuglink: a plain one (no flags), aligned to 4, as
   * objcopy writes it. One compare for most sections, so a file without one pays nearly
   * nothing; the name is read after the loop, once every section is known to be whole. */
  uint64_t link_at[2];
  unsigned nlink = 0;
  if (eh->e_shoff == 0)
    return 0;
  if (eh->e_shentsize != sizeof(ElfW(Shdr)))
    return fail(c, HM_EBADELF, "corrupt: e_shentsize is %u, expected %zu",
                (unsigned)eh->e_shentsize, sizeof(ElfW(Shdr)));
  uint64_t shnum, bytes;
  if (!in_range(eh->e_shoff, sizeof(ElfW(Shdr)), c->len))
    return fail(c, HM_EBADELF, "truncated: section headers start at %llu, file has %llu bytes",
                (unsigned long long)eh->e_shoff, (unsigned long long)c->len);
  shnum = section_count(c);
  if (!mul_ok(shnum, sizeof(ElfW(Shdr)), &bytes) || !in_range(eh->e_shoff, bytes, c->len))
    return fail(c, HM_EBADELF,
                "truncated: %llu section headers at %llu run past the end (%llu bytes)",
                (unsigned long long)shnum, (unsigned long long)eh->e_shoff,
                (unsigned long long)c->len);
  for (uint64_t i = 0; i < shnum; i++) {
    /* The fields used, each read on its own: copying whole headers (64 bytes each) was most
     * of this loop's work. */
    const unsigned char *h = c->buf + eh->e_shoff + i * sizeof(ElfW(Shdr));
    ElfW(Word) type;
    ElfW(Xword) flags, align;
    ElfW(Off) off;
    uint64_t size;
    c->steps++;
    memcpy(&type, h + offsetof(ElfW(Shdr), sh_type), sizeof type);
    if (type == SHT_NULL || type == SHT_NOBITS)
      continue;
    memcpy(&off, h + offsetof(ElfW(Shdr), sh_offset), sizeof off);
    memcpy(&size, h + offsetof(ElfW(Shdr), sh_size), sizeof size);
    if (!in_range(off, size, c->len))
      return fail(c, HM_EBADELF, "truncated: section %llu ends past the end (%llu bytes)",
                  (unsigned long long)i, (unsigned long long)c->len);
    memcpy(&align, h + offsetof(ElfW(Shdr), sh_addralign), sizeof align);
    if (align == 4) {
      memcpy(&flags, h + offsetof(ElfW(Shdr), sh_flags), sizeof flags);
      if (flags == 0 && type == SHT_PROGBITS && nlink < 2)
        link_at[nlink++] = i;
    }
  }
  for (unsigned k = 0; k < nlink && info != NULL && info->debuglink == NULL; k++)
    hm__elf_note_debuglink(c, link_at[k], info);
  return 0;
}

/* ---- Entry point ----------------------------------------------------------------------- */

/* The ELF header: a shared object for this machine, with a program header table inside the
 * file. */
static int check_ehdr(ck *c, const ElfW(Ehdr) *eh) {
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
    return fail(c, HM_ENOTELF, "not ELF: no ELF magic");
  if (eh->e_ident[EI_CLASS] != HM__ELFCLASS)
    return fail(c, HM_ENOTELF, "not for this machine: ELF class %u, expected %u",
                eh->e_ident[EI_CLASS], HM__ELFCLASS);
  if (eh->e_ident[EI_DATA] != HM__ELFDATA)
    return fail(c, HM_ENOTELF, "not for this machine: byte order %u, expected %u",
                eh->e_ident[EI_DATA], HM__ELFDATA);
  if (eh->e_ident[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT)
    return fail(c, HM_ENOTELF, "not ELF: version %u, expected %u", eh->e_ident[EI_VERSION],
                EV_CURRENT);
  if (eh->e_ident[EI_OSABI] != ELFOSABI_SYSV && eh->e_ident[EI_OSABI] != ELFOSABI_GNU)
    return fail(c, HM_ENOTELF, "not for this system: OS ABI %u", eh->e_ident[EI_OSABI]);
#ifdef HM__MACHINE
  if (eh->e_machine != HM__MACHINE)
    return fail(c, HM_ENOTELF, "not for this machine: e_machine %u, expected %u",
                (unsigned)eh->e_machine, (unsigned)HM__MACHINE);
#endif
  if (eh->e_type != ET_DYN)
    return fail(c, HM_ENOTELF, "not a shared object: e_type %u", (unsigned)eh->e_type);

  /* Program headers: the loader's whole view of the file. */
  if (eh->e_phentsize != sizeof(ElfW(Phdr)))
    return fail(c, HM_EBADELF, "corrupt: e_phentsize is %u, expected %zu",
                (unsigned)eh->e_phentsize, sizeof(ElfW(Phdr)));
  if (eh->e_phnum == 0)
    return fail(c, HM_EBADELF, "corrupt: no program headers");
  if (!in_range(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(ElfW(Phdr)), c->len))
    return fail(c, HM_EBADELF,
                "truncated: %u program headers at %llu run past the end (%llu bytes)",
                (unsigned)eh->e_phnum, (unsigned long long)eh->e_phoff,
                (unsigned long long)c->len);
  c->phoff = eh->e_phoff;
  c->phnum = eh->e_phnum;
  return 0;
}

/* Record PT_LOAD number i (the nload-th) in c->load for the address lookups. The gABI
 * requires PT_LOADs in ascending p_vaddr order, and glibc relies on it: it reserves the
 * address range from the first segment's start to the last one's end, then maps each
 * segment at its own address with MAP_FIXED. A segment out of order is mapped outside the
 * reservation, over whatever the process has there; overlapping segments replace each
 * other's bytes, so the tables checked in one are not what the loader reads. So the
 * segments must be ascending, disjoint and not wrap around; that also lets a lookup use a
 * binary search. */
static int add_load(ck *c, unsigned i, const ElfW(Phdr) *ph, unsigned nload,
                    uint64_t *prev_end) {
  uint64_t vaddr = ph->p_vaddr, memsz = ph->p_memsz;
  if (ph->p_filesz > ph->p_memsz)
    return fail(c, HM_EBADELF, "corrupt: PT_LOAD segment %u has p_filesz %llu > p_memsz %llu",
                i, (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
  if (nload >= HM__MAX_LOADS)
    return fail(c, HM_EBADELF, "corrupt: more than %d PT_LOAD segments", HM__MAX_LOADS);
  if (memsz > (uint64_t)(ElfW(Addr))-1 - vaddr)
    return fail(c, HM_EBADELF, "corrupt: PT_LOAD segment %u wraps around the address space",
                i);
  if (nload > 0 && vaddr < *prev_end)
    return fail(c, HM_EBADELF,
                "corrupt: PT_LOAD segment %u (at 0x%llx) overlaps or precedes the one before "
                "it",
                i, (unsigned long long)vaddr);
  *prev_end = vaddr + memsz;
  if (memsz != 0) { /* an empty segment holds no address */
    seg *s = &c->load[c->nload++];
    s->vaddr = vaddr;
    s->end = vaddr + memsz;
    s->fileend = vaddr + ph->p_filesz;
    s->off = ph->p_offset;
  }
  return 0;
}

/* Mapping a PT_LOAD past the end of the file gives pages that SIGBUS when touched, and
 * other segments (PT_TLS's init image, PT_GNU_PROPERTY, notes) are read too: a segment
 * extending past the end means the file is incomplete. PT_LOADs first, so a cut file is
 * reported by the segment that matters. */
static int check_segments(ck *c, ElfW(Phdr) *dynph) {
  unsigned nload = 0, ndyn = 0;
  uint64_t prev_end = 0;
  int rc;
  memset(dynph, 0, sizeof *dynph);
  for (int pass = 0; pass < 2; pass++) {
    for (unsigned i = 0; i < c->phnum; i++) {
      ElfW(Phdr) ph;
      c->steps++;
      get_phdr(c, i, &ph);
      if (ph.p_type == PT_NULL || (ph.p_type == PT_LOAD) != (pass == 0))
        continue;
      if (!in_range(ph.p_offset, ph.p_filesz, c->len)) {
        unsigned long long end = (unsigned long long)ph.p_offset + ph.p_filesz;
        if (end < ph.p_offset)
          return fail(c, HM_EBADELF, "corrupt: segment %u's offset and size overflow", i);
        if (pass == 0)
          return fail(c, HM_EBADELF,
                      "truncated: PT_LOAD segment %u ends at %llu, file has %llu bytes", i, end,
                      (unsigned long long)c->len);
        return fail(c, HM_EBADELF,
                    "truncated: segment %u (type 0x%x) ends at %llu, file has %llu bytes", i,
                    (unsigned)ph.p_type, end, (unsigned long long)c->len);
      }
      if (ph.p_type == PT_LOAD) {
        if ((rc = add_load(c, i, &ph, nload, &prev_end)) != 0)
          return rc;
        nload++;
      } else if (ph.p_type == PT_DYNAMIC) {
        *dynph = ph;
        ndyn++;
      }
    }
  }
  if (nload == 0)
    return fail(c, HM_EBADELF, "corrupt: no PT_LOAD segment");
  if (ndyn != 1)
    return fail(c, HM_EBADELF, "corrupt: %u PT_DYNAMIC segments, expected 1", ndyn);
  return 0;
}

/* Segments read through the mapping rather than the file: their virtual range must be
 * file-backed as well. */
static int check_mapped_segments(ck *c) {
  for (unsigned i = 0; i < c->phnum; i++) {
    ElfW(Phdr) ph;
    uint64_t o, a;
    c->steps++;
    get_phdr(c, i, &ph);
    int via_mapping = ph.p_type == PT_TLS;
    if (ph.p_type == PT_TLS)
      c->tls_size = ph.p_memsz;
#ifdef PT_GNU_PROPERTY
    via_mapping = via_mapping || ph.p_type == PT_GNU_PROPERTY;
#endif
    if (via_mapping && ph.p_filesz != 0 && !map_vaddr(c, ph.p_vaddr, ph.p_filesz, &o, &a))
      return fail(c, HM_EBADELF, "corrupt: segment %u (type 0x%x) is outside the PT_LOADs", i,
                  (unsigned)ph.p_type);
  }
  return 0;
}

static int check_file(ck *c, hm__elf_info *info) {
  /* A short file that starts like ELF is one still being written; anything else is not
   * ELF at all. */
  if (c->len < sizeof(ElfW(Ehdr))) {
    size_t n = c->len < SELFMAG ? (size_t)c->len : SELFMAG;
    if (memcmp(c->buf, ELFMAG, n) == 0)
      return fail(c, HM_EBADELF, "truncated: %llu bytes, an ELF header needs %zu",
                  (unsigned long long)c->len, sizeof(ElfW(Ehdr)));
    return fail(c, HM_ENOTELF, "not ELF: no ELF magic");
  }
  ElfW(Ehdr) eh;
  ElfW(Phdr) dynph;
  int rc;
  memcpy(&eh, c->buf, sizeof eh);
  c->eh = &eh;
  if ((rc = check_ehdr(c, &eh)) || (rc = check_segments(c, &dynph)) ||
      (rc = check_mapped_segments(c)) || (rc = hm__elf_check_dynamic(c, &dynph, info)) ||
      (rc = check_sections(c, &eh, info)))
    return rc;
  /* Rust's std always imports both, used or not: one finding with a fix for Rust. */
  if (info != NULL && (info->lint & (HM__LINT_KEY_CREATE | HM__LINT_THREAD_ATEXIT)) != 0 &&
      hm__elf_built_by_rustc(c)) {
    info->lint &= ~(HM__LINT_KEY_CREATE | HM__LINT_THREAD_ATEXIT);
    info->lint |= HM__LINT_RUST_STD;
  }
  return 0;
}

int hm__elf_check(const unsigned char *buf, size_t len, hm__elf_info *info, char *why,
                  size_t whylen) {
  ck c;
  memset(&c, 0, offsetof(ck, load));
  c.buf = buf;
  c.len = len;
  c.why = why;
  c.whylen = whylen;
  if (why != NULL && whylen > 0)
    why[0] = '\0';
  if (info != NULL)
    memset(info, 0, sizeof *info);
  if (buf == NULL || len == 0)
    return fail(&c, HM_EBADELF, "empty file");
  int rc = check_file(&c, info);
  if (rc != 0 && info != NULL)
    memset(info, 0, sizeof *info);
  if (info != NULL)
    info->steps = c.steps;
  return rc;
}
