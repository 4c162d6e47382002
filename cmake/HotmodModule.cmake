# hotmod_add_module(<name> [USES_HOTMOD] [CHECK] [FAST_RELOAD] [SOURCES] <sources>...)
#
# Builds a reloadable module the way hotmod expects: a MODULE library (a .so that nothing
# links against), position-independent, hidden visibility by default (export functions with
# HM_MODULE_EXPORT from hotmod/module.h), calls between the module's own functions bound
# inside the module (-Bsymbolic, so a host built with -rdynamic cannot capture them), and
# hotmod's headers on the include path. The output has no "lib" prefix: <name>.so.
#
# C++ sources get hidden visibility for inline functions too, and -fno-gnu-unique where the
# compiler is GCC (clang has no such flag, and no STB_GNU_UNIQUE symbols): otherwise an
# inline function's static or a template's static becomes an STB_GNU_UNIQUE symbol, which
# keeps the first version loaded for good and makes later versions share its object.
#
# USES_HOTMOD: the module calls the public API itself (hm_live_get, HM_LIVE_CALL ... on other
# modules' symbols) and is linked with the shared libhotmod, so it uses the host's copy; the
# host must link the shared library too. A module that only uses its load context's API
# table (ctx->api) needs no such link and works with any host.
#
# CHECK: run hotmod-check on the module after each link (a POST_BUILD step): a lint finding
# or a file the loader would refuse fails the build, with the finding and its fix printed.
# In hotmod's own tree it uses the hotmod-check it builds; from an installed package, the
# installed one (hotmod::hotmod-check), or else a hotmod-check found on the PATH.
#
# FAST_RELOAD: a development setting that gives up RELRO hardening for a faster dlopen. The
# module is linked -z norelro (no read-only-after-relocation segment, so dlopen does not
# mprotect it) and, where the linker knows the option, -z noseparate-code (code and
# read-only data share pages: fewer mappings to make and unmap). Both cut page-table work,
# which is much of what dlopen costs on virtual machines (on hotmod's 2-vCPU test VM, a
# small module's dlopen in a single-threaded process went from 72 to 31 us; the reload
# figures are in bench/README.md, reload.fast_us_p50). Without RELRO a memory-corruption bug in the process can overwrite the
# module's GOT and other relocated pointers: keep it out of release builds. ld.bfd, lld and
# mold accept both options; gold has no -z noseparate-code (its default layout already
# keeps code with read-only data) and gets -z norelro alone. The linker is asked once per
# configure, with the -fuse-ld= found in CMAKE_MODULE_LINKER_FLAGS or the target's link
# options at the time of this call.
#
# The keywords may come anywhere; everything that is not a keyword is a source.
function(hotmod_add_module name)
  cmake_parse_arguments(HM "USES_HOTMOD;CHECK;FAST_RELOAD" "" "SOURCES" ${ARGN})
  set(sources ${HM_SOURCES} ${HM_UNPARSED_ARGUMENTS})
  if(NOT sources)
    message(FATAL_ERROR "hotmod_add_module(${name}): no sources")
  endif()
  add_library(${name} MODULE ${sources})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    POSITION_INDEPENDENT_CODE ON
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-fno-gnu-unique>)
  if(TARGET hotmod::hotmod)
    target_include_directories(${name} PRIVATE $<TARGET_PROPERTY:hotmod::hotmod,INTERFACE_INCLUDE_DIRECTORIES>)
    if(HM_USES_HOTMOD)
      target_link_libraries(${name} PRIVATE hotmod::hotmod)
    endif()
  elseif(HM_USES_HOTMOD)
    message(FATAL_ERROR "hotmod_add_module(${name} USES_HOTMOD): no hotmod::hotmod target (find_package(hotmod) first)")
  endif()
  target_link_options(${name} PRIVATE -Wl,-Bsymbolic -Wl,-z,now)
  if(HM_FAST_RELOAD)
    _hotmod_fast_reload_options(${name} fast)
    target_link_options(${name} PRIVATE ${fast})
  endif()

  if(HM_CHECK)
    if(TARGET hotmod::hotmod-check)
      set(check $<TARGET_FILE:hotmod::hotmod-check>)
      get_target_property(real hotmod::hotmod-check ALIASED_TARGET)
      if(real)
        add_dependencies(${name} ${real}) # built in this tree: build it first
      endif()
    else()
      find_program(HOTMOD_CHECK_EXECUTABLE hotmod-check)
      if(NOT HOTMOD_CHECK_EXECUTABLE)
        message(FATAL_ERROR "hotmod_add_module(${name} CHECK): hotmod-check not found (find_package(hotmod) first, or put it on the PATH)")
      endif()
      set(check ${HOTMOD_CHECK_EXECUTABLE})
    endif()
    add_custom_command(TARGET ${name} POST_BUILD
      COMMAND ${check} $<TARGET_FILE:${name}>
      COMMENT "hotmod-check ${name}"
      VERBATIM)
  endif()
endfunction()

# The link options of FAST_RELOAD for target `name`'s linker, in `out`.
function(_hotmod_fast_reload_options name out)
  get_target_property(opts ${name} LINK_OPTIONS)
  if(NOT opts)
    set(opts "")
  endif()
  separate_arguments(flags UNIX_COMMAND "${CMAKE_MODULE_LINKER_FLAGS}")
  set(fuse "")
  foreach(o ${flags} ${opts})
    if(o MATCHES "^-fuse-ld=(.+)$")
      set(fuse ${o})
    endif()
  endforeach()
  string(MAKE_C_IDENTIFIER "HOTMOD_LD_NOSEPARATE_CODE${fuse}" var)
  if(NOT DEFINED ${var})
    set(CMAKE_REQUIRED_LINK_OPTIONS ${fuse} -Wl,-z,noseparate-code)
    set(CMAKE_REQUIRED_QUIET ON)
    get_property(langs GLOBAL PROPERTY ENABLED_LANGUAGES)
    if("C" IN_LIST langs)
      include(CheckCSourceCompiles)
      check_c_source_compiles("int main(void) { return 0; }" ${var})
    else()
      include(CheckCXXSourceCompiles)
      check_cxx_source_compiles("int main() { return 0; }" ${var})
    endif()
  endif()
  set(fast -Wl,-z,norelro)
  if(${var})
    list(APPEND fast -Wl,-z,noseparate-code)
  endif()
  set(${out} ${fast} PARENT_SCOPE)
endfunction()
