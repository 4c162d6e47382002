# hotmod_add_module(<name> [USES_HOTMOD] <sources>...)
#
# Builds a reloadable module the way hotmod expects: a MODULE library (a .so that nothing
# links against), position-independent, hidden visibility by default (export functions with
# HM_MODULE_EXPORT from hotmod/module.h), calls between the module's own functions bound
# inside the module (-Bsymbolic, so a host built with -rdynamic cannot capture them), and
# hotmod's headers on the include path. The output has no "lib" prefix: <name>.so.
#
# USES_HOTMOD: the module calls the public API itself (hm_live_get, HM_LIVE_CALL ... on other
# modules' symbols) and is linked with the shared libhotmod, so it uses the host's copy; the
# host must link the shared library too. A module that only uses its load context's API
# table (ctx->api) needs no such link and works with any host.
function(hotmod_add_module name)
  cmake_parse_arguments(HM "USES_HOTMOD" "" "" ${ARGN})
  add_library(${name} MODULE ${HM_UNPARSED_ARGUMENTS})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    POSITION_INDEPENDENT_CODE ON
    C_VISIBILITY_PRESET hidden)
  if(TARGET hotmod::hotmod)
    target_include_directories(${name} PRIVATE $<TARGET_PROPERTY:hotmod::hotmod,INTERFACE_INCLUDE_DIRECTORIES>)
    if(HM_USES_HOTMOD)
      target_link_libraries(${name} PRIVATE hotmod::hotmod)
    endif()
  elseif(HM_USES_HOTMOD)
    message(FATAL_ERROR "hotmod_add_module(${name} USES_HOTMOD): no hotmod::hotmod target (find_package(hotmod) first)")
  endif()
  target_link_options(${name} PRIVATE -Wl,-Bsymbolic -Wl,-z,now)
endfunction()
